"""The real nodes in their own processes: a synthetic bag replayed into the mapper, services called from here,
a map saved and served by a second server, and a stream of bad requests that must not kill anything."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_helpers import next_domain_id, require_ros, spawn, stop

from lang3d_ros.evaluation.processes import ServiceClient

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames

    out = tmp_path_factory.mktemp("bag")
    scene = generate_scene(seed=11, n_objects=7)
    poses = make_trajectory(scene, "orbit", 24, seed=11)
    frames = render_frames(scene, poses, DEFAULT_INTRINSICS.scaled(160, 120), noise=None, seed=11)
    write_bag(frames, out / "bag", storage="mcap", depth_encoding="16UC1", pose_msg="pose", scene=scene, seed=11)
    return out / "bag", scene


def _params(tmp_path: Path, gt: Path, extra: dict | None = None) -> Path:
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"voxel_size_m": 0.03, "device": "cpu"},
        "mapping": {"train_gaussians": False, "keyframes": {"min_translation_m": 0.25}},
        "llm": {"mode": "parser_only"},
        "ros": {
            "ground_truth_file": str(gt),
            "sensor_qos_reliability": "reliable",  # as the player publishes: no frame lost in transport under load
            "status_period_s": 0.5,
            "cloud_period_s": 1.0,
            "map_dir": str(tmp_path / "maps"),
        },
    }
    for k, v in (extra or {}).items():
        params.setdefault(k, {}).update(v)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return p


class Client(ServiceClient):
    """The evaluation's ServiceClient, answering only the response (these tests read fields, not latency)."""

    def call(self, srv_type, name: str, timeout_s: float = 60.0, **fields):
        return super().call(srv_type, name, timeout_s, **fields)[0]


