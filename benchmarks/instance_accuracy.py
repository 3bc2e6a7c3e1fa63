#!/usr/bin/env python3
"""Object-level accuracy of the instance map on fresh synthetic scenes, clean and with the mask-noise model.

    .venv/bin/python benchmarks/instance_accuracy.py --seeds 11 12 13 14 15 --noise both
    # an A/B: the same seeds with a setting changed, then the answers that differ
    .venv/bin/python benchmarks/instance_accuracy.py --seeds $(seq 21 36) --objects 14 --json /tmp/a.json
    .venv/bin/python benchmarks/instance_accuracy.py --seeds $(seq 21 36) --objects 14 --json /tmp/b.json \
        --set instances.vote_erode_px=1 --diff /tmp/a.json

Per seed: a generated room (demo settings: 10 objects, 48-frame orbit or ``--trajectory walk``, 320x240, noisy
RGB-D), mapped frame by frame through build_stack (ground-truth-label semantics, MiniLM text encoder,
config/synthetic.yaml), then the evaluation's own query generator (lang3d_ros.evaluation.queries.generate_queries)
asked through QueryEngine (the services' library side, no ROS): Ground Acc@0.25 of the top answer's box per query
kind (label, colour + label among same-label objects, "the X on the Y", objects resting on others), and count
questions (first number of the Ask answer; labels present, and absent labels whose answer is 0). Also bytes per
point (memory_mb) and map-file bytes per point. What it cannot measure: SAM / CLIP features (the semantics are
ground-truth labels, with or without the noise model).
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
    seed: int,
    noise: bool,
    frames: int,
    objects: int,
    width: int,
    height: int,
    overrides: dict | None = None,
    trajectory: str = "orbit",
) -> dict:
    from lang3d_ros.config import load_config
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.datasets.synthetic.render import DEFAULT_INTRINSICS, RenderNoise, make_stamps
    from lang3d_ros.datasets.synthetic.scene import load_ground_truth
    from lang3d_ros.errors import Lang3DError
    from lang3d_ros.evaluation.metrics import DEFAULT_SETTINGS, answered_count, score_navigation
    from lang3d_ros.evaluation.queries import generate_queries
    from lang3d_ros.evaluation.runner import ground_truth_record
    from lang3d_ros.geometry.boxes import iou_3d
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables
    from lang3d_ros.mapping.queries import QueryEngine

    ov = {k: dict(v) for k, v in (overrides or {}).items()}
    ov.setdefault("semantics", {})["mask_noise"] = {"enabled": noise, "seed": seed}
    cfg = load_config(REPO / "config" / "synthetic.yaml", overrides=ov)
    scene = generate_scene(seed, n_objects=objects)
    poses = make_trajectory(scene, trajectory, frames, seed=seed)
    K = DEFAULT_INTRINSICS.scaled(width, height)
    stamps = make_stamps(len(poses), seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        truth = load_ground_truth(scene.save_ground_truth(Path(tmp) / "gt.json", poses, stamps, K))
        raw = {"ground_truth": ground_truth_record(truth, scene)}
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
        elif q.service == "navigate":
            entry = {"id": q.id, "text": q.text, "target_ids": list(q.target_ids)}
            entry["standoff_m"] = float(q.standoff_m or qs.standoff_m)
            try:
                r = engine.navigate(q.text, entry["standoff_m"], qs.start_xy_yaw)
                resp = {"success": r.success, "message": r.message}
                if r.target is not None:
                    resp["target"] = {"box": r.target.box.to_dict()}
                if r.success:
                    g = r.navigation.goal_pose
                    resp["goal"] = {"x": g[0], "y": g[1], "yaw": g[2]}
                    resp["path"] = [[p[0], p[1]] for p in r.navigation.path]
            except (Lang3DError, ValueError) as exc:
                resp = {"success": False, "message": str(exc)}
            entry["response"] = resp
            ok = bool(
                score_navigation(entry, dict(raw, start_xy_yaw=list(qs.start_xy_yaw)), gt, DEFAULT_SETTINGS)["valid"]
            )
            kind = "navigation"
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


def parse_overrides(items: list[str]) -> dict:
    """["section.key=value", "key=value" (an instances key)] -> nested config overrides; values parsed as YAML."""
    out: dict = {}
    for kv in items:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {kv!r}")
        parts = key.split(".") if "." in key else ["instances", key]
        d = out
        for part in parts[:-1]:
            d = d.setdefault(part, {})
        d[parts[-1]] = yaml.safe_load(value)
    return out


def diff_misses(results: list[dict], other_path: Path) -> list[str]:
    """Lines naming the answers lost / gained against another run's --json file, per seed and noise setting."""
    import json

    other = {(r["seed"], r["noise"]): set(r["misses"]) for r in json.loads(other_path.read_text())["results"]}
    lines = []
    for r in results:
        before = other.get((r["seed"], r["noise"]))
        if before is None:
            continue
        lost, gained = sorted(set(r["misses"]) - before), sorted(before - set(r["misses"]))
        if lost or gained:
            lines.append(f"seed {r['seed']} {'noisy' if r['noise'] else 'clean'}: lost {lost}, gained {gained}")
    return lines or ["no answer differs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    ap.add_argument("--noise", choices=("off", "on", "both"), default="both")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--trajectory", choices=("orbit", "walk"), default="orbit", help="camera path (lang3d synth's)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides: section.key=value (fusion.voxel_size_m=0.02), or an instances key (vote_erode_px=0)",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the per-seed results here (atomically)")
    ap.add_argument("--diff", type=Path, default=None, help="another run's --json: print the answers that differ")
    a = ap.parse_args()
    overrides = parse_overrides(a.set)
    variants = {"off": [False], "on": [True], "both": [False, True]}[a.noise]
    results = [
        run_seed(s, n, a.frames, a.objects, a.width, a.height, overrides, a.trajectory)
        for n in variants
        for s in a.seeds
    ]
    kinds = ("label", "attribute", "relation", "resting", "count", "count of absent", "navigation")
    print(
        f"\n{platform.node()} {platform.machine()}, seeds {a.seeds}, {a.objects} objects, {a.frames} frames "
        f"{a.width}x{a.height} {a.trajectory}, config overrides {overrides or 'none'}\n"
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
    if a.json is not None:
        import json
        import os

        tmp = a.json.with_name(a.json.name + ".tmp")
        tmp.write_text(json.dumps({"args": vars(a) | {"json": str(a.json), "diff": str(a.diff)}, "results": results}))
        os.replace(tmp, a.json)
    if a.diff is not None:
        print("\nagainst " + str(a.diff) + ":\n" + "\n".join(diff_misses(results, a.diff)))


if __name__ == "__main__":
    main()
