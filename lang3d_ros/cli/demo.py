"""``lang3d demo``: a synthetic room -> an RGB-D bag -> the real mapper node fed by a bag replay -> grounding,
navigation and Ask queries through its services -> the evaluation report (Markdown + HTML). A few minutes on
a laptop CPU at the defaults; prints the report's path.

Semantics come from the scene's ground-truth labels embedded by MiniLM (no SAM/CLIP weights needed); language
Gaussians are trained only with --train (slow on a CPU)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="synthetic scene -> bag -> real nodes -> queries -> report", description=__doc__
    )
    p.add_argument("--out", type=Path, default=Path("lang3d_demo"), help="output folder (bag, map, report)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument(
        "--rate", type=float, default=0.25, help="replay speed factor (0.25: a 2-core CPU fuses most frames)"
    )
    p.add_argument("--train", action="store_true", help="train language Gaussians too (mapping.train_gaussians)")
    from lang3d_ros.cli.eval import add_mask_noise_arguments

    add_mask_noise_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def make_bag(out: Path, seed: int, frames: int, objects: int, width: int, height: int) -> Path:
    """Synthetic scene + orbit trajectory + noisy RGB-D frames -> out/bag (with ground_truth.json)."""
    import shutil

    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import (
        DEFAULT_INTRINSICS,
        RenderNoise,
        generate_scene,
        make_trajectory,
        render_frames,
    )

    bag = out / "bag"
    if bag.exists():
        shutil.rmtree(bag)
    scene = generate_scene(seed, n_objects=objects)
    poses = make_trajectory(scene, "orbit", frames, seed=seed)
    rendered = render_frames(scene, poses, DEFAULT_INTRINSICS.scaled(width, height), noise=RenderNoise(), seed=seed)
    write_bag(
        rendered,
        bag,
        storage="mcap",
        depth_encoding="16UC1",
        pose_msg="pose",
        scene=scene,
        seed=seed,
        progress=True,
        total=frames,
    )
    return bag


def run(args: argparse.Namespace) -> int:
    from lang3d_ros.cli.eval import evaluate_variants, summary_line
    from lang3d_ros.datasets.synthetic import load_ground_truth
    from lang3d_ros.evaluation.queries import generate_queries
    from lang3d_ros.evaluation.runner import EvalOptions

    if args.frames < 2 or args.width < 32 or args.height < 24:
        raise ValueError("need --frames >= 2 and an image of at least 32x24")
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"[1/3] synthetic scene (seed {args.seed}, {args.objects} objects) -> {args.frames} frames at "
        f"{args.width}x{args.height} -> bag"
    )
    bag = make_bag(args.out, args.seed, args.frames, args.objects, args.width, args.height)
    gt = bag / "ground_truth.json"
    qs = generate_queries(load_ground_truth(gt))
    qs.save(args.out / "queries.json")
    print(f"[2/3] mapper node + bag replay + {len(qs.queries)} service queries (Ground, Navigate, Ask)")
    overrides = {"mapping": {"train_gaussians": bool(args.train)}}
    notes = [
        "Demo: ground-truth-label semantics (MiniLM text embeddings of the GT labels), not SAM+CLIP: the numbers "
        "test fusion, grounding, navigation and the services, not 2D open-vocabulary segmentation."
    ]
    if not args.train:
        notes.append(
            "Language Gaussians were not trained (mapping.train_gaussians false; pass --train, slow on a "
            "CPU): relevancy comes from the fused points."
        )
    opts = EvalOptions(rate=args.rate, overrides=overrides, n_views=4, progress=not args.no_progress)
    report, results_of = evaluate_variants(bag, gt, qs, args.out, opts, args.mask_noise, args.mask_noise_seed, notes)
    for name, results in results_of.items():
        print("[3/3] " + summary_line(name, results))
    print(f"report: {report.resolve()}")
    print(f"html:   {report.with_suffix('.html').resolve()}")
    return 0
