#!/usr/bin/env python3
"""The merge pass's candidate search (instances.maintain.merge_candidates) against the all-pairs search it
replaced, side by side in one process, on a synthesised instance map (benchmarks/grounding_latency.py's).

    .venv/bin/python benchmarks/instances_maintain.py --points 1000000 --segments 5000 --coobserved 20000

Both must return the same pairs (checked); prints median milliseconds of each over the repeats. The co-observed
pairs are random (ids, counts), a few thousand of them given agreeing features, so both branches do work.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def reference_merge_candidates(table, coobs, cfg) -> list[tuple[int, int]]:
    """The all-pairs search (per co-observed pair a Python step; box overlap over every pair of a level)."""
    pairs = []
    for (a, b), (together, apart) in ((k, v.tolist()) for k, v in coobs.counts.items()):
        if together < cfg.merge_min_together or together <= cfg.merge_together_ratio * (together + apart):
            continue
        ra, rb = table.row_of(np.array([a, b]))
        if ra < 0 or rb < 0 or table.level[ra] != table.level[rb]:
            continue
        fa, fb = table.unit_features(np.array([ra, rb]))
        if float(fa @ fb) >= cfg.merge_min_cosine:
            pairs.append((a, b))
    for level in np.unique(table.level):
        rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
        if len(rows) < 2:
            continue
        lo = table.aabb_min[rows].astype(np.float64) - cfg.box_margin_m
        hi = table.aabb_max[rows].astype(np.float64) + cfg.box_margin_m
        vol = np.prod(hi - lo, axis=1)
        unit = table.unit_features(rows)
        for s0 in range(0, len(rows), 512):
            sl = slice(s0, s0 + 512)
            side = np.minimum(hi[sl, None], hi[None]) - np.maximum(lo[sl, None], lo[None])
            inter = np.prod(np.clip(side, 0, None), 2)
            ia, ib = np.nonzero(inter / np.minimum(vol[sl, None], vol[None]) >= cfg.merge_min_box_overlap)
            ia += s0
            ia, ib = ia[ia < ib], ib[ia < ib]
            agree = np.einsum("kd,kd->k", unit[ia], unit[ib]) >= cfg.merge_min_cosine
            for i, j in zip(ia[agree].tolist(), ib[agree].tolist()):
                ida, idb = int(table.ids[rows[i]]), int(table.ids[rows[j]])
                if coobs.get(ida, idb)[1] == 0:
                    pairs.append((ida, idb))
    return pairs


def main() -> None:
    from grounding_latency import RandomTextEncoder, synthetic_instance_map

    from lang3d_ros.config import load_config
    from lang3d_ros.instances.maintain import merge_candidates

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, default=5000)
    ap.add_argument("--coobserved", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cfg = load_config()
    built = synthetic_instance_map(cfg, RandomTextEncoder(512), a.points, a.segments)
    lmap = built[0] if isinstance(built, tuple) else built
    t, co, icfg = lmap.instances.table, lmap.instances.coobs, cfg.instances
    rng = np.random.default_rng(1)
    for _ in range(a.coobserved):
        x, y = rng.choice(t.ids, 2, replace=False)
        co.add(int(x), int(y), int(rng.integers(0, 5)), int(rng.integers(0, 3)))
    for x, y in list(co.counts)[: a.coobserved // 7]:  # some pairs agree
        rx, ry = t.row_of(np.array([x, y]))
        t.feature[ry] = t.feature[rx]
    times: dict[str, list[float]] = {"all pairs (reference)": [], "sweep + vectorised (merge_candidates)": []}
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        ref = reference_merge_candidates(t, co, icfg)
        times["all pairs (reference)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = merge_candidates(t, co, icfg)
        times["sweep + vectorised (merge_candidates)"].append(time.perf_counter() - t0)
        assert sorted(ref) == sorted(got), "the two searches disagree"
    print(
        f"{len(t)} segments, {lmap.num_points} points, {len(co.counts)} co-observed pairs, {len(got)} candidates "
        f"(same in both); {platform.machine()}\n"
    )
    print("| search | median ms | runs |\n|---|---:|---:|")
    for k, v in times.items():
        print(f"| {k} | {1e3 * np.median(v):.1f} | {len(v)} |")


if __name__ == "__main__":
    main()
