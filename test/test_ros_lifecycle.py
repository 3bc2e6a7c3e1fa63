"""The mapper as a lifecycle node driven from another process (lifecycle_msgs ChangeState / GetState, as Nav2's
lifecycle manager does), with its /diagnostics, its objects topic and its autosave on SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml
from ros_helpers import next_domain_id, require_ros, spawn, stop

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames

    out = tmp_path_factory.mktemp("lcbag")
    scene = generate_scene(seed=43, n_objects=6)
    frames = render_frames(
        scene, make_trajectory(scene, "orbit", 20, seed=43), DEFAULT_INTRINSICS.scaled(160, 120), noise=None, seed=43
    )
    write_bag(frames, out / "bag", pose_msg="pose", scene=scene, seed=43)
    return out / "bag", scene


RVIZ_TYPES = {
    "PointCloud2": "sensor_msgs/msg/PointCloud2",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
    "Map": "nav_msgs/msg/OccupancyGrid",
    "Pose": "geometry_msgs/msg/PoseStamped",
    "Path": "nav_msgs/msg/Path",
}


def rviz_topics(path: Path) -> dict[str, str]:
    """{topic: message type} of every display in an RViz2 config that subscribes to a topic."""
    out = {}
    for d in yaml.safe_load(path.read_text())["Visualization Manager"]["Displays"]:
        if "Topic" in d:
            kind = d["Class"].split("/")[-1]
            assert kind in RVIZ_TYPES, f"display class {d['Class']} has no known message type"
            out[d["Topic"]["Value"]] = RVIZ_TYPES[kind]
    return out


class Probe:
    """A client node: lifecycle calls, lang3d services, and the messages of /diagnostics and the objects topics."""

    def __init__(self, domain: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lang3d_ros.msg import DetectedObjectArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from visualization_msgs.msg import MarkerArray

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("lang3d_lifecycle_probe", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.diagnostics, self.objects, self.markers = [], [], []
        latched = QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.node.create_subscription(DetectedObjectArray, "/lang3d/objects", self.objects.append, latched)
        self.node.create_subscription(MarkerArray, "/lang3d/object_markers", self.markers.append, latched)
        self._clients = {}

    def client(self, srv_type, name):
        if name not in self._clients:
            self._clients[name] = self.node.create_client(srv_type, name)
        return self._clients[name]

    def call(self, srv_type, name, timeout_s=60.0, attempts=1, **fields):
        """attempts > 1 only for idempotent services: a response can be lost while the server has not yet matched
        this client's response reader (the mapper logged "failed to send response (timeout)" once under CI load)."""
        cli = self.client(srv_type, name)
        assert cli.wait_for_service(timeout_sec=timeout_s), f"{name} not available"
        for _ in range(attempts):
            fut = cli.call_async(srv_type.Request(**fields))
            self.executor.spin_until_future_complete(fut, timeout_sec=timeout_s)
            if fut.done():
                return fut.result()
            cli.remove_pending_request(fut)
        raise AssertionError(f"{name} unanswered ({attempts} attempt(s) of {timeout_s:.0f} s)")

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, "/lang3d_mapper/get_state", timeout_s=20.0, attempts=4).current_state.label

    def transition(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self.call(
            ChangeState, "/lang3d_mapper/change_state", timeout_s=180.0, transition=Transition(id=transition_id)
        ).success

    def spin_for(self, seconds: float, until=lambda: False) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.1)
            if until():
                return True
        return until()

    def service_present(self, name: str = "/lang3d/get_map_status") -> bool:
        """A server answers on ``name`` (the graph's service list also shows clients, so ask a client)."""
        from lang3d_ros.srv import GetMapStatus

        return self.client(GetMapStatus, name).service_is_ready()

    def close(self):
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def test_lifecycle_transitions_diagnostics_objects_and_sigterm_autosave(tmp_path, bag):
    require_ros()
    from lang3d_ros.srv import GetMapStatus
    from lifecycle_msgs.msg import Transition

    from lang3d_ros.config import load_config
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.ros.autosave import autosaves
    from lang3d_ros.ros.bag_player import play
    from lang3d_ros.semantics.backends import build_text_encoder

    bag_dir, scene = bag
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"voxel_size_m": 0.04, "device": "cpu"},
        "mapping": {"train_gaussians": False, "keyframes": {"min_translation_m": 0.25}},
        "extraction": {"vocabulary": sorted(set(scene.labels))},
        "llm": {"mode": "parser_only"},
        "ros": {
            "ground_truth_file": str(bag_dir / "ground_truth.json"),
            "autostart": False,
            "cloud_period_s": 0.0,
            "map_dir": str(tmp_path / "maps"),
            "objects_period_s": 1.0,
            "sensor_qos_depth": 20,
            "sensor_qos_reliability": "reliable",  # as the player publishes: no frame lost in transport under load
            "diagnostics": {"period_s": 0.5},
            "autosave": {"period_s": 0.0, "on_shutdown": True, "keep": 2},
        },
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    domain = next_domain_id()
    logs = tmp_path / "logs"
    args = [str(REPO / "scripts" / "mapper_node"), "--ros-args", "--params-file", str(params_file)]
    mapper = spawn(args, domain, logs)
    probe = Probe(domain)
    try:
        # unconfigured: only the lifecycle services, no lang3d services, no diagnostics
        assert probe.state() == "unconfigured"
        probe.spin_for(1.5)
        assert not probe.service_present("/lang3d/get_map_status") and not probe.diagnostics
        # inactive: models loaded, still nothing served
        assert probe.transition(Transition.TRANSITION_CONFIGURE) and probe.state() == "inactive"
        probe.spin_for(1.0)
        assert not probe.service_present("/lang3d/get_map_status") and not probe.diagnostics
        # active: services answer, /diagnostics at its period, frames fuse, objects are published
        assert probe.transition(Transition.TRANSITION_ACTIVATE) and probe.state() == "active"
        assert probe.call(GetMapStatus, "/lang3d/get_map_status").status.frames_fused == 0
        play(probe.node, bag_dir, rate=1.0)
        assert probe.spin_for(
            60, lambda: probe.call(GetMapStatus, "/lang3d/get_map_status").status.frames_fused >= 8 and probe.objects
        ), "no frames fused or no objects published"
        probe.spin_for(1.0)
        probe.diagnostics.clear()  # from here on: arrays published after the frames were fused
        assert probe.spin_for(10, lambda: len(probe.diagnostics) >= 2)
        names = {s.name for s in probe.diagnostics[-1].status}
        assert names == {f"lang3d_mapper: {p}" for p in ("intake", "semantics", "map", "models", "training")}
        by_name = {s.name: s for s in probe.diagnostics[-1].status}
        intake = {kv.key: kv.value for kv in by_name["lang3d_mapper: intake"].values}
        assert int(intake["frames_fused"]) >= 8 and float(intake["fusion_rate_hz"]) >= 0 and "top_reasons" in intake
        assert int({kv.key: kv.value for kv in by_name["lang3d_mapper: map"].values}["num_points"]) > 0
        assert all(s.level in (b"\x00", b"\x01", b"\x02", 0, 1, 2) for s in probe.diagnostics[-1].status)
        objs = probe.objects[-1].objects
        ids = [o.instance_id for o in objs]
        assert objs and len(set(ids)) == len(ids) and all(o.header.frame_id == "map" for o in objs)
        assert probe.markers and any(m.text for m in probe.markers[-1].markers)  # labelled boxes
        # every topic config/lang3d.rviz shows is published by the active mapper, with the type the display reads
        published = dict(probe.node.get_publisher_names_and_types_by_node("lang3d_mapper", "/"))
        shown = rviz_topics(REPO / "config" / "lang3d.rviz")
        assert (
            len(shown) == 6
            and yaml.safe_load((REPO / "config" / "lang3d.rviz").read_text())["Visualization Manager"][
                "Global Options"
            ]["Fixed Frame"]
            == "map"
        )
        for topic, msg_type in shown.items():
            assert msg_type in published.get(topic, []), (topic, msg_type, sorted(published))
        # inactive again: intake and services stop, the map stays
        before = probe.call(GetMapStatus, "/lang3d/get_map_status").status
        assert probe.transition(Transition.TRANSITION_DEACTIVATE) and probe.state() == "inactive"
        assert probe.spin_for(10, lambda: not probe.service_present("/lang3d/get_map_status"))
        assert probe.transition(Transition.TRANSITION_ACTIVATE) and probe.state() == "active"
        after = probe.call(GetMapStatus, "/lang3d/get_map_status").status
        assert after.num_points == before.num_points > 0 and after.frames_fused == before.frames_fused
        # SIGTERM while mapping: a clean stop that leaves a loadable autosave of this map
        mapper.send_signal(signal.SIGTERM)
        mapper.wait(60)
    finally:
        probe.close()
        stop(mapper)
    log = (logs / "proc-0.log").read_text()
    saved = autosaves(tmp_path / "maps")
    assert len(saved) == 1 and "SIGTERM: map of" in log, log[-2000:]
    cfg = load_config(overrides={k: params[k] for k in ("semantics", "fusion")})
    restored = LanguageMap(cfg, build_text_encoder(cfg.semantics), device="cpu")
    restored.load(saved[0])
    assert restored.num_points == after.num_points


