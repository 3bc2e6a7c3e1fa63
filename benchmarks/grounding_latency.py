"""Latency of the library part of the Ground / Navigate services on a box-furnished room.

    .venv/bin/python benchmarks/grounding_latency.py --points 200000 --repeats 5

Grounding: threshold + DBSCAN + boxes for single-object queries (simulated relevancy, as in the tests)
and for a query whose relevant set is large (the walls). Extraction: whole-map object extraction with
random-direction stand-in text embeddings. Navigation: grid from the points, inflation, goal + A*.
Prints a Markdown table (median and max over the repeats, milliseconds).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from lang3d_ros.grounding.config import ExtractionConfig
from lang3d_ros.grounding.extract import extract_objects
from lang3d_ros.grounding.ground import ground_query
from lang3d_ros.grounding.synthetic_room import WALL_ID, make_room
from lang3d_ros.navigation.config import NavigationConfig
from lang3d_ros.navigation.goal import plan_to_object
from lang3d_ros.navigation.grid import build_occupancy_grid, traversable_mask


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1e3


class RandomTextEncoder:
    def __init__(self, dim: int, seed: int = 0) -> None:
        self.dim, self.rng = dim, np.random.default_rng(seed)
        self.table: dict[str, np.ndarray] = {}

    def encode_text(self, texts):
        for t in texts:
            if t not in self.table:
                v = self.rng.normal(size=self.dim)
                self.table[t] = v / np.linalg.norm(v)
        return torch.tensor(np.stack([self.table[t] for t in texts]), dtype=torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000, help="approximate map size")
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--room", type=float, nargs=2, default=(10.0, 8.0), metavar=("X_M", "Y_M"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--feature-dim", type=int, default=64, help="per-point feature size for extraction")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    room = tuple(args.room)
    probe = make_room(args.seed, args.objects, size_xy_m=room, spacing_m=0.06)
    spacing = 0.06 * np.sqrt(len(probe.points) / args.points)
    scene = make_room(args.seed, args.objects, size_xy_m=room, spacing_m=spacing, noise_m=0.003)
    pts = scene.points
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[float]] = {}

    def add(name: str, ms: float) -> None:
        rows.setdefault(name, []).append(ms)

    nav = NavigationConfig()
    for rep in range(args.repeats):
        target = rep % len(scene.boxes)
        rel = rng.normal(0.45, 0.04, len(pts))
        on = scene.instance_ids == target
        rel[on] = rng.normal(0.68, 0.04, on.sum())
        objs, ms = timed(lambda: ground_query(pts, rel, "object"))
        add("ground: single object (threshold + DBSCAN + boxes)", ms)
        walls = rel.copy()
        walls[scene.instance_ids == WALL_ID] = 0.7
        _, ms = timed(lambda: ground_query(pts, walls, "wall"))
        add(f"ground: large relevant set (walls, {int((scene.instance_ids == WALL_ID).sum())} points)", ms)
        grid, ms_grid = timed(lambda: build_occupancy_grid(pts, nav))
        add("nav: occupancy grid from points", ms_grid)
        trav, ms_trav = timed(lambda: traversable_mask(grid, nav.robot_radius_m))
        add("nav: inflation", ms_trav)
        res, ms_goal = timed(lambda: plan_to_object(grid, objs[0].box, (0.5, 0.5), nav, traversable=trav))
        assert res.success, res.reason
        add("nav: goal + Dijkstra field + A* + smoothing", ms_goal)
        add("nav: total (grid + inflation + goal + path)", ms_grid + ms_trav + ms_goal)

    enc = RandomTextEncoder(args.feature_dim, args.seed)
    cfg = ExtractionConfig(vocabulary=sorted(set(scene.labels)))
    vocab_vectors = enc.encode_text(cfg.vocabulary + cfg.structure_labels).numpy()
    feats = np.zeros((len(pts), args.feature_dim), dtype=np.float32)
    for i, label in enumerate(scene.labels):
        feats[scene.instance_ids == i] = vocab_vectors[cfg.vocabulary.index(label)]
    feats[scene.instance_ids < 0] = vocab_vectors[len(cfg.vocabulary)]  # floor and walls: "floor"
    feats += rng.normal(0, 0.05, feats.shape).astype(np.float32)
    for _ in range(max(1, args.repeats // 2)):
        found, ms = timed(lambda: extract_objects(pts, feats, enc, config=cfg))
        add(f"extract: whole map, {args.feature_dim}-d features", ms)

    print(f"Map: {len(pts)} points ({room[0]:g}x{room[1]:g} m room, {args.objects} objects, spacing {spacing * 100:.1f} cm), grid "
          f"{grid.width}x{grid.height} at {nav.resolution_m} m, path {len(res.path_cells)} cells; "
          f"extraction found {len(found)} objects. {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}.\n")
    print("| step | median ms | max ms | runs |")
    print("|---|---:|---:|---:|")
    for name, v in rows.items():
        print(f"| {name} | {np.median(v):.1f} | {np.max(v):.1f} | {len(v)} |")


if __name__ == "__main__":
    main()
