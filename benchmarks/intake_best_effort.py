#!/usr/bin/env python3
"""Best-effort sensor intake of the real mapper node: a live camera-like stream in, what the node got out.

For each scenario and each code variant (alternating, so both see the same load), the mapper node runs as its own
process (own ROS_DOMAIN_ID, loopback discovery, ``ros.sensor_qos_reliability: best_effort``, the live defaults of
``mapping``) and this process publishes a camera-like stream on its topics: colour (rgb8) + depth (16UC1) +
camera_info at ``fps`` and PoseStamped at ``--pose-rate-factor`` x fps, stamped with the wall clock when sent,
along a closed orbit walked at ``--speed-m-s`` (default 1.0). The images are ``--views`` pre-rendered views of a
synthetic room (the one nearest along the loop; the pose is the exact loop pose, so image and pose differ by up to
half a view spacing: fine for intake, not a mapping-accuracy benchmark). ``burst`` replays the 24-frame bag of
test/test_ros_nodes.py with ``bag_player.play`` at rate 1 (reliable publishers, depth 100) into the same
best-effort subscriptions, the conditions of the CI failures.

Reported per stream: sent (this process), received by the node (its stop summary: every colour image, depth image
and pose the callbacks saw), and what became of the colour images (assembled into frames, fused, dropped and
rejected by reason). sent - received = lost before the callback (transport or the subscription's DDS history of
``ros.sensor_qos_depth`` overwritten before the executor took the sample).

Variants are source trees run with PYTHONPATH=<tree>:<install>: ``LABEL=REF`` where REF is a commit (``git archive``
into --work/trees), ``worktree`` (this checkout), and ``+shared-group`` undoes 2c82e6c's one-callback-group-per-
stream (all sensor subscriptions in one MutuallyExclusiveCallbackGroup, as before it).

    python benchmarks/intake_best_effort.py --scenarios 15@320x240 30@640x480 burst --load-procs 2 \
        --variant per-stream=HEAD --variant shared-group=HEAD+shared-group

What it cannot do: tell transport loss from history overwrite (both are 'lost before the callback'); the load
processes only compete for CPU (no memory-bandwidth or I/O load); timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
INSTALL_SITE = REPO / "install" / "lang3d_ros" / "lib" / "python3.11" / "site-packages"
MAPPER_CODE = "import sys; from lang3d_ros.ros.entry_points import mapper_node; sys.exit(mapper_node())"
TOPICS = {
    "colour": "/camera/color/image_raw",
    "depth": "/camera/depth/image_rect_raw",
    "info": "/camera/color/camera_info",
    "pose": "/camera/pose",
}
SUMMARY_RE = re.compile(
    r"intake: (\d+) colour images: (\d+) fused, (\d+) dropped(?: \(([^)]*)\))?, (\d+) rejected(?: \(([^)]*)\))?, "
    r"(\d+) pending; (\d+) depth images(?: \(([^)]*)\))?, (\d+) poses(?: \(([^)]*)\))?"
)


@dataclass
class RunResult:
    variant: str
    scenario: str
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    fused: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    depth_dropped: dict[str, int] = field(default_factory=dict)
    poses_rejected: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    load_1min: float = 0.0
    send_late_ms_p95: float = 0.0
    summary_line: str = ""


def _reasons(text: str | None) -> dict[str, int]:
    out = {}
    for part in (text or "").split(", "):
        if ": " in part:
            k, v = part.rsplit(": ", 1)
            out[k] = int(v)
    return out


def parse_summary(log_text: str) -> dict | None:
    """The mapper's last stop summary line ('intake: ...') as numbers, None when there is none."""
    found = SUMMARY_RE.findall(log_text)
    if not found:
        return None
    g = found[-1]
    return {
        "colour": int(g[0]),
        "fused": int(g[1]),
        "dropped": _reasons(g[3]),
        "rejected": _reasons(g[5]),
        "pending": int(g[6]),
        "depth": int(g[7]),
        "depth_dropped": _reasons(g[8]),
        "poses": int(g[9]),
        "poses_rejected": _reasons(g[10]),
    }


# ------------------------------------------------------------------------------------------------ code variants
SHARED_OLD = "callback_group=MutuallyExclusiveCallbackGroup())\n            for t, topic, fn in streams"
SHARED_NEW = "callback_group=shared_group)\n            for t, topic, fn in streams"


