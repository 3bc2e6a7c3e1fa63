#!/usr/bin/env python3
"""Service round-trip latency (p50, p95) from a separate client process against a served map file.

A box-furnished room's surfaces are sampled to ~N points (default 200k) and cut into segments (default 1500,
a third per level), each with a feature near its label's MiniLM embedding (grounding_latency.synthetic_instance_map),
written through PointMap.load_state_dict + LanguageMap.save. A query server process (ros.load_map) serves it;
this process calls Ground, Navigate, Ask and GetMapStatus ``--repeats`` times each (after one warm-up call) and prints a
Markdown table. What it cannot do: include fusion or semantics costs (the map is synthesised, not fused).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path


def synthesise_map(path: Path, n_points: int, n_segments: int, seed: int, params: dict) -> int:
    """An instance map (benchmarks/grounding_latency.py: a room's surfaces cut into segments, MiniLM features of
    their labels) written through LanguageMap.save."""
    import sys

    from lang3d_ros.config import load_config
    from lang3d_ros.semantics.backends import build_text_encoder

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from grounding_latency import synthetic_instance_map

    cfg = load_config(overrides=params)
    lmap = synthetic_instance_map(cfg, build_text_encoder(cfg.semantics), n_points, n_segments, seed)
    lmap.save(str(path))
    return lmap.num_points


def main() -> None:
    from lang3d_ros.evaluation.metrics import latency_stats
    from lang3d_ros.evaluation.processes import SERVER_CODE, ServiceClient, next_domain_id, spawn, stop, write_params

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--segments", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--start-xy",
        default="0.6,0.6",
        help="Navigate's start (map frame, m): the synthesised room spans [0, 10] x [0, 8] m and keeps objects 0.8 m "
        "off its walls, so a corner 0.6 m in is free floor (the old (0, -2) was outside the map)",
    )
    a = ap.parse_args()
    from geometry_msgs.msg import PoseStamped
    from lang3d_ros.srv import Ask, GetMapStatus, Ground, Navigate

    tmp = Path(tempfile.mkdtemp(prefix="lang3d_bench_"))
    from lang3d_ros.config import _deep_update, parameters_from_yaml
    from lang3d_ros.evaluation.runner import SYNTHETIC_CONFIG

    params = parameters_from_yaml(SYNTHETIC_CONFIG)  # what the demo and lang3d eval run with
    _deep_update(params, {"fusion": {"voxel_size_m": 0.02}})
    t0 = time.perf_counter()
    n = synthesise_map(tmp / "bench.l3dmap", a.points, a.segments, a.seed, params)
    size_mib = (tmp / "bench.l3dmap").stat().st_size / 2**20
    print(f"map: {n} points, {size_mib:.1f} MiB, built in {time.perf_counter() - t0:.1f} s")
    params["ros"] = {"load_map": str(tmp / "bench.l3dmap")}
    domain = next_domain_id()
    params_file = str(write_params(tmp / "params.yaml", params))
    server = spawn(["-c", SERVER_CODE, "--ros-args", "--params-file", params_file], domain, tmp / "logs")
    client = ServiceClient(domain, "lang3d_bench_client")
    start = PoseStamped()
    start.header.frame_id = "map"
    sx, sy = (float(v) for v in a.start_xy.split(","))
    start.pose.position.x, start.pose.position.y, start.pose.orientation.w = sx, sy, 1.0
    calls = {
        "Ground": (Ground, "/lang3d/ground", {"query": "chair"}),
        "Navigate": (Navigate, "/lang3d/navigate", {"instruction": "take me to the chair", "start": start}),
        "Ask": (Ask, "/lang3d/ask", {"question": "how many chairs are there?"}),
        "GetMapStatus": (GetMapStatus, "/lang3d/get_map_status", {}),
    }
    rows = []
    try:
        deadline = time.monotonic() + 120
        while not client.wait_for(GetMapStatus, "/lang3d/get_map_status", 1.0):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"query server did not start; see {tmp / 'logs'}")
        for name, (srv, topic, fields) in calls.items():
            res, _ = client.call(srv, topic, 120.0, **fields)  # warm-up (text encoding, object extraction, grid)
            ms = []
            for _ in range(a.repeats):
                res, t = client.call(srv, topic, 60.0, **fields)
                ms.append(t)
            st = latency_stats(ms)
            rows.append((name, st, bool(res.success), "" if res.success else str(getattr(res, "message", ""))[:160]))
    finally:
        client.close()
        stop(server)
    print(
        f"\n{platform.node()} {platform.machine()}, python {platform.python_version()}, {n} points, "
        f"{a.repeats} calls each\n"
    )
    print("| service | p50 (ms) | p95 (ms) | max (ms) | success |")
    print("|---|---|---|---|---|")
    for name, st, ok, _ in rows:
        print(f"| {name} | {st['p50']:.1f} | {st['p95']:.1f} | {st['max']:.1f} | {ok} |")
    for name, _, ok, message in rows:
        if not ok:
            print(f"\n{name} answered success=false: {message}")


if __name__ == "__main__":
    main()
