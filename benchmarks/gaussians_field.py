"""Serving language Gaussians: relevancy through instance codes vs decoded latents, and instance answers from the
Gaussians vs from the points, on synthetic scenes.

Per scene (lang3d_ros.gaussians.synthetic_eval: orbit views, GT-label semantics through MiniLM, the Gaussians trained
on every other view): a GT segment table stands in for the fused map's instance table (segments = GT instances,
their label embeddings, the labelled points = back-projected training pixels); every Gaussian gets codes from the
nearest labelled points (``codes_from_points``). Then, on the held-out views, the LERF localization of maps
rendered (a) from the decoded latents (``LanguageQueryEngine``, coverage gate) and (b) through the instance codes
(segment relevancy gathered per Gaussian, ``render_relevancy``); and per scene label, the instance answer from the
points (best segment at the best level, box of its labelled points) against the answer from the Gaussians through
codes and through latents (segment score = mean decoded relevancy of its Gaussians): same id, box IoU.

    OMP_NUM_THREADS=1 python benchmarks/gaussians_field.py --seeds 21 22 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lang3d_ros.evaluation.lerf_protocol import mask_boxes, measure_levels, score_view_query
from lang3d_ros.gaussians.evaluation import MapField, label_masks
from lang3d_ros.gaussians.instances import answer_from_gaussians, codes_from_points, segment_scores_from_gaussians
from lang3d_ros.gaussians.synthetic_eval import (
    SyntheticSceneSettings,
    gaussian_localization,
    query_engine,
    segment_table,
    train_synthetic_scene,
)


def box_iou(a_min, a_max, b_min, b_max) -> float:
    inter = np.prod(np.clip(np.minimum(a_max, b_max) - np.maximum(a_min, b_min), 0, None))
    union = np.prod(a_max - a_min) + np.prod(b_max - b_min) - inter
    return float(inter / union) if union > 0 else 0.0


def points_answer(table, seg_rel: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """The points' answer: best level by maximum, best segment with points there, box of its points (2-98 %)."""
    lvl = int(np.argmax(seg_rel.max(axis=1)))
    order = np.argsort(-seg_rel[lvl], kind="stable")
    for i in order:
        m = table.points_xyz[table.labels[:, lvl] == table.ids[i]]
        if len(m):
            return lvl, int(table.ids[i]), np.percentile(m, 2, axis=0), np.percentile(m, 98, axis=0)
    raise ValueError("no segment has points")


def run_scene(seed: int, settings: SyntheticSceneSettings) -> dict:
    t0 = time.perf_counter()
    scene = train_synthetic_scene(seed, settings)
    train_s = time.perf_counter() - t0
    table = segment_table(scene)
    model = scene.model
    model.codes = torch.from_numpy(codes_from_points(model.means.detach().numpy(), table.points_xyz, table.labels))
    engine = query_engine(scene)
    field = MapField(model, engine, scene.config.gaussians)
    text = scene.semantics.text_encoder
    cache: dict[str, np.ndarray] = {}

    def seg_rel(label: str):
        if label not in cache:
            cache[label] = table.relevancy(label, text, engine.canonical.cpu())
        return table.ids, cache[label]

    latents = gaussian_localization(scene)
    codes_hits = []
    for f in scene.held_frames:
        for lab, gt in label_masks(f.instance_map, scene.semantics.instance_labels).items():
            rel = field.relevancy_levels(lab, f.T_world_cam, f.intrinsics, seg_rel)
            levels = [m.to_dict() for m in measure_levels(rel, gt)]
            codes_hits.append(bool(score_view_query(levels, mask_boxes(gt))[0]))
    # instance answers per scene label (unique labels only: the id comparison is then unambiguous)
    labels = [
        lab
        for lab in sorted(set(scene.semantics.instance_labels.values()))
        if list(scene.semantics.instance_labels.values()).count(lab) == 1
    ]
    rows = []
    for lab in labels:
        _, rel = seg_rel(lab)
        lvl, pid, pmin, pmax = points_answer(table, rel)
        by_codes = answer_from_gaussians(model, lvl, table.ids, rel[lvl], top_k=1)
        dec = engine.query(lab, level=lvl).relevancy.cpu().numpy()
        lat_scores = segment_scores_from_gaussians(model, lvl, table.ids, dec)
        by_latents = answer_from_gaussians(model, lvl, table.ids, lat_scores, top_k=1)
        gt_ids = [i for i, name in scene.semantics.instance_labels.items() if name == lab]
        rows.append(
            {
                "label": lab,
                "points_correct": pid in gt_ids,
                "codes_same_id": bool(by_codes) and by_codes[0].segment_id == pid,
                "codes_box_iou": box_iou(pmin, pmax, by_codes[0].box_min_xyz, by_codes[0].box_max_xyz)
                if by_codes
                else 0.0,
                "latents_same_id": bool(by_latents) and by_latents[0].segment_id == pid,
                "latents_correct": bool(by_latents) and by_latents[0].segment_id in gt_ids,
            }
        )
    coded = float((model.codes >= 0).any(dim=1).float().mean())
    return {
        "seed": seed,
        "gaussians": model.num_gaussians,
        "coded_share": coded,
        "train_s": train_s,
        "psnr_db": scene.stats["psnr_after_db"],
        "lerf_latents": (sum(q.hit for q in latents), len(latents)),
        "lerf_codes": (sum(codes_hits), len(codes_hits)),
        "answers": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    ap.add_argument("--rgb-iters", type=int, default=250)
    ap.add_argument("--lang-iters", type=int, default=800)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = SyntheticSceneSettings(
        frames=32, holdout_every=2, width_px=160, height_px=120, rgb_iters=args.rgb_iters, lang_iters=args.lang_iters
    )
    print(
        "| seed | Gaussians | coded | held-out PSNR (dB) | LERF loc., latents | LERF loc., codes | answers: points "
        "correct | codes: same id as points | codes: box IoU vs points (mean) | latents: same id as points | "
        "latents correct |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tot = np.zeros(8)
    for seed in args.seeds:
        r = run_scene(seed, settings)
        a = r["answers"]
        n = len(a)
        pc, cs, ls, lc = (
            sum(x[k] for x in a) for k in ("points_correct", "codes_same_id", "latents_same_id", "latents_correct")
        )
        iou = float(np.mean([x["codes_box_iou"] for x in a])) if a else float("nan")
        (lh, ln), (ch, cn) = r["lerf_latents"], r["lerf_codes"]
        print(
            f"| {seed} | {r['gaussians']} | {r['coded_share']:.1%} | {r['psnr_db']:.2f} | {lh}/{ln} = {lh / ln:.1%} | "
            f"{ch}/{cn} = {ch / cn:.1%} | {pc}/{n} | {cs}/{n} | {iou:.3f} | {ls}/{n} | {lc}/{n} |",
            flush=True,
        )
        tot += [lh, ln, ch, cn, pc, cs, ls, n]
    lh, ln, ch, cn, pc, cs, ls, n = tot
    print(
        f"| all | | | | {lh:.0f}/{ln:.0f} = {lh / ln:.1%} | {ch:.0f}/{cn:.0f} = {ch / cn:.1%} | {pc:.0f}/{n:.0f} | "
        f"{cs:.0f}/{n:.0f} | | {ls:.0f}/{n:.0f} | |"
    )


if __name__ == "__main__":
    main()