def test_lifecycle_shutdown_saves_a_restart_resumes_and_cleanup_frees(tmp_path, bag):
    require_ros()
    from lang3d_ros.srv import GetMapStatus
    from lifecycle_msgs.msg import Transition

    from lang3d_ros.ros.autosave import autosaves
    from lang3d_ros.ros.bag_player import play

    bag_dir, scene = bag
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"voxel_size_m": 0.04, "device": "cpu"},
        "mapping": {"train_gaussians": False},
        "llm": {"mode": "parser_only"},
        "ros": {
            "ground_truth_file": str(bag_dir / "ground_truth.json"),
            "cloud_period_s": 0.0,
            "objects_period_s": 0.0,
            "map_dir": str(tmp_path / "maps"),
            "sensor_qos_depth": 20,
            "sensor_qos_reliability": "reliable",  # as the player publishes: no frame lost in transport under load
            "autosave": {"period_s": 0.0},
        },
    }
    logs = tmp_path / "logs"

    def start(extra_ros: dict):
        p = dict(params, ros=dict(params["ros"], **extra_ros))
        f = tmp_path / f"params{len(list(tmp_path.glob('params*')))}.yaml"
        f.write_text(yaml.safe_dump({"/**": {"ros__parameters": p}}))
        domain = next_domain_id()
        return spawn(
            [str(REPO / "scripts" / "mapper_node"), "--ros-args", "--params-file", str(f)], domain, logs
        ), Probe(domain)

    mapper, probe = start({})
    try:
        assert probe.call(GetMapStatus, "/lang3d/get_map_status", timeout_s=180).status.frames_fused == 0
        assert probe.state() == "active"  # autostart
        play(probe.node, bag_dir, rate=1.0)
        assert probe.spin_for(60, lambda: probe.call(GetMapStatus, "/lang3d/get_map_status").status.frames_fused >= 8)
        probe.spin_for(2.0)
        n_points = probe.call(GetMapStatus, "/lang3d/get_map_status").status.num_points
        # the lifecycle shutdown (what a manager sends at the end) saves the map
        assert probe.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN) and probe.state() == "finalized"
        assert len(autosaves(tmp_path / "maps")) == 1
    finally:
        probe.close()
        stop(mapper)
    assert "lifecycle shutdown: map of" in (logs / "proc-0.log").read_text()
    # a restart with ros.autosave.resume continues from that autosave
    mapper, probe = start({"autosave": {"period_s": 0.0, "resume": True, "on_shutdown": True}})
    try:
        st = probe.call(GetMapStatus, "/lang3d/get_map_status", timeout_s=180).status
        assert st.num_points == n_points and "autosave_" in st.source, st
        # deactivate + cleanup: back to unconfigured, services gone, the map freed (a stop now saves nothing)
        assert probe.transition(Transition.TRANSITION_DEACTIVATE)
        assert probe.transition(Transition.TRANSITION_CLEANUP) and probe.state() == "unconfigured"
        assert probe.spin_for(10, lambda: not probe.service_present())
    finally:
        probe.close()
        stop(mapper)
    assert "the map is empty, nothing to save" in (logs / "proc-1.log").read_text()
    assert len(autosaves(tmp_path / "maps")) == 1
