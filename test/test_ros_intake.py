"""The mapper's sensor intake: streams are served independently, drop reasons are reported, and the replay
configuration keeps every frame when one stream is delivered late. In-process rclpy (no mapper process)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import synthetic_config
from ros_helpers import next_domain_id, require_ros

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.mapping.config import SyncConfig
from lang3d_ros.mapping.sync import DROP_NO_DEPTH, DROP_NO_POSE, FrameAssembler


class _Workers:
    """Stands in for the MappingPipeline: _start_intake only starts it."""

    trainer = None

    def start(self):
        return self


def test_a_busy_sensor_stream_does_not_keep_another_waiting():
    """While the colour callback is busy, a pose that arrives is still taken and handled (the streams were one
    mutually exclusive callback group: rclpy then left every stream out of its wait set until the busy one
    returned, and in a replay the poses came seconds after their images, which dropped the images)."""
    require_ros()
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from lang3d_ros.ros.mapper_node import MapperNode

    ctx = Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    colour_busy, release, pose_handled = threading.Event(), threading.Event(), threading.Event()
    executor = None
    try:
        node = MapperNode(context=ctx)

        def busy_colour(msg):
            colour_busy.set()
            release.wait(30.0)

        node._on_color = busy_colour  # bound when the subscriptions are created
        node._on_pose = lambda msg: pose_handled.set()
        node.pipeline = _Workers()
        node._start_intake()
        source = rclpy.create_node("intake_source", context=ctx)
        cfg = node.config.ros
        img_pub = source.create_publisher(Image, cfg.color_topic, 10)
        pose_pub = source.create_publisher(PoseStamped, cfg.pose_topic, 10)
        executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        for _ in range(200):  # discovery
            if img_pub.get_subscription_count() and pose_pub.get_subscription_count():
                break
            colour_busy.wait(0.05)
        img_pub.publish(Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3)))
        assert colour_busy.wait(20.0), "the colour callback never ran"
        pose = PoseStamped()
        pose.header.frame_id = "map"
        pose.pose.orientation.w = 1.0
        pose_pub.publish(pose)
        assert pose_handled.wait(20.0), "the pose waited for the colour callback to return"
        assert len({id(s.callback_group) for s in node._subs}) == len(node._subs)  # each stream its own group
    finally:
        release.set()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        rclpy.try_shutdown(context=ctx)


def test_a_pose_is_handled_while_an_image_is_being_decoded(monkeypatch):
    """Messages are decoded outside the intake lock: while a colour image's conversion is slow (a 640x480 copy on a
    loaded host), a pose still reaches the synchronizer. With the decode under the lock the pose stream queued
    behind every image and 49-80 of 300 frames at 30 Hz were dropped 'no pose for the image stamp'."""
    require_ros()
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from lang3d_ros.ros import mapper_node as mn

    decoding, release = threading.Event(), threading.Event()

    def slow_rgb8(msg):
        decoding.set()
        release.wait(30.0)
        return np.zeros((msg.height, msg.width, 3), np.uint8)

    monkeypatch.setattr(mn.cv, "image_to_rgb8", slow_rgb8)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    executor = None
    try:
        node = mn.MapperNode(context=ctx)
        node.pipeline = _Workers()
        node.assembler = FrameAssembler(SyncConfig())
        node._start_intake()
        source = rclpy.create_node("decode_source", context=ctx)
        cfg = node.config.ros
        img_pub = source.create_publisher(Image, cfg.color_topic, 10)
        pose_pub = source.create_publisher(PoseStamped, cfg.pose_topic, 10)
        executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        for _ in range(400):  # discovery
            if img_pub.get_subscription_count() and pose_pub.get_subscription_count():
                break
            decoding.wait(0.05)
        img_pub.publish(Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3)))
        assert decoding.wait(20.0), "the colour callback never ran"
        pose = PoseStamped()
        pose.header.frame_id = "map"
        pose.pose.orientation.w = 1.0
        pose_pub.publish(pose)
        for _ in range(400):
            if node.assembler.stats.poses_received:
                break
            release.wait(0.05)
        assert node.assembler.stats.poses_received == 1, "the pose waited for the image's decode"
        assert not release.is_set() and node.assembler.stats.colour_received == 0
    finally:
        release.set()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        rclpy.try_shutdown(context=ctx)


def test_a_burst_that_arrives_while_the_callbacks_are_busy_is_kept():
    """Best-effort intake with the default history depths: while the colour and pose callbacks are busy (a loaded
    host), the test_ros_nodes burst (24 images, 30 Hz) and 48 poses arrive; every one is handled afterwards. With
    the former depth of 5 for every stream only the last 5 of each remained: a CI run under load received 9 of 24."""
    require_ros()
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from lang3d_ros.ros.mapper_node import MapperNode

    ctx = Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    busy, release = threading.Event(), threading.Event()
    got = {"colour": 0, "pose": 0}
    done = threading.Event()
    executor = None
    try:
        node = MapperNode(context=ctx)
        assert node.config.ros.sensor_qos_reliability == "best_effort"

        def on(kind):
            def cb(msg):
                busy.set()
                release.wait(30.0)
                got[kind] += 1
                if got["colour"] == 25 and got["pose"] == 49:
                    done.set()

            return cb

        node._on_color, node._on_pose = on("colour"), on("pose")
        node.pipeline = _Workers()
        node._start_intake()
        source = rclpy.create_node("burst_source", context=ctx)
        cfg = node.config.ros
        qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=100)
        img_pub, pose_pub = (
            source.create_publisher(Image, cfg.color_topic, qos),
            source.create_publisher(PoseStamped, cfg.pose_topic, qos),
        )
        executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        for _ in range(400):  # discovery
            if img_pub.get_subscription_count() and pose_pub.get_subscription_count():
                break
            busy.wait(0.05)
        img = Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3))
        img_pub.publish(img)  # the first one occupies the colour callback
        assert busy.wait(20.0), "the colour callback never ran"
        pose = PoseStamped()
        pose.header.frame_id = "map"
        pose.pose.orientation.w = 1.0
        pose_pub.publish(pose)  # and the pose callback
        for _ in range(24):
            img_pub.publish(img)
        for _ in range(48):
            pose_pub.publish(pose)
        release.wait(2.0)  # the burst reaches the subscriptions' histories meanwhile
        release.set()
        done.wait(30.0)
        assert got == {"colour": 25, "pose": 49}, got
    finally:
        release.set()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        rclpy.try_shutdown(context=ctx)


def _replay(config: SyncConfig, pose_delay_frames: int, n: int = 48) -> FrameAssembler:
    """A 30 Hz stream whose poses are delivered ``pose_delay_frames`` frames after their images (a stream served
    late by the executor), as a node feeds it: each message then pop_frames with its stamp."""
    asm = FrameAssembler(config)
    asm.add_intrinsics(Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48))
    rgb, depth = np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32)
    stamp = [int(i * 1e9 / 30) for i in range(n)]
    frames = []
    for k in range(n + pose_delay_frames):
        if k < n:
            asm.add_color(stamp[k], rgb)
            frames += asm.pop_frames(stamp[k])
            asm.add_depth(stamp[k], depth)
            frames += asm.pop_frames(stamp[k])
        j = k - pose_delay_frames
        if j >= 0:
            T = np.eye(4)
            T[0, 3] = 0.01 * j
            asm.add_pose(stamp[j], T)
            frames += asm.pop_frames(stamp[j])
    asm.fused = frames
    return asm


def test_replay_configuration_keeps_frames_whose_poses_come_late():
    """Poses delivered 27 frames (0.9 s of stamps; 3.6 s at rate 0.25) after their images, as measured in a
    replay: the live defaults drop those images (no pose), config/synthetic.yaml keeps all of them."""
    live = _replay(SyncConfig(), pose_delay_frames=27)
    assert live.stats.dropped.get(DROP_NO_POSE, 0) > 0
    replay = _replay(synthetic_config().mapping.sync, pose_delay_frames=27)
    assert len(replay.fused) == 48 and replay.stats.dropped == {}
    assert [f.stamp_ns for f in replay.fused] == sorted(f.stamp_ns for f in replay.fused)


def test_every_drop_is_logged_with_its_reason(caplog):
    """Colour images dropped in the synchronizer are logged (INFO, rate-limited per reason), not only counted."""
    asm = FrameAssembler(SyncConfig(slop_s=0.01))
    rgb, depth = np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32)
    with caplog.at_level("INFO", logger="lang3d_ros.mapping.sync"):
        asm.add_color(0, rgb)
        asm.add_depth(100_000_000, depth)  # the first colour image's depth never came
    assert asm.stats.dropped == {DROP_NO_DEPTH: 1}
    assert any(f"frame dropped ({DROP_NO_DEPTH})" in r.getMessage() for r in caplog.records)


def test_diagnostics_list_every_reason_and_the_summary_counts_them():
    from lang3d_ros.ros.config import DiagnosticsConfig
    from lang3d_ros.ros.diagnostics import DiagnosticsMonitor
    from lang3d_ros.ros.mapper_node import intake_summary

    st = {
        "frames_received": 48,
        "frames_fused": 22,
        "frames_dropped": 26,
        "frames_rejected": 0,
        "frames_pending": 0,
        "drop_reasons": {DROP_NO_POSE: 25, "fusion queue full": 1},
        "reject_reasons": {},
        "depth_received": 48,
        "depth_dropped": {},
        "poses_received": 47,
        "poses_rejected": {"pose jump": 1},
        "reasons": {DROP_NO_POSE: 25, "fusion queue full": 1, "pose jump": 1},
    }
    (intake,) = [d for d in DiagnosticsMonitor(DiagnosticsConfig(), "m").update(st, 0.0) if d.name == "m: intake"]
    assert intake.values[f"dropped: {DROP_NO_POSE}"] == "25"
    assert intake.values["dropped: fusion queue full"] == "1"
    assert intake.values["pose rejected: pose jump"] == "1"
    assert intake.values["poses_received"] == "47"
    line = intake_summary(st)
    assert "48 colour images: 22 fused, 26 dropped (no pose for the image stamp: 25, fusion queue full: 1)" in line
    assert "47 poses (pose jump: 1)" in line


def test_messages_lost_in_transport_are_counted_and_reported():
    """The middleware's message-lost events (best-effort samples that never reached the node) are counted per
    stream, listed in /diagnostics, counted in the window's lost fraction and named in the stop summary."""
    from lang3d_ros.ros.config import DiagnosticsConfig
    from lang3d_ros.ros.diagnostics import DiagnosticsMonitor
    from lang3d_ros.ros.mapper_node import intake_summary

    zero = {"frames_received": 0, "frames_fused": 0, "frames_dropped": 0, "frames_rejected": 0}
    st = {
        "frames_received": 9,
        "frames_fused": 9,
        "frames_dropped": 0,
        "frames_rejected": 0,
        "frames_pending": 0,
        "depth_received": 10,
        "poses_received": 24,
        "lost_in_transport": {"colour image": 15, "depth image": 14},
    }
    mon = DiagnosticsMonitor(DiagnosticsConfig(), "m")
    mon.update(zero, 0.0)
    (intake,) = [d for d in mon.update(st, 1.0) if d.name == "m: intake"]
    assert intake.values["lost in transport: colour image"] == "15"
    assert intake.values["lost in transport: depth image"] == "14"
    assert float(intake.values["window_lost_fraction"]) == pytest.approx(15 / 24) and intake.level == "WARN"
    line = intake_summary(st)
    assert "lost in transport, never received (DDS message-lost events) (colour image: 15, depth image: 14)" in line
    assert "lost in transport" not in intake_summary(dict(st, lost_in_transport={}))


