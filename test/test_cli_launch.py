"""`lang3d launch` / `lang3d call` / `lang3d config`: the no-`ros2 launch` path with the same YAML, end to end."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ros_helpers import next_domain_id, require_ros, ros_env

REPO = Path(__file__).resolve().parents[1]


def test_config_command_merges_and_rejects(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lang3d_ros.cli",
            "config",
            str(REPO / "config" / "lang3d.yaml"),
            str(REPO / "config" / "realsense_d435.yaml"),
            "--set",
            "fusion.voxel_size_m=0.05",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "voxel_size_m: 0.05" in out.stdout and "/camera/camera/aligned_depth_to_color/image_raw" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lang3d_ros.cli", "config", "--set", "fusion.voxel=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "unknown key" in bad.stderr


def test_every_shipped_config_is_valid():
    from lang3d_ros.config import load_config

    for f in sorted((REPO / "config").glob("*.yaml")):
        load_config(f)


def test_launch_files_name_installed_executables_and_configs():
    cmake = (REPO / "CMakeLists.txt").read_text()
    installed = set(re.findall(r"scripts/(\w+)", cmake))
    for f in sorted((REPO / "launch").glob("*.launch.py")):
        tree = ast.parse(f.read_text())
        names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert "generate_launch_description" in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        for exe in {"mapper_node", "query_server_node", "bag_player"} & names:
            assert exe in installed, f"{f.name} runs {exe}, which CMakeLists.txt does not install"
        for cfg in {n for n in names if n.endswith(".yaml")}:
            assert (REPO / "config" / cfg).is_file(), f"{f.name} names config/{cfg}, which does not exist"


@pytest.mark.ros
def test_launch_replay_then_call_services(tmp_path):
    require_ros()
    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames

    scene = generate_scene(seed=21, n_objects=6)
    frames = render_frames(
        scene, make_trajectory(scene, "orbit", 16, seed=21), DEFAULT_INTRINSICS.scaled(160, 120), seed=21
    )
    write_bag(frames, tmp_path / "bag", pose_msg="pose", scene=scene, seed=21)
    env = ros_env(next_domain_id(), tmp_path / "logs")
    launch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lang3d_ros.cli",
            "launch",
            "replay",
            str(tmp_path / "bag"),
            "--set",
            "fusion.voxel_size_m=0.04",
        ],
        env=env,
        start_new_session=True,
        stdout=open(tmp_path / "launch.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:

        def call(*args, timeout=60):
            r = subprocess.run(
                [sys.executable, "-m", "lang3d_ros.cli", "call", *args, "--json", "--timeout", "60"],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout + 60,
            )
            return r.returncode, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stderr)

        deadline = time.monotonic() + 150
        status, last, stable = None, None, 0
        while time.monotonic() < deadline:  # until the map has keyframes and stopped changing (the bag is over)
            rc, status = call("status")
            st = status["status"] if rc == 0 else {}
            key = (st.get("frames_fused"), st.get("keyframes"), st.get("num_points"))
            stable = stable + 1 if key == last else 0
            last = key
            if st and st["keyframes"] >= 2 and stable >= 2:
                break
            time.sleep(1.0)
        assert rc == 0 and status["status"]["num_points"] > 0, (status, (tmp_path / "launch.log").read_text()[-3000:])
        # the launch/call mechanics are under test here, not coverage of 16 frames: one of the 3 biggest objects
        answers = []
        for obj in sorted(scene.objects, key=lambda o: -o.aabb.volume)[:3]:
            rc, res = call("ground", obj.label, "--max", "2")
            answers.append((obj.label, rc, res))
            if rc == 0:
                break
        assert rc == 0 and res["objects"][0]["header"]["frame_id"] == "map", answers
        rc, res = call("ground", "")
        assert rc == 3 and res["success"] is False and "empty" in res["message"]
        assert res["error_code"] == 1  # ERROR_BAD_REQUEST
        # the launched (autostarted) mapper publishes /diagnostics
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
        try:
            node = rclpy.create_node("lang3d_diag_probe", context=ctx)
            got = []
            node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            end = time.monotonic() + 20
            while not got and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.2)
            assert got and {s.name for s in got[0].status} >= {"lang3d_mapper: intake", "lang3d_mapper: map"}
            node.destroy_node()
        finally:
            rclpy.shutdown(context=ctx)
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        launch.wait(30)
    assert launch.returncode == 0, (tmp_path / "launch.log").read_text()[-3000:]
