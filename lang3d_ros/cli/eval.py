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
    p = subparsers.add_parser("eval", help="evaluate the nodes on a bag with ground truth (report + raw data)", description=__doc__)
    p.add_argument("bag", type=Path, help="rosbag2 folder (or .mcap / .db3)")
    p.add_argument("--gt", type=Path, default=None, help="ground_truth.json (default: BAG/ground_truth.json)")
    p.add_argument("--queries", type=Path, default=None, help="queries file (JSON/YAML); default: generated from the GT")
    p.add_argument("--out", type=Path, default=Path("lang3d_eval"), help="output folder (created)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (1 = recorded rate, 2 = twice as fast)")
    p.add_argument("--config", type=Path, action="append", default=[], help="extra params YAML for the mapper (repeatable)")
    p.add_argument("--train", action="store_true", help="set mapping.train_gaussians (waits for training_state done)")
    p.add_argument("--views", type=int, default=4, help="GT camera views rendered for the LERF-protocol metrics")
    p.add_argument("--mapping-timeout", type=float, default=180.0, help="seconds to wait for mapping to settle")
    p.add_argument("--service-timeout", type=float, default=30.0, help="seconds per service call (a timeout is a miss)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)

    q = subparsers.add_parser("eval-queries", help="write an evaluation queries file from a ground-truth file")
    q.add_argument("gt", type=Path)
    q.add_argument("--out", type=Path, required=True, help="queries file to write (.json, .yaml)")
    q.add_argument("--ground", type=int, default=12)
    q.add_argument("--navigate", type=int, default=3)
    q.add_argument("--ask", type=int, default=4)
    q.set_defaults(func=run_queries)

    from lang3d_ros.evaluation.lerf import add_lerf_parser

    add_lerf_parser(subparsers)


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


def evaluate_and_report(bag: Path, gt: Path, queries, out: Path, opts, notes: list[str] | None = None) -> tuple[Path, dict]:
    """evaluate -> check recompute(raw) == results -> report; returns (report.md path, results)."""
    from lang3d_ros.evaluation.report import write_report
    from lang3d_ros.evaluation.runner import evaluate

    raw, results = evaluate(bag, gt, queries, out, opts)
    diffs = check_recomputed(out)
    if diffs:
        raise RuntimeError("results.json does not match recompute(raw.json): " + "; ".join(diffs[:5]))
    report = write_report(out, raw, results, map_points(out / "map.l3dmap"), notes)
    return report, results


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
    opts = EvalOptions(rate=args.rate, config_files=list(args.config), overrides=overrides, n_views=args.views,
                       mapping_timeout_s=args.mapping_timeout, service_timeout_s=args.service_timeout, progress=not args.no_progress)
    report, results = evaluate_and_report(args.bag, gt, qs, args.out, opts)
    g = results["grounding"]
    print(f"Ground Acc@0.25 {g['acc@0.25']:.3f} Acc@0.5 {g['acc@0.5']:.3f} (n={g['n']}); "
          f"navigation validity {results['navigation']['validity']:.3f}; LERF loc {results['lerf']['localization_accuracy']:.3f} "
          f"mIoU {results['lerf']['miou']:.3f}; {len(results['errors'])} error(s)")
    print(f"report: {report.resolve()}")
    return 0