def make_tree(spec: str, work: Path) -> Path:
    """REF[+shared-group] -> a source folder (see the module docstring)."""
    ref, _, mod = spec.partition("+")
    if ref == "probe":
        return Path("probe")
    if ref == "worktree":
        if mod:
            raise ValueError("+shared-group needs a commit, not the worktree")
        return REPO
    commit = subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--short", ref], text=True).strip()
    tree = work / "trees" / f"{commit}{'+' + mod if mod else ''}"
    if not (tree / "lang3d_ros").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
        subprocess.check_call(["tar", "-x", "-C", str(tree)], stdin=archive.stdout)
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {commit} failed")
        if mod == "shared-group":
            path = tree / "lang3d_ros" / "ros" / "mapper_node.py"
            text = path.read_text()
            if SHARED_OLD not in text:
                raise ValueError(f"{spec}: the per-stream group code is not in {commit}'s mapper_node.py")
            text = text.replace(SHARED_OLD, SHARED_NEW).replace(
                "        self._subs = [\n            self.create_subscription(t, topic, fn, qos, callback_group=shared",
                "        shared_group = MutuallyExclusiveCallbackGroup()  # benchmark variant: one group, as before\n"
                "        self._subs = [\n            self.create_subscription(t, topic, fn, qos, callback_group=shared",
            )
            if "shared_group = MutuallyExclusiveCallbackGroup()" not in text:
                raise ValueError(f"{spec}: could not patch {path}")
            path.write_text(text)
        elif mod:
            raise ValueError(f"unknown variant modifier {mod!r}")
    return tree


# ------------------------------------------------------------------------------------------------ the stream
@dataclass
class Scenario:
    name: str
    fps: float = 0.0
    width: int = 0
    height: int = 0

    @staticmethod
    def parse(text: str) -> Scenario:
        if text == "burst":
            return Scenario("burst")
        m = re.fullmatch(r"(\d+(?:\.\d+)?)@(\d+)x(\d+)", text)
        if not m:
            raise argparse.ArgumentTypeError(f"scenario {text!r}: FPS@WxH or burst")
        return Scenario(text, float(m[1]), int(m[2]), int(m[3]))


class Views:
    """``n`` rendered views of one synthetic room along a closed orbit, and the loop pose at any arc length."""

    def __init__(self, width: int, height: int, n: int, seed: int, gt_path: Path):
        from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames

        scene = generate_scene(seed=seed, n_objects=7)
        self.T = make_trajectory(scene, "orbit", n, seed=seed)
        self.intrinsics = DEFAULT_INTRINSICS.scaled(width, height)
        frames = list(render_frames(scene, self.T, self.intrinsics, noise=None, seed=seed))
        self.rgb = [f.rgb for f in frames]
        self.depth_mm = [np.clip(np.round(f.depth_m * 1000.0), 0, 65535).astype(np.uint16) for f in frames]
        scene.save_ground_truth(gt_path, self.T, np.arange(n, dtype=np.int64), self.intrinsics)
        loop = np.concatenate([self.T, self.T[:1]])
        step = np.linalg.norm(np.diff(loop[:, :3, 3], axis=0), axis=1)
        self.arc_m = np.concatenate([[0.0], np.cumsum(step)])
        self.loop_m = float(self.arc_m[-1])
        self._loop = loop

    def view_at(self, s_m: float) -> int:
        s = s_m % self.loop_m
        return int(np.argmin(np.abs(self.arc_m - s))) % len(self.rgb)

    def pose_at(self, s_m: float) -> np.ndarray:
        from lang3d_ros.mapping.sync import interpolate_pose

        s = s_m % self.loop_m
        stamps = np.round(self.arc_m * 1e6).astype(np.int64)  # arc length in micrometres as the "time" axis
        return interpolate_pose(stamps, self._loop, int(round(s * 1e6)), max_gap_ns=2**62)


