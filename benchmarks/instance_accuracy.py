#!/usr/bin/env python3
"""Object-level accuracy of the instance map on fresh synthetic scenes, clean and with the mask-noise model.

    .venv/bin/python benchmarks/instance_accuracy.py --seeds 11 12 13 14 15 --noise both

Per seed: a generated room (demo settings: 10 objects, 48-frame orbit, 320x240, noisy RGB-D), mapped frame by
frame through build_stack (ground-truth-label semantics, MiniLM text encoder, config/synthetic.yaml), then the
evaluation's own query generator (lang3d_ros.evaluation.queries.generate_queries) asked through QueryEngine
(the services' library side, no ROS): Ground Acc@0.25 of the top answer's box per query kind (label, colour +
label among same-label objects, "the X on the Y", objects resting on others), and count questions (first number
of the Ask answer; labels present, and absent labels whose answer is 0). Also bytes per point (memory_mb) and
map-file bytes per point. What it cannot measure: SAM /
CLIP features (the semantics are ground-truth labels, with or without the noise model).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def run_seed(
    seed: int, noise: bool, frames: int, objects: int, width: int, height: int, instances: dict | None = None
) -> dict:
    from lang3d_ros.config import load_config
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.datasets.synthetic.render import DEFAULT_INTRINSICS, RenderNoise, make_stamps
    from lang3d_ros.datasets.synthetic.scene import load_ground_truth
    from lang3d_ros.errors import Lang3DError
    from lang3d_ros.evaluation.metrics import answered_count
    from lang3d_ros.evaluation.queries import generate_queries
    from lang3d_ros.geometry.boxes import iou_3d
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables
    from lang3d_ros.mapping.queries import QueryEngine

    cfg = load_config(
        REPO / "config" / "synthetic.yaml",
        overrides={"semantics": {"mask_noise": {"enabled": noise, "seed": seed}}, "instances": instances or {}},
    )
    scene = generate_scene(seed, n_objects=objects)
    poses = make_trajectory(scene, "orbit", frames, seed=seed)
    K = DEFAULT_INTRINSICS.scaled(width, height)
    stamps = make_stamps(len(poses), seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        truth = load_ground_truth(scene.save_ground_truth(Path(tmp) / "gt.json", poses, stamps, K))
        stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
        t0 = time.perf_counter()
        for f in render_frames(scene, poses, K, noise=RenderNoise(), seed=seed, stamps_ns=stamps):
            stack.pipeline.process_now(f)
        map_s = time.perf_counter() - t0
        lmap = stack.language_map
        path = Path(tmp) / "map.l3dmap"
        lmap.save(path)
        file_bytes = path.stat().st_size
    qs = generate_queries(truth)
    engine = QueryEngine(cfg, lmap)
    gt = {o.instance_id: o.obb for o in scene.objects}
    hits: dict[str, list[bool]] = {}
    misses: list[str] = []
    for q in qs.queries:
        if q.service == "ground":
            try:
                objs = engine.ground(q.text, robot_pose=qs.start_xy_yaw).objects
            except (Lang3DError, ValueError):
                objs = []
            iou = max((iou_3d(objs[0].box, gt[i]) for i in q.target_ids), default=0.0) if objs else 0.0
            ok = iou >= 0.25
            kind = q.kind
        elif q.kind == "count":
            try:
                ans = engine.ask(q.text, robot_pose=qs.start_xy_yaw).text
            except (Lang3DError, ValueError) as exc:
                ans = str(exc)
            ok = answered_count(ans) == q.expected_count
            kind = "count" if q.expected_count else "count of absent"
        else:
            continue
        hits.setdefault(kind, []).append(ok)
        if not ok:
            misses.append(f"{q.kind}: {q.text!r}")
    return {
        "seed": seed,
        "noise": noise,
        "hits": hits,
        "misses": misses,
        "map_s": map_s,
        "points": lmap.num_points,
        "segments": lmap.num_segments,
        "objects": len(lmap.objects()),
        "gt_objects": len(scene.objects),
        "bytes_per_point": lmap.memory_mb() * 2**20 / max(lmap.num_points, 1),
        "file_bytes_per_point": file_bytes / max(lmap.num_points, 1),
        "file_mb": file_bytes / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    ap.add_argument("--noise", choices=("off", "on", "both"), default="both")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="instances config overrides (vote_erode_px=0)"
    )
    a = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    variants = {"off": [False], "on": [True], "both": [False, True]}[a.noise]
    results = [run_seed(s, n, a.frames, a.objects, a.width, a.height, overrides) for n in variants for s in a.seeds]
    kinds = ("label", "attribute", "relation", "resting", "count", "count of absent")
    print(
        f"\n{platform.node()} {platform.machine()}, seeds {a.seeds}, {a.objects} objects, {a.frames} frames "
        f"{a.width}x{a.height}, instances overrides {overrides or 'none'}\n"
    )
    print("| masks | " + " | ".join(f"{k} (n)" for k in kinds) + " | ground all | B/point (RAM) | B/point (file) |")
    print("|---|" + "---|" * (len(kinds) + 3))
    for n in variants:
        rs = [r for r in results if r["noise"] == n]
        cells = []
        for k in kinds:
            v = [h for r in rs for h in r["hits"].get(k, [])]
            cells.append(f"{100 * np.mean(v):.1f}% ({len(v)})" if v else "-")
        g = [h for r in rs for k in kinds[:4] for h in r["hits"].get(k, [])]
        bpp = np.mean([r["bytes_per_point"] for r in rs])
        fpp = np.mean([r["file_bytes_per_point"] for r in rs])
        print(
            f"| {'noisy' if n else 'clean'} | " + " | ".join(cells) + f" | {100 * np.mean(g):.1f}% ({len(g)}) | "
            f"{bpp:.0f} | {fpp:.0f} |"
        )
    print()
    for r in results:
        print(
            f"seed {r['seed']} {'noisy' if r['noise'] else 'clean'}: {r['points']} points, {r['segments']} "
            f"segments, {r['objects']}/{r['gt_objects']} objects, map file {r['file_mb']:.1f} MiB, mapped in "
            f"{r['map_s']:.0f} s; misses: {r['misses'] or 'none'}"
        )


if __name__ == "__main__":
    main()