def test_the_mapper_counts_lost_messages_per_stream():
    require_ros()
    import rclpy
    from rclpy.context import Context

    from lang3d_ros.ros.mapper_node import COLOUR, MapperNode

    ctx = Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    try:
        node = MapperNode(context=ctx)
        names = node._stream_names(node.config)
        assert names == [COLOUR, "depth image", "camera_info", "pose"]  # pose_topic set, odom_topic not
        node._lost_counter(COLOUR)(type("Ev", (), {"total_count_change": 3})())
        node.on_messages_lost("pose", 2)
        node.on_messages_lost("pose", 0)
        assert node.lost_in_transport == {COLOUR: 3, "pose": 2}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


@pytest.mark.parametrize("depth", [10, 100])
def test_bag_player_keeps_messages_for_retransmission(depth):
    require_ros()
    from rclpy.qos import HistoryPolicy, ReliabilityPolicy

    from lang3d_ros.ros.bag_player import DEFAULT_QUEUE_DEPTH, player_qos

    q = player_qos(depth)
    assert q.reliability == ReliabilityPolicy.RELIABLE and q.history == HistoryPolicy.KEEP_LAST and q.depth == depth
    assert DEFAULT_QUEUE_DEPTH >= 100
    with pytest.raises(ValueError):
        player_qos(0)


