#!/usr/bin/env python3
"""Query load during mapping: N clients x M Ground queries while a synthetic bag is replayed into the mapper node.

The mapper runs as its own process (own ROS_DOMAIN_ID, loopback discovery). This process replays the bag and
runs the clients: one rclpy node, one client per simulated robot component, each thread sending its queries one
after the other (closed loop), a multi-threaded executor delivering the answers. Then, with the bag over and the
pipeline idle, one client sends the same number of queries alone (the unloaded reference).

Reports: requests answered / sent, round-trip p50 / p95 / max under load and unloaded, and the mapper's frame
counters (received = fused + dropped + rejected once idle). test/test_ros_load.py runs the same code.
What it cannot do: separate DDS transport losses of best-effort sensor messages (those frames reach no counter).
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml


@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    error_codes: dict[int, int] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def make_bag(out: Path, seed: int, n_frames: int, fps: float = 5.0):
    """A synthetic orbit bag at ``fps`` (pose messages), with its ground truth; returns (bag folder, scene)."""
    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.datasets.synthetic.render import make_stamps

    scene = generate_scene(seed=seed, n_objects=7)
    poses = make_trajectory(scene, "orbit", n_frames, seed=seed)
    frames = render_frames(
        scene,
        poses,
        DEFAULT_INTRINSICS.scaled(160, 120),
        noise=None,
        seed=seed,
        stamps_ns=make_stamps(n_frames, fps=fps, seed=seed),
    )
    write_bag(frames, out / "bag", storage="mcap", depth_encoding="16UC1", pose_msg="pose", scene=scene, seed=seed)
    return out / "bag", scene


def mapper_params(path: Path, bag: Path, extra: dict | None = None) -> Path:
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"voxel_size_m": 0.04, "device": "cpu"},
        "mapping": {"train_gaussians": False, "keyframes": {"min_translation_m": 0.25}},
        "llm": {"mode": "parser_only"},
        "ros": {
            "ground_truth_file": str(bag / "ground_truth.json"),
            "status_period_s": 0.5,
            "cloud_period_s": 0.0,
            "map_dir": str(path.parent / "maps"),
            "sensor_qos_depth": 20,
        },
    }
    for k, v in (extra or {}).items():
        params.setdefault(k, {}).update(v)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


class LoadClient:
    """One rclpy context and node in this process; ``run`` drives n_clients closed-loop client threads."""

    def __init__(self, domain_id: int, n_clients: int):
        import rclpy
        from lang3d_ros.srv import GetMapStatus, Ground
        from rclpy.executors import MultiThreadedExecutor

        from lang3d_ros.ros.services import service_qos

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = rclpy.create_node("lang3d_load_client", context=self.ctx)
        self.player = rclpy.create_node("lang3d_load_player", context=self.ctx)
        # every client's response reader sees all the service's responses (DDS topic) and keeps only the newest
        # qos depth of them: with the default depth 10, answers meant for one client are overwritten by answers to
        # the other 19 before its executor takes them. Size the depth to the concurrent requests (as the server).
        qos = service_qos(100)
        self.clients = [self.node.create_client(Ground, "/lang3d/ground", qos_profile=qos) for _ in range(n_clients)]
        self.status_client = self.node.create_client(GetMapStatus, "/lang3d/get_map_status")
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.ctx)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def call(self, client, request, timeout_s: float):
        """-> (response or None when unanswered in timeout_s, latency ms)."""
        done = threading.Event()
        t0 = time.perf_counter()
        fut = client.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            client.remove_pending_request(fut)
            return None, (time.perf_counter() - t0) * 1e3
        return fut.result(), (time.perf_counter() - t0) * 1e3

    def status(self, timeout_s: float = 60.0):
        from lang3d_ros.srv import GetMapStatus

        assert self.status_client.wait_for_service(timeout_sec=timeout_s), "mapper services not available"
        res, _ = self.call(self.status_client, GetMapStatus.Request(), timeout_s)
        assert res is not None, "GetMapStatus unanswered"
        return res.status

    def run(self, queries: list[str], n_clients: int, per_client: int, timeout_s: float = 120.0) -> LoadResult:
        from lang3d_ros.srv import Ground

        for c in self.clients[:n_clients]:
            assert c.wait_for_service(timeout_sec=60.0), "ground service not available"
        out = LoadResult()
        lock = threading.Lock()

        def worker(k: int) -> None:
            for i in range(per_client):
                q = queries[(k + i) % len(queries)]
                res, ms = self.call(self.clients[k], Ground.Request(query=q, max_results=3), timeout_s)
                with lock:
                    out.sent += 1
                    if res is not None:
                        out.answered += 1
                        out.latencies_ms.append(ms)
                        out.error_codes[int(res.error_code)] = out.error_codes.get(int(res.error_code), 0) + 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.player.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def wait_idle(client: LoadClient, timeout_s: float = 120.0):
    """Poll GetMapStatus until the counters stop changing for 3 polls (the bag is over, the queues are empty)."""
    last, stable, st = None, 0, None
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and stable < 3:
        st = client.status()
        key = (st.frames_received, st.frames_fused, st.frames_dropped, st.frames_rejected)
        stable = stable + 1 if key == last else 0
        last = key
        time.sleep(0.5)
    return st


def run_load(
    tmp: Path, domain_id: int, seed: int, n_frames: int, n_clients: int, per_client: int, rate: float = 1.0
) -> dict:
    """The whole experiment; returns a dict of results (the test asserts on it, main prints it)."""
    from lang3d_ros.evaluation.processes import MAPPER_CODE, spawn, stop
    from lang3d_ros.ros.bag_player import play

    tmp.mkdir(parents=True, exist_ok=True)
    bag, scene = make_bag(tmp, seed, n_frames)
    params = mapper_params(tmp / "params.yaml", bag)
    mapper = spawn(["-c", MAPPER_CODE, "--ros-args", "--params-file", str(params)], domain_id, tmp / "logs")
    client = LoadClient(domain_id, n_clients)
    try:
        client.status(timeout_s=180.0)
        labels = sorted({o.label for o in scene.objects})
        played: dict = {}
        replay = threading.Thread(target=lambda: played.update(play(client.player, bag, rate=rate)))
        replay.start()
        while client.status().frames_fused < 2 and replay.is_alive():  # queries on a map that exists
            time.sleep(0.2)
        t0 = time.monotonic()
        loaded = client.run(labels, n_clients, per_client)
        load_s = time.monotonic() - t0
        replay_running_at_end = replay.is_alive()
        replay.join()
        st = wait_idle(client)
        unloaded = client.run(labels, 1, per_client)
        alive = mapper.poll() is None
    finally:
        client.close()
        stop(mapper)
    return {
        "loaded": loaded,
        "unloaded": unloaded,
        "status": st,
        "played": played,
        "load_s": load_s,
        "replay_outlasted_load": replay_running_at_end,
        "mapper_alive": alive,
        "n_frames": n_frames,
    }


def main() -> None:
    import platform

    from lang3d_ros.evaluation.processes import next_domain_id

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--frames", type=int, default=60, help="bag frames at 5 Hz")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--queries", type=int, default=25, help="queries per client")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    import tempfile

    out = args.out or Path(tempfile.mkdtemp(prefix="lang3d-load-"))
    r = run_load(out, next_domain_id(), args.seed, args.frames, args.clients, args.queries, args.rate)
    ld, un, st = r["loaded"], r["unloaded"], r["status"]
    print(
        f"# {platform.node()} {time.strftime('%Y-%m-%d')}, seed {args.seed}, {args.frames} frames at 5 Hz, "
        f"rate {args.rate}"
    )
    print("| run | answered / sent | p50 ms | p95 ms | max ms | error codes |")
    print("|---|---|---|---|---|---|")
    for name, res in ((f"{args.clients} clients during replay", ld), ("1 client, idle map", un)):
        print(
            f"| {name} | {res.answered} / {res.sent} | {res.percentile_ms(50):.1f} | {res.percentile_ms(95):.1f} | "
            f"{max(res.latencies_ms, default=float('nan')):.1f} | {res.error_codes} |"
        )
    print(
        f"\np95 under load / unloaded p50 = {ld.percentile_ms(95) / un.percentile_ms(50):.1f}x; load phase "
        f"{r['load_s']:.1f} s (replay still running at its end: {r['replay_outlasted_load']})"
    )
    print(
        f"mapper: received {st.frames_received} (bag: {r['played'].get('/camera/color/image_raw')} colour images), "
        f"fused {st.frames_fused}, dropped {st.frames_dropped}, rejected {st.frames_rejected}, "
        f"keyframes {st.keyframes}"
    )


if __name__ == "__main__":
    main()
