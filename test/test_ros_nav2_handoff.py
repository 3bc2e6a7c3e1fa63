"""Nav2 handoff (navigation.execute): Navigate sends its goal to a navigate_to_pose action server of Nav2's shape
(a stand-in in another process, on a nav2_msgs built here from test/nav2_stub, since nav2_msgs is not on PyPI) and
reports the acceptance; without an action server or without nav2_msgs the answer says so and keeps the goal."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_helpers import next_domain_id, require_ros, spawn, stop

pytestmark = pytest.mark.ros
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def nav2_msgs_prefix(tmp_path_factory):
    """Build the test-only nav2_msgs (NavigateToPose) with colcon into a temp install space."""
    require_ros()
    import sys

    tmp = tmp_path_factory.mktemp("nav2_stub")
    shutil.copytree(HERE / "nav2_stub" / "nav2_msgs", tmp / "src" / "nav2_msgs")
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.skip("colcon is not installed (scripts/setup.sh installs it)")
    out = subprocess.run(
        [
            str(colcon),
            "--log-base",
            str(tmp / "log"),
            "build",
            "--base-paths",
            str(tmp / "src"),
            "--build-base",
            str(tmp / "build"),
            "--install-base",
            str(tmp / "install"),
            "--cmake-args",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp / "install" / "nav2_msgs"


def test_navigate_hands_the_goal_to_a_navigate_to_pose_server(tmp_path, nav2_msgs_prefix, monkeypatch):
    from lang3d_ros.srv import GetMapStatus, Navigate

    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.evaluation.processes import ServiceClient
    from lang3d_ros.ros.bag_player import play

    site = nav2_msgs_prefix / "lib" / "python3.11" / "site-packages"
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{nav2_msgs_prefix / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    scene = generate_scene(seed=59, n_objects=6)
    frames = render_frames(
        scene, make_trajectory(scene, "orbit", 20, seed=59), DEFAULT_INTRINSICS.scaled(160, 120), noise=None, seed=59
    )
    write_bag(frames, tmp_path / "bag", pose_msg="pose", scene=scene, seed=59)
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"voxel_size_m": 0.04, "device": "cpu"},
        "mapping": {"train_gaussians": False, "keyframes": {"min_translation_m": 0.25}},
        "llm": {"mode": "parser_only"},
        "navigation": {"execute": True, "execute_timeout_s": 10.0},
        "ros": {
            "ground_truth_file": str(tmp_path / "bag" / "ground_truth.json"),
            "cloud_period_s": 0.0,
            "map_dir": str(tmp_path / "maps"),
            "sensor_qos_reliability": "reliable",  # as the player publishes: no frame lost in transport
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    domain = next_domain_id()
    logs = tmp_path / "logs"
    mapper = spawn(
        [str(HERE.parent / "scripts" / "mapper_node"), "--ros-args", "--params-file", str(tmp_path / "params.yaml")],
        domain,
        logs,
    )
    client = ServiceClient(domain)
    standin = None
    try:
        client.call(GetMapStatus, "/lang3d/get_map_status", timeout_s=180.0)
        play(client.node, tmp_path / "bag", rate=1.0)
        deadline = time.monotonic() + 90
        while client.call(GetMapStatus, "/lang3d/get_map_status")[0].status.keyframes < 3:
            assert time.monotonic() < deadline, "the mapper fused too few keyframes"
            time.sleep(0.5)
        labels = [o.label for o in sorted(scene.objects, key=lambda o: -o.aabb.volume) if o.support_id == 0]
        # no action server yet: the goal comes back, the message says it was not sent. The semantics worker may
        # still be behind the fused keyframes (objects need two matched keyframes): ask until a target is answered
        res, deadline = None, time.monotonic() + 90
        while res is None or not res.success:
            for label in labels:
                res, _ = client.call(Navigate, "/lang3d/navigate", timeout_s=60.0, instruction=f"go to the {label}")
                if res.success:
                    break
            if not res.success:
                assert time.monotonic() < deadline, res.message
                time.sleep(1.0)
        assert res.success, res.message
        assert not res.goal_sent and "no navigate_to_pose action server" in res.message and res.goal.header.frame_id
        standin = spawn([str(HERE / "ros_nav2_standin.py")], domain, logs)
        res, _ = client.call(Navigate, "/lang3d/navigate", timeout_s=60.0, instruction=f"go to the {label}")
        assert res.success and res.goal_sent and res.goal_accepted, res.message
        assert "Nav2 accepted the goal" in res.message
        time.sleep(0.5)
        text = (logs / "proc-1.log").read_text()
        sent = [line.split() for line in text.splitlines() if line.startswith("GOAL ")]
        assert sent and sent[-1][1] == "map" and sent[-1][4] == "accepted"
        p = res.goal.pose.position
        assert np.allclose([float(sent[-1][2]), float(sent[-1][3])], [p.x, p.y], atol=1e-3)  # the same goal
    finally:
        client.close()
        if standin is not None:
            stop(standin)
        stop(mapper)


def test_without_nav2_msgs_the_answer_says_so():
    require_ros()
    import importlib.util

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from lang3d_ros.srv import Navigate

    from lang3d_ros.ros.nav2 import Nav2Handoff

    if importlib.util.find_spec("nav2_msgs") is not None:
        pytest.skip("nav2_msgs is installed here")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    try:
        node = rclpy.create_node("lang3d_nav2_absent", context=ctx)
        res = Navigate.Response(success=True, message="goal 0.60 m from the sofa")
        Nav2Handoff(node, "navigate_to_pose", 1.0)(PoseStamped(), res)
        assert res.success and not res.goal_sent and "nav2_msgs is not installed" in res.message
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