def stream(node, views: Views, fps: float, pose_factor: float, duration_s: float, speed_m_s: float, qos) -> tuple:
    """Publish colour + depth + camera_info at fps and poses at fps * pose_factor for duration_s, stamped with the
    wall clock; returns ({stream: sent}, p95 of how late a message was sent behind its schedule, ms)."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image

    from lang3d_ros.ros import conversions as cv

    pubs = {
        "colour": node.create_publisher(Image, TOPICS["colour"], qos),
        "depth": node.create_publisher(Image, TOPICS["depth"], qos),
        "info": node.create_publisher(CameraInfo, TOPICS["info"], qos),
        "pose": node.create_publisher(PoseStamped, TOPICS["pose"], qos),
    }
    deadline = time.monotonic() + 30
    while any(p.get_subscription_count() == 0 for p in pubs.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the mapper's sensor subscriptions did not match in 30 s")
        time.sleep(0.05)
    time.sleep(0.5)
    frame_id = "camera_color_optical_frame"
    colour = [cv.numpy_to_image(x, "rgb8", cv.make_header(frame_id, 0)) for x in views.rgb]
    depth = [cv.numpy_to_image(x, "16UC1", cv.make_header(frame_id, 0)) for x in views.depth_mm]
    info = cv.intrinsics_to_camera_info(views.intrinsics, cv.make_header(frame_id, 0))
    events = [(k / fps, "image") for k in range(int(duration_s * fps))]
    events += [(k / (fps * pose_factor), "pose") for k in range(int(duration_s * fps * pose_factor))]
    events.sort()
    sent = dict.fromkeys(pubs, 0)
    late_ms = []
    t0 = time.monotonic()
    for t_s, kind in events:
        delay = t0 + t_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        late_ms.append(max(0.0, -delay) * 1e3)
        stamp = cv.ns_to_stamp(time.time_ns())
        s_m = t_s * speed_m_s
        if kind == "pose":
            msg = cv.matrix_to_pose_stamped(views.pose_at(s_m), "map", 0)
            msg.header.stamp = stamp
            pubs["pose"].publish(msg)
            sent["pose"] += 1
            continue
        k = views.view_at(s_m)
        for name, msg in (("colour", colour[k]), ("depth", depth[k]), ("info", info)):
            msg.header.stamp = stamp
            pubs[name].publish(msg)
            sent[name] += 1
    return sent, float(np.percentile(late_ms, 95)) if late_ms else 0.0


def burst_bag(work: Path) -> Path:
    """The 24-frame 160x120 orbit bag of test/test_ros_nodes.py (seed 11, 7 objects, ~30 Hz stamps)."""
    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames

    out = work / "burst_bag"
    if not (out / "bag").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        scene = generate_scene(seed=11, n_objects=7)
        poses = make_trajectory(scene, "orbit", 24, seed=11)
        frames = render_frames(scene, poses, DEFAULT_INTRINSICS.scaled(160, 120), noise=None, seed=11)
        write_bag(frames, out / "bag", storage="mcap", depth_encoding="16UC1", pose_msg="pose", scene=scene, seed=11)
    return out / "bag"


# ------------------------------------------------------------------------------------------------ one run
def probe(depth: int) -> int:
    """The transport baseline: a subscriber that only counts (best effort, history ``depth``, single-threaded
    executor) and the DDS 'message lost' events per stream, with the mapper's name and a GetMapStatus service so
    run_once drives it like the mapper; prints one 'probe:' line on SIGINT."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from lang3d_ros.srv import GetMapStatus
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    rclpy.init()
    node = rclpy.create_node("lang3d_mapper")
    qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=depth)
    counts = {"colour": 0, "depth": 0, "pose": 0}
    lost = {}

    def make(name):
        def on_msg(_msg):
            counts[name] = counts.get(name, 0) + 1

        def on_lost(ev):
            lost[name] = lost.get(name, 0) + ev.total_count_change

        return on_msg, SubscriptionEventCallbacks(message_lost=on_lost)

    types = {"colour": Image, "depth": Image, "info": CameraInfo, "pose": PoseStamped}
    subs = []
    for name, topic in TOPICS.items():
        on_msg, events = make(name)
        subs.append(node.create_subscription(types[name], topic, on_msg, qos, event_callbacks=events))
    node.create_service(GetMapStatus, "/lang3d/get_map_status", lambda _req, res: res)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):  # SIGINT ends the probe
        executor.spin()
    print(f"probe: {json.dumps({'counts': counts, 'lost': lost})}", flush=True)
    return 0


