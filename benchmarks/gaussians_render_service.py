"""The RenderRelevancy service's library call and Ground from the Gaussians, on a map file trained with `--train`.

    lang3d demo --train --seed 44 --out /tmp/demo44            # a trained map: /tmp/demo44/map.l3dmap
    python benchmarks/gaussians_render_service.py /tmp/demo44   # reads map.l3dmap, params.yaml, bag/ground_truth.json

For every label the scene holds once: Ground answered by the points (grounding.field points) and by the trained
Gaussians (field gaussians) on the same served map: same instance ids (best first) and the same boxes? Then, in
``--views`` ground-truth views at the bag's image size, ``render_query_view`` from each field for every unique label
covering >= 0.2 % of the view: is the best pixel inside the label's ground-truth image box, is its 3D point inside
the object's ground-truth box (+5 cm), and how long did the call take (p50 / p95 ms)? Prints a Markdown table and a
JSON line (``--json`` writes it to a file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `lang3d demo --train` / `lang3d eval --train` output folder")
    ap.add_argument("--views", type=int, default=6, help="ground-truth views rendered (evenly spaced)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--lerf-views",
        type=int,
        nargs="*",
        default=None,
        help="also score LERF localization / mIoU from the Gaussians in these GT views, rendered through the "
        "instance codes and through the decoded latents (what `lang3d eval --train` reports)",
    )
    args = ap.parse_args()

    from lang3d_ros.config import load_config
    from lang3d_ros.datasets.synthetic import load_ground_truth
    from lang3d_ros.evaluation.lerf_protocol import box_contains, mask_boxes
    from lang3d_ros.evaluation.render import gt_instance_map
    from lang3d_ros.gaussians.relevancy_render import render_query_view
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.semantics.backends import build_text_encoder

    cfg = load_config(args.run / "params.yaml")
    truth = load_ground_truth(args.run / "bag" / "ground_truth.json")
    scene = truth.regenerate_scene()
    encoder = build_text_encoder(cfg.semantics)
    maps = {}
    for field in ("points", "gaussians"):
        c = dataclasses.replace(cfg, grounding=dataclasses.replace(cfg.grounding, field=field))
        maps[field] = LanguageMap(c, encoder, device="cpu")
        maps[field].load(args.run / "map.l3dmap")
    model = maps["gaussians"].answering_gaussians()
    labels = [o.label for o in scene.objects]
    unique = sorted({lab for lab in labels if labels.count(lab) == 1 and lab not in ("floor", "wall")})

    ground = {"labels": len(unique), "same_ids": 0, "same_best": 0, "same_boxes": 0, "gaussians_answered": 0}
    for lab in unique:
        by = {f: maps[f].ground(f"the {lab}") for f in maps}
        ids = {f: [o.instance_id for o in by[f]] for f in by}
        ground["gaussians_answered"] += bool(ids["gaussians"])
        ground["same_ids"] += ids["points"] == ids["gaussians"]
        ground["same_best"] += bool(ids["gaussians"]) and ids["points"][:1] == ids["gaussians"][:1]
        boxes_p = {o.instance_id: (o.box.center.tolist(), o.box.size.tolist()) for o in by["points"]}
        ground["same_boxes"] += all(
            boxes_p.get(o.instance_id) == (o.box.center.tolist(), o.box.size.tolist()) for o in by["gaussians"]
        )

    K = truth.intrinsics
    views = np.linspace(0, len(truth.T_world_cams) - 1, args.views).round().astype(int).tolist()
    render = {f: {"tried": 0, "in_box_2d": 0, "in_box_3d": 0, "in_view": 0, "ms": []} for f in maps}
    for vi in views:
        T = truth.T_world_cams[vi]
        inst = gt_instance_map(scene, T, K)
        for o in scene.objects:
            gt = inst == o.instance_id
            if o.label not in unique or gt.mean() < 0.002:
                continue
            for f, m in maps.items():
                t0 = time.perf_counter()
                try:
                    view = render_query_view(m, f"the {o.label}", T, K)
                except ValueError:
                    view = None
                ms = (time.perf_counter() - t0) * 1e3
                r = render[f]
                r["tried"] += 1
                if view is None:
                    continue
                r["ms"].append(ms)
                r["in_view"] += view.target_in_view
                r["in_box_2d"] += box_contains(mask_boxes(gt), *view.best_uv)
                p = view.best_point_world
                lo, hi = o.aabb.center - o.aabb.size / 2 - 0.05, o.aabb.center + o.aabb.size / 2 + 0.05
                r["in_box_3d"] += p is not None and bool(np.all(p >= lo) and np.all(p <= hi))
    out = {
        "run": str(args.run),
        "image": f"{K.width}x{K.height}",
        "gaussians": int(model.num_gaussians) if model is not None else 0,
        "map_points": int(maps["points"].num_points),
        "views": views,
        "ground": ground,
        "render": {
            f: {
                **{k: v for k, v in r.items() if k != "ms"},
                "p50_ms": round(float(np.percentile(r["ms"], 50)), 1) if r["ms"] else None,
                "p95_ms": round(float(np.percentile(r["ms"], 95)), 1) if r["ms"] else None,
            }
            for f, r in render.items()
        },
    }
    if args.lerf_views:
        from types import SimpleNamespace

        from lang3d_ros.evaluation.metrics import score_views
        from lang3d_ros.evaluation.render import measure_gaussian_views
        from lang3d_ros.gaussians.evaluation import load_map_field
        from lang3d_ros.gaussians.relevancy_render import segment_relevancy_levels

        field = load_map_field(args.run / "map.l3dmap", encoder, cfg)
        gt = SimpleNamespace(
            intrinsics=K, T_world_cams=truth.T_world_cams, stamps_ns=truth.stamps_ns, objects=truth.objects
        )
        out["lerf"] = {}
        for path, seg in (("codes", lambda t: segment_relevancy_levels(maps["gaussians"], t)), ("latents", None)):
            t0 = time.perf_counter()
            views_g = measure_gaussian_views(field, gt, scene, args.lerf_views, segment_relevancy=seg)
            sv = score_views({"views": views_g})
            out["lerf"][path] = {
                "n": sv["n"],
                "localization_accuracy": sv["localization_accuracy"],
                "miou": sv.get("miou"),
                "s": round(time.perf_counter() - t0, 1),
            }
            print(f"LERF from the Gaussians through {path}: {out['lerf'][path]}")
    g = ground
    print(
        f"Ground, {g['labels']} unique labels: Gaussians answered {g['gaussians_answered']}, same ids (all, in order)"
        f" {g['same_ids']}, same best id {g['same_best']}, same boxes {g['same_boxes']}"
    )
    print("| field | view-queries | best pixel in GT box | 3D point in GT box (+5 cm) | in view | p50 ms | p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for f, r in out["render"].items():
        print(
            f"| {f} | {r['tried']} | {r['in_box_2d']} | {r['in_box_3d']} | {r['in_view']} | {r['p50_ms']} | "
            f"{r['p95_ms']} |"
        )
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