def test_mapper_and_services_end_to_end(tmp_path, synthetic_bag):
    require_ros()
    from lang3d_ros.srv import Ask, GetMapStatus, Ground, LoadMap, Navigate, SaveMap

    from lang3d_ros.geometry.boxes import iou_3d
    from lang3d_ros.mapstore.folder import CLIENT_MESSAGE
    from lang3d_ros.ros.bag_player import play
    from lang3d_ros.ros.conversions import detected_object_box

    bag, scene = synthetic_bag
    domain = next_domain_id()
    logs = tmp_path / "logs"
    params = _params(tmp_path, bag / "ground_truth.json")
    mapper = spawn([str(REPO / "scripts" / "mapper_node"), "--ros-args", "--params-file", str(params)], domain, logs)
    client = Client(domain)
    server2 = None
    try:
        st = client.call(GetMapStatus, "/lang3d/get_map_status").status
        assert st.source == "live" and st.frames_fused == 0
        # a query before any frame: a clear refusal, not a crash
        res = client.call(Ground, "/lang3d/ground", query="chair")
        assert not res.success and "empty" in res.message and res.error_code == Ground.Response.ERROR_NO_MAP
        counts = play(client.node, bag, rate=1.0)
        assert counts["/camera/color/image_raw"] == 24
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # every frame ends up fused or counted as dropped: none silently lost
            st = client.call(GetMapStatus, "/lang3d/get_map_status").status
            if st.frames_fused + st.frames_dropped >= 22 and st.keyframes >= 3:
                break
            time.sleep(0.5)
        assert st.frames_fused >= 5 and st.keyframes >= 3 and st.num_points > 1000 and st.frames_rejected == 0, st
        # grounding: the biggest floor object by its label
        big = max((o for o in scene.objects if o.support_id == 0), key=lambda o: np.prod(o.aabb.size))
        res = client.call(Ground, "/lang3d/ground", query=big.label, max_results=3)
        assert res.success and res.answered_by == "relevancy", res.message
        o = res.objects[0]
        assert o.header.frame_id == "map" and o.label == big.label and 0 < o.score <= 1
        best = max(
            iou_3d(detected_object_box(m).aabb(), g.aabb)
            for m in res.objects
            for g in scene.objects
            if g.label == big.label
        )
        assert best >= 0.25
        # navigation: a Nav2-ready goal in the map frame
        res = client.call(Navigate, "/lang3d/navigate", instruction=f"take me to the {big.label}", standoff_m=0.6)
        assert res.target.label == big.label, res.message
        assert res.success and res.error_code == Navigate.Response.ERROR_NONE, res.message  # the room is open
        assert res.goal.header.frame_id == "map" and len(res.path.poses) >= 1 and res.path_length_m >= 0
        res = client.call(Ask, "/lang3d/ask", question=f"where is the {big.label}?")
        assert res.success and res.answer and res.answered_by == "parser"
        # bad requests: every one answered with success=false and a message; the node stays up
        bad = [
            dict(query=""),
            dict(query="   \t"),
            dict(query="x" * 10_000),
            dict(query="mug", level="gigantic"),
            dict(query="mug", min_score=float("nan")),
            dict(query="\x00\x01 mug"),
        ]
        for fields in bad:
            r = client.call(Ground, "/lang3d/ground", **fields)
            assert not r.success and r.message and r.error_code == Ground.Response.ERROR_BAD_REQUEST, (fields, r)
        r = client.call(Navigate, "/lang3d/navigate", instruction="")
        assert not r.success and r.message and r.error_code == Navigate.Response.ERROR_BAD_REQUEST
        r = client.call(Ask, "/lang3d/ask", question="y" * 5000)
        assert not r.success and r.message
        r = client.call(LoadMap, "/lang3d/load_map", path="nope.l3dmap")
        assert not r.success and r.error_code == LoadMap.Response.ERROR_NOT_ALLOWED  # the mapper serves its live map
        assert r.status.num_points == st.num_points or r.status.num_points > 0  # the current status, not zeros
        # save, then serve the file from a second server process
        saved = client.call(SaveMap, "/lang3d/save_map", path="room.l3dmap")
        assert saved.success and saved.error_code == 0 and saved.size_bytes > 0, saved.message
        assert Path(saved.path) == tmp_path / "maps" / "room.l3dmap" and Path(saved.path).is_file()
        assert mapper.poll() is None, "the mapper died"
    finally:
        client.close()
        stop(mapper)
    # serving mode: a separate process, the saved map, same answers
    domain2 = next_domain_id()
    params2 = _params(
        tmp_path, bag / "ground_truth.json", {"ros": {"load_map": str(tmp_path / "maps" / "room.l3dmap")}}
    )
    server2 = spawn(
        [str(REPO / "scripts" / "query_server_node"), "--ros-args", "--params-file", str(params2)], domain2, logs
    )
    client2 = Client(domain2)
    try:
        st = client2.call(GetMapStatus, "/lang3d/get_map_status").status
        assert st.source.startswith("file:") and st.num_points > 1000
        res = client2.call(Ground, "/lang3d/ground", query=big.label, max_results=3)
        assert res.success and res.objects[0].label == big.label
        (tmp_path / "maps" / "fake.l3dmap").write_bytes((bag / "ground_truth.json").read_bytes())
        bad = client2.call(LoadMap, "/lang3d/load_map", path="fake.l3dmap")
        assert not bad.success and bad.error_code == LoadMap.Response.ERROR_IO_ERROR, bad.message
        assert bad.message == CLIENT_MESSAGE.format(name="fake.l3dmap")
        assert bad.status.num_points == st.num_points and bad.status.source == st.source  # the previous status
        again = client2.call(Ground, "/lang3d/ground", query=big.label, max_results=3)
        assert again.success  # the failed load left the served map unchanged
    finally:
        client2.close()
        stop(server2)


