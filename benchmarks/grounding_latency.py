"""Latency of the library side of Ground / objects / heatmaps on an instance map, and of the worker-side
instance refresh, at a given number of points and segments.

    .venv/bin/python benchmarks/grounding_latency.py --points 1000000 --segments 5000 --repeats 20

The map is synthesised (no fusion): a box-furnished room's surfaces sampled to N points, cut into S segments
(instances x voxel cells, the same cells on all three levels, so S/3 per level), each with a random unit
D-dimensional feature near its label's; loaded through PointMap.load_state_dict and the segment table. Query
text embeddings are cached after the first call (the text encoder's own cost is not part of this figure).
Prints a Markdown table (median and max over the repeats, milliseconds).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


class RandomTextEncoder:
    """Random unit vector per text (deterministic per text within a run)."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.feature_dim, self.rng = dim, np.random.default_rng(seed)
        self.table: dict[str, np.ndarray] = {}

    def encode_text(self, texts):
        for t in texts:
            if t not in self.table:
                v = self.rng.normal(size=self.feature_dim)
                self.table[t] = v / np.linalg.norm(v)
        return torch.as_tensor(np.stack([self.table[t] for t in texts]), dtype=torch.float32)


def synthetic_instance_map(config, encoder, n_points: int, n_segments: int, seed: int = 0):
    """A LanguageMap of ~n_points points in ~n_segments segments (n_segments / 3 per level); see the module doc."""
    from lang3d_ros.fusion.pointfusion import STATE_VERSION
    from lang3d_ros.grounding.objects import LEVELS
    from lang3d_ros.grounding.synthetic_room import make_room
    from lang3d_ros.mapping.language_map import LanguageMap

    spacing = 0.04
    room = make_room(seed=seed, n_objects=8, size_xy_m=(10.0, 8.0), spacing_m=spacing, min_gap_m=0.5)
    rep = max(1, int(np.ceil(n_points / len(room.points))))
    rng = np.random.default_rng(seed)
    xyz = np.concatenate([room.points + rng.normal(0, spacing / 3, room.points.shape) for _ in range(rep)])[:n_points]
    inst = np.tile(room.instance_ids, rep)[:n_points]
    colors = np.tile(room.colors, (rep, 1))[:n_points].astype(np.float32) / 255.0
    n = len(xyz)
    per_level = max(1, n_segments // len(LEVELS))
    # cells: the voxel size that cuts the instances into about per_level pieces
    lo, hi = 0.02, 5.0
    for _ in range(30):
        cell = np.sqrt(lo * hi)
        # (instance, voxel cell) packed into one int64 in the lexicographic order of the tuple (a 1-D unique)
        c = np.floor(xyz / cell).astype(np.int64)
        c -= c.min(0)
        span = c.max(0) + 1
        packed = ((inst.astype(np.int64) - inst.min()) * span[0] + c[:, 0]) * span[1] + c[:, 1]
        keys = np.unique(packed * span[2] + c[:, 2], return_inverse=True)[1]
        lo, hi = (cell, hi) if keys.max() + 1 > per_level else (lo, cell)
    keys = keys.reshape(-1)
    k = int(keys.max()) + 1
    lmap = LanguageMap(config, encoder, device="cpu")
    names = ["floor", "wall"] + [f"{lab} {i}" for i, lab in enumerate(room.labels)]
    seg_inst = np.zeros(k, np.int64)
    seg_inst[keys] = inst
    base = encoder.encode_text(names).numpy()[np.where(seg_inst < 0, -seg_inst - 1, seg_inst + 2)]
    labels = np.zeros((len(LEVELS), n), np.int32)
    table = lmap.instances.table
    for lvl in range(len(LEVELS)):
        f = base + rng.normal(size=base.shape) / np.sqrt(base.shape[1])  # segments of one object: cosine ~0.5
        ids = table.append(lvl, f / np.linalg.norm(f, axis=1, keepdims=True), np.ones(k, np.float32), 0, 1)
        labels[lvl] = ids[keys]
    state = {
        "version": np.array(STATE_VERSION),
        "frame_count": np.array(1),
        "points_xyz": xyz.astype(np.float32),
        "normals": np.tile([0.0, 0.0, 1.0], (n, 1)).astype(np.float32),
        "colors": colors,
        "confidence": np.ones(n, np.float32),
        "birth_frame": np.zeros(n, np.int32),
        "labels": labels,
        "label_weight": np.ones((len(LEVELS), n), np.float32),
    }
    # every segment answerable: seen in more keyframes than instances.min_observations asks
    table.n_observations[:] = max(5, int(getattr(config.instances, "min_observations", 1)))
    lmap.points.load_state_dict(state)
    lmap.instances.refresh(lmap.points)
    lmap.version += 1
    return lmap


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1e3


def main() -> None:
    from lang3d_ros.config import Lang3DConfig

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--changed-rows", type=int, default=50, help="whole-level rows a keyframe changes")
    args = ap.parse_args()
    cfg = Lang3DConfig()
    enc = RandomTextEncoder(args.dim, args.seed)
    t0 = time.perf_counter()
    lmap = synthetic_instance_map(cfg, enc, args.points, args.segments, args.seed)
    build_s = time.perf_counter() - t0
    queries = [f"object {i}" for i in range(args.repeats)]
    for q in queries:  # warm the text cache: the encoder is not measured
        lmap.encode_query(q)
    lmap.ground(queries[0])
    rows: dict[str, list[float]] = {
        "ground (library, cached text)": [],
        "ground while the worker holds the map lock": [],
        "query index rebuild after a table change (worker, per keyframe)": [],
        "objects() after a change of every row (from scratch)": [],
        f"objects() after a keyframe-sized change ({args.changed_rows} whole-level rows)": [],
        "objects() cached": [],
        "relevancy_by_level (3, N) gather": [],
        "worker: refresh statistics": [],
        "worker: merge / drop pass": [],
    }
    for q in queries:  # the segment snapshot is current, as after a keyframe (integrate rebuilds it)
        rows["ground (library, cached text)"].append(timed(lambda: lmap.ground(q, max_results=5))[1])
    import threading

    held, release = threading.Event(), threading.Event()

    def worker_holding_the_lock():  # as the mapping worker during a keyframe
        with lmap.lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=worker_holding_the_lock)
    holder.start()
    held.wait()
    for q in queries:
        rows["ground while the worker holds the map lock"].append(timed(lambda: lmap.ground(q, max_results=5))[1])
    release.set()
    holder.join()
    table = lmap.instances.table
    whole = np.flatnonzero(table.level == 2)
    rng = np.random.default_rng(args.seed + 1)
    for i, q in enumerate(queries):
        table.n_points[whole] += 1  # every row changes
        lmap.instances.version += 1
        rows["query index rebuild after a table change (worker, per keyframe)"].append(timed(lambda: lmap._levels())[1])
        rows["objects() after a change of every row (from scratch)"].append(timed(lmap.objects)[1])
        changed = rng.choice(whole, size=min(args.changed_rows, len(whole)), replace=False)
        table.n_observations[changed] += 1  # what a keyframe does to the segments it sees
        lmap.instances.version += 1
        rows[f"objects() after a keyframe-sized change ({args.changed_rows} whole-level rows)"].append(
            timed(lmap.objects)[1]
        )
        rows["objects() cached"].append(timed(lmap.objects)[1])
        if i < 3:
            rows["relevancy_by_level (3, N) gather"].append(timed(lambda: lmap.relevancy_by_level(q))[1])
            rows["worker: refresh statistics"].append(timed(lambda: lmap.instances.refresh(lmap.points))[1])
    n_segments = lmap.num_segments
    for _ in range(3):  # last: the pass may merge or drop segments, which would change the rows timed above
        rows["worker: merge / drop pass"].append(timed(lambda: lmap.instances.maintain(lmap.points))[1])
    print(
        f"Map: {lmap.num_points} points, {n_segments} segments ({lmap.num_segments} after the merge / drop passes; "
        f"{args.dim}-d float16 features), "
        f"{lmap.memory_mb():.1f} MiB ({lmap.memory_mb() * 2**20 / max(lmap.num_points, 1):.1f} B/point, table "
        f"{lmap.instances.nbytes / 2**20:.1f} MiB), synthesised in {build_s:.1f} s. "
        f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}.\n"
    )
    print("| step | median ms | max ms | runs |")
    print("|---|---:|---:|---:|")
    for name, v in rows.items():
        print(f"| {name} | {np.median(v):.2f} | {np.max(v):.2f} | {len(v)} |")


if __name__ == "__main__":
    main()