def mapper_params(path: Path, gt: Path, extra_ros: dict) -> Path:
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"voxel_size_m": 0.03, "device": "cpu"},
        "mapping": {"train_gaussians": False, "keyframes": {"min_translation_m": 0.25}},
        "llm": {"mode": "parser_only"},
        "ros": {
            "ground_truth_file": str(gt),
            "sensor_qos_reliability": "best_effort",
            "status_period_s": 0.5,
            "cloud_period_s": 0.0,
            "llm_preload": False,
            "map_dir": str(path.parent / "maps"),
            "autosave": {"on_shutdown": False, "period_s": 0.0},
            **extra_ros,
        },
    }
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def run_once(variant: str, tree: Path, scenario: Scenario, args, work: Path, views: Views | None) -> RunResult:
    import os

    from lang3d_ros.srv import GetMapStatus

    from lang3d_ros.evaluation.processes import ServiceClient, next_domain_id, ros_env, stop

    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-{scenario.name.replace('@', '_')}-", dir=work))
    gt = (work / "burst_bag" / "bag" / "ground_truth.json") if views is None else run_dir / "ground_truth.json"
    if views is not None:
        gt.write_text((work / f"views_{scenario.width}x{scenario.height}.json").read_text())
    extra = {} if args.sensor_qos_depth is None else {"sensor_qos_depth": args.sensor_qos_depth}
    if args.pose_qos_depth is not None:  # trees before a4d097f ignore it (one depth for every stream)
        extra["pose_qos_depth"] = args.pose_qos_depth
    params = mapper_params(run_dir / "params.yaml", gt, extra)
    domain = next_domain_id()
    env = ros_env(domain, run_dir / "logs")
    env["PYTHONPATH"] = f"{tree}:{INSTALL_SITE}"
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if args.node_dds_profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(Path(args.node_dds_profile).resolve())
    log_path = run_dir / "mapper.log"
    if str(tree) == "probe":
        env["PYTHONPATH"] = f"{REPO}:{INSTALL_SITE}"
        depth = 5 if args.sensor_qos_depth is None else args.sensor_qos_depth
        cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", str(depth)]
    else:
        cmd = [sys.executable, "-c", MAPPER_CODE, "--ros-args", "--params-file", str(params)]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(run_dir),
        )
    client = ServiceClient(domain, "intake_bench")
    res = RunResult(variant, scenario.name)
    try:
        client.call(GetMapStatus, "/lang3d/get_map_status", timeout_s=120)
        res.load_1min = os.getloadavg()[0]
        if views is None:
            from lang3d_ros.ros.bag_player import play

            counts = play(client.node, work / "burst_bag" / "bag", rate=1.0, queue_depth=args.player_queue_depth)
            res.sent = {k: counts.get(v, 0) for k, v in TOPICS.items()}
        else:
            from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

            rel = ReliabilityPolicy.RELIABLE if args.pub_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
            qos = QoSProfile(reliability=rel, history=HistoryPolicy.KEEP_LAST, depth=args.pub_depth)
            res.sent, res.send_late_ms_p95 = stream(
                client.node, views, scenario.fps, args.pose_rate_factor, args.duration_s, args.speed_m_s, qos
            )
        end = time.monotonic() + args.settle_s  # let the workers finish what they hold
        while time.monotonic() < end:
            st = client.call(GetMapStatus, "/lang3d/get_map_status", timeout_s=30)[0].status
            if st.frames_pending == 0:
                break
            time.sleep(0.5)
    finally:
        client.close()
        stop(proc, timeout_s=30)
    text = log_path.read_text(errors="replace")
    found = re.findall(r"probe: (.*)", text)
    if found:
        data = json.loads(found[-1])
        res.received, res.lost = data["counts"], data["lost"]
        res.summary_line = f"probe: received {res.received}, DDS message-lost events {res.lost}"
        return res
    s = parse_summary(text)
    if s is None:
        raise RuntimeError(f"no intake summary in {log_path}:\n{text[-3000:]}")
    res.summary_line = next(ln for ln in text.splitlines()[::-1] if "intake: " in ln)
    res.received = {"colour": s["colour"], "depth": s["depth"], "pose": s["poses"]}
    res.fused, res.dropped, res.rejected, res.pending = s["fused"], s["dropped"], s["rejected"], s["pending"]
    res.depth_dropped, res.poses_rejected = s["depth_dropped"], s["poses_rejected"]
    lost = re.findall(r"lost in transport, never received \(DDS message-lost events\) \(([^)]*)\)", text)
    names = {"colour image": "colour", "depth image": "depth", "pose": "pose", "camera_info": "info"}
    res.lost = {names.get(k, k): v for k, v in _reasons(lost[-1] if lost else "").items()}
    return res