def test_replay_dds_profile_is_used_unless_the_user_chose_one():
    import xml.etree.ElementTree as ET

    from lang3d_ros.ros.bag_player import REPLAY_DDS_PROFILE, use_replay_dds_profile

    env: dict[str, str] = {}
    assert use_replay_dds_profile(env) == str(REPLAY_DDS_PROFILE)
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    hb = ET.parse(REPLAY_DDS_PROFILE).getroot().find(".//f:data_writer/f:times/f:heartbeatPeriod", ns)
    assert int(hb.find("f:sec", ns).text) == 0 and int(hb.find("f:nanosec", ns).text) <= 200_000_000
    mine = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}
    assert use_replay_dds_profile(mine) == "/etc/my_profile.xml"


def test_config_files_are_found_in_an_install_as_in_a_checkout(tmp_path):
    """A colcon or pip install has no source tree beside the module: the profile is looked up in the share folder."""
    from lang3d_ros.ros.bag_player import installed_config_file

    source, share = tmp_path / "src" / "config", tmp_path / "share" / "lang3d_ros" / "config"
    share.mkdir(parents=True)
    (share / "fastdds_replay.xml").write_text("<dds/>")
    assert installed_config_file("fastdds_replay.xml", [source, share]) == share / "fastdds_replay.xml"
    assert installed_config_file("missing.xml", [source, share]) == source / "missing.xml"
    assert installed_config_file("fastdds_replay.xml").is_file()  # this checkout's own


