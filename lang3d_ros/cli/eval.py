"""``lang3d eval``: replay a bag into the real nodes, query their services, score against ground truth, report.
Also ``lang3d eval-queries`` (write a queries file from a GT file) and ``lang3d eval-lerf`` (LangSplat's
2D table on the LERF dataset from a map file)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate the nodes on a bag with ground truth (report + raw data)", description=__doc__
    )
    p.add_argument("bag", type=Path, help="rosbag2 folder (or .mcap / .db3)")
    p.add_argument("--gt", type=Path, default=None, help="ground_truth.json (default: BAG/ground_truth.json)")
    p.add_argument(
        "--queries", type=Path, default=None, help="queries file (JSON/YAML); default: generated from the GT"
    )
    p.add_argument("--out", type=Path, default=Path("lang3d_eval"), help="output folder (created)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (1 = recorded rate, 2 = twice as fast)")
    p.add_argument(
        "--config", type=Path, action="append", default=[], help="extra params YAML for the mapper (repeatable)"
    )
    p.add_argument("--train", action="store_true", help="set mapping.train_gaussians (waits for training_state done)")
    p.add_argument("--views", type=int, default=4, help="GT camera views rendered for the LERF-protocol metrics")
    p.add_argument("--mapping-timeout", type=float, default=180.0, help="seconds to wait for mapping to settle")
    p.add_argument("--service-timeout", type=float, default=30.0, help="seconds per service call (a timeout is a miss)")
    add_mask_noise_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)

    q = subparsers.add_parser("eval-queries", help="write an evaluation queries file from a ground-truth file")
    q.add_argument("gt", type=Path)
    q.add_argument("--out", type=Path, required=True, help="queries file to write (.json, .yaml)")
    q.add_argument("--ground", type=int, default=60, help="most Ground queries (every kind interleaved)")
    q.add_argument("--navigate", type=int, default=8, help="most Navigate queries")
    q.add_argument("--ask", type=int, default=30, help="most Ask queries (where-is, counts)")
    q.set_defaults(func=run_queries)

    from lang3d_ros.evaluation.lerf import add_lerf_parser

    add_lerf_parser(subparsers)


MASK_NOISE_CHOICES = ("off", "on", "both")


def add_mask_noise_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mask-noise",
        choices=MASK_NOISE_CHOICES,
        default="off",
        help="ground-truth semantics with SAM-like mask failures (semantics.mask_noise): off, on, or both "
        "(the same scene clean and noisy, reported side by side)",
    )
    p.add_argument("--mask-noise-seed", type=int, default=0, help="seed of the mask-noise model")


def mask_noise_variants(mode: str, seed: int) -> dict[str, dict]:
    """{variant name: mapper overrides} for --mask-noise off / on / both."""
    if mode not in MASK_NOISE_CHOICES:
        raise ValueError(f"--mask-noise must be one of {MASK_NOISE_CHOICES}, got {mode!r}")
    noisy = {"semantics": {"mask_noise": {"enabled": True, "seed": int(seed)}}}
    return {"off": {"clean": {}}, "on": {"noisy": noisy}, "both": {"clean": {}, "noisy": noisy}}[mode]


def run_queries(args: argparse.Namespace) -> int:
    from lang3d_ros.datasets.synthetic import load_ground_truth
    from lang3d_ros.evaluation.queries import generate_queries

    qs = generate_queries(load_ground_truth(args.gt), args.ground, args.navigate, args.ask)
    qs.save(args.out)
    print(f"wrote {len(qs.queries)} queries to {args.out}")
    return 0


def check_recomputed(out_dir: Path) -> list[str]:
    """Recompute results from the saved raw.json and compare with the saved results.json."""
    from lang3d_ros.evaluation.metrics import differences, recompute

    raw = json.loads((out_dir / "raw.json").read_text())
    saved = json.loads((out_dir / "results.json").read_text())
    return differences(recompute(raw), saved)


def map_points(map_path: Path):
    from lang3d_ros.mapstore import read_map

    if not map_path.is_file():
        return None
    return read_map(map_path).arrays.get("points.points_xyz")


def evaluate_and_report(
    bag: Path, gt: Path, queries, out: Path, opts, notes: list[str] | None = None
) -> tuple[Path, dict]:
    """evaluate -> check recompute(raw) == results -> report; returns (report.md path, results)."""
    from lang3d_ros.evaluation.report import write_report
    from lang3d_ros.evaluation.runner import evaluate

    raw, results = evaluate(bag, gt, queries, out, opts)
    diffs = check_recomputed(out)
    if diffs:
        raise RuntimeError("results.json does not match recompute(raw.json): " + "; ".join(diffs[:5]))
    report = write_report(out, raw, results, map_points(out / "map.l3dmap"), notes)
    return report, results


def evaluate_variants(
    bag: Path,
    gt: Path,
    queries,
    out: Path,
    opts,
    mask_noise: str = "off",
    noise_seed: int = 0,
    notes: list[str] | None = None,
) -> tuple[Path, dict[str, dict]]:
    """``evaluate_and_report`` once per --mask-noise variant. off / on: one run in ``out``; both: the clean run in
    out/clean, the noisy one in out/noisy, and out/report.md with their figures side by side. Returns (the report
    to read, {variant: results})."""
    import copy

    from lang3d_ros.config import _deep_update
    from lang3d_ros.evaluation.report import write_comparison

    variants = mask_noise_variants(mask_noise, noise_seed)
    runs, results_of = {}, {}
    for name, extra in variants.items():
        o = copy.copy(opts)
        o.overrides = copy.deepcopy(opts.overrides)
        _deep_update(o.overrides, extra)
        run_dir = out / name if len(variants) > 1 else out
        note = (
            f"Mask-noise model ON (semantics.mask_noise, seed {noise_seed}): SAM-like missed, merged, split and "
            "jittered masks, confused labels and feature noise on the ground-truth masks."
            if extra
            else "Mask-noise model off: perfect ground-truth masks."
        )
        report, results = evaluate_and_report(bag, gt, queries, run_dir, o, list(notes or []) + [note])
        runs[name] = (json.loads((run_dir / "raw.json").read_text()), results)
        results_of[name] = results
    if len(variants) == 1:
        return report, results_of
    return write_comparison(out, runs, notes), results_of


def summary_line(name: str, results: dict) -> str:
    s = results["summary"]

    def pct(k: str) -> str:
        v = s.get(k)
        return "n/a" if v is None or v != v else f"{100 * v:.1f}%"

    kinds = ", ".join(f"{k} {pct(f'ground_{k}_acc@0.25')}" for k in ("label", "attribute", "relation", "resting"))
    marginal = (
        f", {s['navigation_n_marginal']} at marginal passages, strict {pct('navigation_validity_strict')}"
        if s.get("navigation_n_marginal")
        else ""
    )
    return (
        f"[{name}] Ground Acc@0.25 {pct('ground_acc@0.25')} (n={s['ground_n']}; {kinds}); counts "
        f"{pct('count_accuracy')} (n={s['count_n']}); navigation validity {pct('navigation_validity')} "
        f"(n={s['navigation_n']}{marginal}); LERF loc {pct('lerf_localization')}; {s['errors']} error(s)"
        + (
            f"; on observed targets: Ground {pct('ground_observed_acc@0.25')} (n={s['ground_observed_n']}), counts "
            f"{pct('count_accuracy_observed')} (n={s.get('count_n_observed')}), navigation "
            f"{pct('navigation_validity_observed')} (n={s.get('navigation_n_observed')}); targets never observed: "
            f"Ground answered 'not found' {pct('ground_unobserved_not_found')} (n={s.get('ground_unobserved_n')})"
            if s.get("ground_observed_n") is not None
            else ""
        )
    )


def run(args: argparse.Namespace) -> int:
    from lang3d_ros.datasets.synthetic import load_ground_truth
    from lang3d_ros.evaluation.queries import generate_queries, load_queries
    from lang3d_ros.evaluation.runner import EvalOptions

    gt = args.gt or (args.bag / "ground_truth.json")
    if not gt.is_file():
        raise FileNotFoundError(f"ground truth {gt} not found (pass --gt)")
    if args.rate <= 0:
        raise ValueError(f"--rate must be positive, got {args.rate}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.queries is None:
        qs = generate_queries(load_ground_truth(gt))
        qs.save(args.out / "queries.json")
    else:
        qs = load_queries(args.queries)
    overrides = {"mapping": {"train_gaussians": True}} if args.train else {}
    opts = EvalOptions(
        rate=args.rate,
        config_files=list(args.config),
        overrides=overrides,
        n_views=args.views,
        mapping_timeout_s=args.mapping_timeout,
        service_timeout_s=args.service_timeout,
        progress=not args.no_progress,
    )
    report, results_of = evaluate_variants(args.bag, gt, qs, args.out, opts, args.mask_noise, args.mask_noise_seed)
    for name, results in results_of.items():
        print(summary_line(name, results))
    print(f"report: {report.resolve()}")
    return 0
