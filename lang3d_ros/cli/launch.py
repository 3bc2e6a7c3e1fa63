"""``lang3d launch``: start the nodes with merged YAML config where ``ros2 launch`` is not installed.

Same executables and the same parameter files as launch/*.launch.py. Children run in their own sessions;
Ctrl-C (or SIGTERM) is passed on and waited for.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("launch", help="start the nodes without ros2 launch", description=__doc__)
    p.add_argument(
        "what",
        choices=("mapping", "serve", "replay"),
        help="mapping: mapper + services on the live map; serve: a saved map; replay: mapping fed by a bag",
    )
    p.add_argument("bag", nargs="?", type=Path, help="replay: the bag folder")
    p.add_argument(
        "--config",
        action="append",
        type=Path,
        default=[],
        help="parameter file(s), later ones override (default: config/lang3d.yaml; replay: config/synthetic.yaml)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. fusion.voxel_size_m=0.03",
    )
    p.add_argument("--map", type=Path, help="serve: the map file")
    p.add_argument(
        "--no-autostart",
        action="store_true",
        help="leave the lifecycle node unconfigured for a lifecycle manager (ros.autostart=false); "
        "replay needs autostart",
    )
    p.add_argument("--rate", type=float, default=1.0, help="replay: playback speed factor")
    p.add_argument(
        "--ground-truth",
        type=Path,
        help="replay of a synthetic bag: its ground_truth.json (default: <bag>/ground_truth.json)",
    )
    p.add_argument(
        "--exit-after-replay",
        type=float,
        default=None,
        metavar="S",
        help="replay: stop the mapper S seconds after the bag has played (default: run until Ctrl-C)",
    )
    p.set_defaults(func=run)


def merged_params_file(configs: list[Path], overrides: dict) -> Path:
    """One ROS 2 parameter file from several (validated against Lang3DConfig), written to a temp file."""
    from lang3d_ros.config import dump_config, load_config

    cfg = load_config(*configs, overrides=overrides)
    fd, path = tempfile.mkstemp(prefix="lang3d-params-", suffix=".yaml")
    with os.fdopen(fd, "w") as fh:
        fh.write(dump_config(cfg))
    return Path(path)


def parse_overrides(items: list[str]) -> dict:
    from lang3d_ros.config import literal, nest

    flat = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        flat[k.strip()] = literal(v)
    return nest(flat)


def _spawn(name: str, args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lang3d_ros.ros.entry_points", name, *args]
    print("[lang3d launch] " + " ".join(cmd), flush=True)
    from lang3d_ros.evaluation.processes import node_env

    return subprocess.Popen(cmd, start_new_session=True, env=node_env())


def wait_for_services(proc: subprocess.Popen, timeout_s: float, stop=lambda: False) -> bool:
    """Wait until the mapper answers on lang3d/get_map_status (models loaded), or it dies, or the timeout."""
    import rclpy

    from lang3d_ros.srv import GetMapStatus

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("lang3d_launch_probe", context=ctx)
        client = node.create_client(GetMapStatus, "lang3d/get_map_status")
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and proc.poll() is None and not stop():
            if client.wait_for_service(timeout_sec=0.5):
                return True
        return False
    finally:
        rclpy.shutdown(context=ctx)


def _stop_all(procs: list[subprocess.Popen], timeout_s: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    end = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    if args.no_autostart:
        if args.what == "replay":
            raise ValueError("replay needs an active mapper: drop --no-autostart")
        overrides.setdefault("ros", {})["autostart"] = False
    if args.what == "replay":
        if args.bag is None or not args.bag.exists():
            raise ValueError(f"replay needs an existing bag folder, got {args.bag}")
        gt = args.ground_truth or (args.bag / "ground_truth.json")
        if gt.is_file():
            overrides.setdefault("ros", {})["ground_truth_file"] = str(gt.resolve())
    if args.what == "serve":
        if args.map is None:
            raise ValueError("serve needs --map FILE")
        overrides.setdefault("ros", {})["load_map"] = str(args.map.resolve())
    configs = args.config or [REPO_CONFIG / ("synthetic.yaml" if args.what == "replay" else "lang3d.yaml")]
    params = merged_params_file(configs, overrides)
    ros_args = ["--ros-args", "--params-file", str(params)]
    procs: list[subprocess.Popen] = []
    stopping = {"now": False}

    def on_signal(signum, frame):
        stopping["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        node = "query_server_node" if args.what == "serve" else "mapper_node"
        procs.append(_spawn(node, ros_args))
        if args.what == "replay":
            if not wait_for_services(procs[0], timeout_s=300.0, stop=lambda: stopping["now"]):
                print("[lang3d launch] the mapper did not come up; not replaying", flush=True)
                return 1
            procs.append(_spawn("bag_player", [str(args.bag), "--rate", str(args.rate)]))
        replay_done_at = None
        while not stopping["now"]:
            if procs[0].poll() is not None:
                print(f"[lang3d launch] {node} exited with {procs[0].returncode}", flush=True)
                return int(procs[0].returncode or 0)
            if args.what == "replay" and replay_done_at is None and procs[1].poll() is not None:
                replay_done_at = time.monotonic()
                print(f"[lang3d launch] bag played (exit {procs[1].returncode})", flush=True)
            if (
                replay_done_at is not None
                and args.exit_after_replay is not None
                and time.monotonic() - replay_done_at >= args.exit_after_replay
            ):
                break
            time.sleep(0.2)
        return 0
    finally:
        _stop_all(procs)
        for s, h in old.items():
            signal.signal(s, h)
        params.unlink(missing_ok=True)