def test_an_offline_replay_waits_while_the_consumer_is_busy(tmp_path):
    """bag_player.play(hold=...): while hold() is True no message goes out and the bag clock pauses, so the
    messages after keep their spacing; every message is published once, in order."""
    require_ros()
    import time

    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.ros.bag_player import play

    scene = generate_scene(2, n_objects=3)
    frames = render_frames(scene, make_trajectory(scene, "orbit", 6, seed=2), DEFAULT_INTRINSICS.scaled(64, 48))
    write_bag(frames, tmp_path / "bag")

    sent: list[tuple[str, float]] = []

    class Pub:
        def __init__(self, topic):
            self.topic = topic

        def get_subscription_count(self):
            return 1

        def publish(self, data):
            sent.append((self.topic, time.monotonic()))

    class Node:
        def create_publisher(self, _cls, topic, _qos):
            return Pub(topic)

    busy_until: list[float] = []  # set once, after the 5th message: busy for 0.6 s
    asks = []

    def hold():
        asks.append(len(sent))
        if len(sent) >= 5 and not busy_until:
            busy_until.append(time.monotonic() + 0.6)
        return bool(busy_until) and time.monotonic() < busy_until[0]

    counts = play(Node(), tmp_path / "bag", rate=1.0, hold=hold, hold_poll_s=0.05, wait_subscribers_s=0.1)
    n = sum(counts.values())
    assert n == len(sent) == 24 and asks  # 6 frames x (colour, depth, info, pose)
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "bag"]) as reader:
        stamps = [t for _, t, _ in reader.messages()]
    bag_span_s = (stamps[-1] - stamps[0]) * 1e-9
    gaps = np.diff([t for _, t in sent])
    held = int(np.argmax(gaps))
    assert gaps[held] >= 0.55 and held >= 4  # the pause, after the 5th message
    wall_s = sent[-1][1] - sent[0][1]
    assert bag_span_s + gaps[held] - 0.05 <= wall_s <= bag_span_s + gaps[held] + 0.3  # paused clock: no catch-up