def fmt_reasons(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def table(results: list[RunResult]) -> str:
    rows = [
        "| scenario | variant | load | colour sent/recv | depth sent/recv | poses sent/recv | lost in transport "
        "(DDS events) | fused | dropped (reasons) | poses rejected |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.variant} | {r.load_1min:.1f} | {r.sent.get('colour', 0)}/{r.received['colour']} "
            f"| {r.sent.get('depth', 0)}/{r.received['depth']} | {r.sent.get('pose', 0)}/{r.received['pose']} "
            f"| {fmt_reasons(r.lost)} | {r.fused} | {sum(r.dropped.values())} ({fmt_reasons(r.dropped)}) "
            f"| {fmt_reasons(r.poses_rejected)} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", type=Scenario.parse, default=[Scenario.parse("15@320x240")])
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=REF[+shared-group]")
    p.add_argument("--repeats", type=int, default=1, help="runs of each (scenario, variant), interleaved")
    p.add_argument("--duration-s", type=float, default=10.0, help="seconds of live stream per run")
    p.add_argument("--pose-rate-factor", type=float, default=2.0, help="pose rate = fps x this")
    p.add_argument("--speed-m-s", type=float, default=1.0, help="walking speed along the loop")
    p.add_argument("--views", type=int, default=48, help="rendered views along the loop")
    p.add_argument("--pub-reliability", choices=["best_effort", "reliable"], default="best_effort")
    p.add_argument("--pub-depth", type=int, default=5, help="publisher history depth (camera drivers: ~5)")
    p.add_argument("--sensor-qos-depth", type=int, default=None, help="the node's ros.sensor_qos_depth (default: its)")
    p.add_argument("--pose-qos-depth", type=int, default=None, help="the node's ros.pose_qos_depth (default: its)")
    p.add_argument("--player-queue-depth", type=int, default=100, help="burst: the bag player's writer depth")
    p.add_argument("--load-procs", type=int, default=0, help="busy-loop processes competing for the CPU meanwhile")
    p.add_argument("--settle-s", type=float, default=20.0, help="wait at most this long for pending frames")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "intake2" / "bench")
    p.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    p.add_argument("--node-dds-profile", default="", help="FASTRTPS_DEFAULT_PROFILES_FILE of the node (default none)")
    p.add_argument("--pub-dds-profile", default="", help="FASTRTPS_DEFAULT_PROFILES_FILE of this, the publisher")
    p.add_argument("--probe", type=int, default=None, metavar="DEPTH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe is not None:
        return probe(args.probe)
    import os

    os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)  # before rclpy creates this process's participants
    if args.pub_dds_profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(Path(args.pub_dds_profile).resolve())
    variants = args.variant or ["per-stream=HEAD", "shared-group=HEAD+shared-group"]
    args.work.mkdir(parents=True, exist_ok=True)
    trees = {}
    for v in variants:
        label, _, spec = v.partition("=")
        trees[label] = make_tree(spec or label, args.work)
        print(f"variant {label}: {trees[label]}", flush=True)
    views_by_size = {}
    for sc in args.scenarios:
        if sc.name == "burst":
            burst_bag(args.work)
        elif (sc.width, sc.height) not in views_by_size:
            gt = args.work / f"views_{sc.width}x{sc.height}.json"
            views_by_size[(sc.width, sc.height)] = Views(sc.width, sc.height, args.views, 11, gt)
    load = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(args.load_procs)
    ]
    results: list[RunResult] = []
    try:
        for sc in args.scenarios:
            views = views_by_size.get((sc.width, sc.height)) if sc.name != "burst" else None
            for rep in range(args.repeats):
                order = list(trees) if rep % 2 == 0 else list(trees)[::-1]
                for label in order:
                    r = run_once(label, trees[label], sc, args, args.work, views)
                    results.append(r)
                    print(f"{sc.name} {label} (load {r.load_1min:.1f}): {r.summary_line.split('intake: ')[-1]}")
                    print(f"    sent {r.sent}, send lateness p95 {r.send_late_ms_p95:.1f} ms", flush=True)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