def test_mapper_survives_a_fuzzed_sensor_stream(tmp_path, synthetic_bag):
    """Random and malformed images, camera infos and poses: every one is rejected and counted; the node lives on
    and still maps the good frames that follow."""
    require_ros()
    from geometry_msgs.msg import PoseStamped
    from lang3d_ros.srv import GetMapStatus
    from sensor_msgs.msg import CameraInfo, Image

    from lang3d_ros.ros.bag_player import play

    bag, _scene = synthetic_bag
    domain = next_domain_id()
    params = _params(tmp_path, bag / "ground_truth.json", {"ros": {"sensor_qos_depth": 100}})  # queue the whole burst
    mapper = spawn(
        [str(REPO / "scripts" / "mapper_node"), "--ros-args", "--params-file", str(params)], domain, tmp_path / "logs"
    )
    client = Client(domain)
    try:
        client.call(GetMapStatus, "/lang3d/get_map_status")  # up
        node = client.node
        pubs = {
            "img": node.create_publisher(Image, "/camera/color/image_raw", 10),
            "depth": node.create_publisher(Image, "/camera/depth/image_rect_raw", 10),
            "info": node.create_publisher(CameraInfo, "/camera/color/camera_info", 10),
            "pose": node.create_publisher(PoseStamped, "/camera/pose", 10),
        }
        deadline = time.monotonic() + 20
        while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        rng = np.random.default_rng(0)
        sent = 0
        for i in range(60):
            kind = i % 6
            if kind == 0:  # header says 10x10 rgb8, data is 7 bytes
                m = Image(height=10, width=10, encoding="rgb8", step=30)
                m.data = bytes(7)
                pubs["img"].publish(m)
            elif kind == 1:  # unknown encoding
                m = Image(height=4, width=4, encoding="yuv422_yuy2", step=8)
                m.data = bytes(32)
                pubs["depth"].publish(m)
            elif kind == 2:  # step smaller than a row
                m = Image(height=4, width=4, encoding="32FC1", step=3)
                m.data = bytes(rng.integers(0, 255, 64, dtype=np.uint8))
                pubs["depth"].publish(m)
            elif kind == 3:  # distorted camera
                m = CameraInfo(width=160, height=120, distortion_model="plumb_bob")
                m.k = [100.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0]
                m.d = [0.2, -0.1, 0.0, 0.0, 0.0]
                pubs["info"].publish(m)
            elif kind == 4:  # NaN pose
                m = PoseStamped()
                m.header.frame_id = "map"
                m.pose.position.x = float("nan")
                m.pose.orientation.w = 1.0
                pubs["pose"].publish(m)
            else:  # zero quaternion, wrong frame
                m = PoseStamped()
                m.header.frame_id = "odom" if i % 12 else "map"
                pubs["pose"].publish(m)
            sent += 1
            time.sleep(0.03)
        time.sleep(2.0)
        st = client.call(GetMapStatus, "/lang3d/get_map_status").status
        assert mapper.poll() is None, "the mapper died on bad input"
        # every bad message is counted (with the default sensor QoS depth of 5 a burst can lose some before the
        # callback)
        assert st.frames_rejected + st.messages_rejected >= 55, (st.frames_rejected, st.messages_rejected)
        assert st.frames_rejected >= 10  # the 10 broken colour images are rejected frames
        assert st.frames_fused == 0
        log = (tmp_path / "logs" / "proc-0.log").read_text()
        for reason in (
            "image data has 7 bytes",
            "unsupported image encoding 'yuv422_yuy2'",
            "step 3 is smaller",
            "CameraInfo has distortion",
            "non-finite position",
            "expected the map frame",
        ):
            assert reason in log, f"no rejection logged for: {reason}"
        play(client.node, bag, rate=1.0)  # good frames afterwards are still mapped
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = client.call(GetMapStatus, "/lang3d/get_map_status").status
            if st.frames_fused >= 3:
                break
            time.sleep(0.5)
        assert st.frames_fused >= 3 and st.num_points > 0
    finally:
        client.close()
        stop(mapper)
