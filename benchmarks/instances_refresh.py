#!/usr/bin/env python3
"""The instance refresh after each keyframe (instances.stats.refresh_stats) and its support pass (compute_support)
against the loop it replaced (instances.stats_reference), side by side in one process, on synthesised instance
maps (benchmarks/grounding_latency.py's: a room's objects cut into ~segments / 3 pieces per level).

    .venv/bin/python benchmarks/instances_refresh.py --points 1000000 --segments 200 1000 5000

Both must give the same table (checked, every array); prints median milliseconds over the repeats.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from grounding_latency import RandomTextEncoder, synthetic_instance_map

    from lang3d_ros.config import load_config
    from lang3d_ros.instances import stats
    from lang3d_ros.instances.stats_reference import compute_support_reference

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, nargs="+", default=[200, 1000, 5000])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = load_config()
    new_support = stats.compute_support
    print(f"{a.points} points; median of {a.repeats} runs; {platform.machine()}\n")
    print("| segments (whole level) | step | reference ms | vectorised ms | speed-up |\n|---|---|---:|---:|---:|")
    for n_seg in a.segments:
        lmap = synthetic_instance_map(cfg, RandomTextEncoder(512), a.points, n_seg)
        pts = lmap.points
        labels = [np.asarray(pts.labels(lvl)).astype(np.int32) for lvl in range(3)]
        xyz, nrm, rgb = np.asarray(pts.points_xyz), np.asarray(pts.normals), np.asarray(pts.colors)
        base = lmap.instances.table
        whole = int(((base.level == 2) & (base.n_points > 0)).sum())
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.repeats):
            tables = {}
            for impl, fn in (("reference", compute_support_reference), ("vectorised", new_support)):
                t = copy.deepcopy(base)
                stats.compute_support = fn
                try:
                    t0 = time.perf_counter()
                    stats.refresh_stats(t, labels, xyz, rgb, cfg.instances, nrm)
                    times.setdefault(("refresh_stats", impl), []).append(time.perf_counter() - t0)
                finally:
                    stats.compute_support = new_support
                t = copy.deepcopy(base)
                t0 = time.perf_counter()
                fn(t, 2, labels[2], xyz, nrm, cfg.instances)
                times.setdefault(("compute_support", impl), []).append(time.perf_counter() - t0)
                tables[impl] = t.to_arrays()
            for k, v in tables["reference"].items():
                assert np.array_equal(v, tables["vectorised"][k], equal_nan=True), f"tables differ in {k}"
        for step in ("refresh_stats", "compute_support"):
            r, v = (1e3 * np.median(times[(step, impl)]) for impl in ("reference", "vectorised"))
            print(f"| {n_seg} ({whole}) | {step} | {r:.0f} | {v:.0f} | {r / v:.1f}x |")


if __name__ == "__main__":
    main()
