"""report.md + report.html + PNG plots from (raw, results). Numbers come only from ``results`` (which
``metrics.recompute`` derives from raw); plots also read raw (boxes, goals, paths) and heatmaps.npz.
What it cannot do: interactive views; the HTML is the Markdown's tables and images in a static page.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


# ----------------------------------------------------------------------------- plots
def plot_topdown(raw: dict, results: dict, path: Path, map_xyz: np.ndarray | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon as MplPolygon

    from lang3d_ros.geometry.boxes import Box3D

    fig, ax = plt.subplots(figsize=(7, 6))
    if map_xyz is not None and len(map_xyz):
        sub = map_xyz[np.random.default_rng(0).choice(len(map_xyz), min(len(map_xyz), 30000), replace=False)]
        ax.scatter(sub[:, 0], sub[:, 1], s=0.3, c="0.75", label="map points")

    def footprint(box_dict, **kw):
        c = Box3D.from_dict(box_dict).corners()
        lo = c[np.argsort(c[:, 2])[:4]][:, :2]
        ctr = lo.mean(0)
        lo = lo[np.argsort(np.arctan2(lo[:, 1] - ctr[1], lo[:, 0] - ctr[0]))]
        ax.add_patch(MplPolygon(lo, closed=True, fill=False, **kw))

    for o in raw["ground_truth"]["objects"]:
        footprint(o["obb"], edgecolor="black", lw=1.0)
        ax.text(*o["obb"]["center"][:2], o["label"], fontsize=6, ha="center")
    first = True
    for e in raw["queries"]:
        resp = e.get("response") or {}
        objs = resp.get("objects") or ([resp["target"]] if resp.get("target") else [])
        if objs and resp.get("success", True):
            footprint(objs[0]["box"], edgecolor="tab:green", lw=1.2, ls="--", label="predicted" if first else None)
            first = False
        if resp.get("goal"):
            g, p = resp["goal"], np.asarray(resp.get("path") or [], dtype=float).reshape(-1, 2)
            if len(p):
                ax.plot(p[:, 0], p[:, 1], "-", color="tab:blue", lw=1)
            ax.arrow(g["x"], g["y"], 0.25 * math.cos(g["yaw"]), 0.25 * math.sin(g["yaw"]), width=0.02, color="tab:red")
    s = raw["start_xy_yaw"]
    ax.plot(s[0], s[1], "o", color="tab:orange", label="start")
    room = raw["ground_truth"]["room"]
    ax.set_xlim(room["min_xyz"][0] - 0.2, room["max_xyz"][0] + 0.2)
    ax.set_ylim(room["min_xyz"][1] - 0.2, room["max_xyz"][1] + 0.2)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, map)")
    ax.set_ylabel("y (m, map)")
    ax.set_title("top-down: GT boxes (black), answers (green), goals (red) and paths (blue)")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(raw: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[float]] = {}
    for e in raw["queries"]:
        if e.get("latency_ms") is not None:
            series.setdefault(e["service"], []).append(e["latency_ms"])
    series["get_map_status"] = [c["latency_ms"] for c in raw.get("status_calls", [])]
    series = {k: v for k, v in series.items() if v}
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(3.2 * max(1, len(series)), 2.8))
    axes = np.atleast_1d(axes)
    for ax, (name, v) in zip(axes, sorted(series.items())):
        ax.hist(v, bins=min(20, max(3, len(v))), color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("round trip (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_heatmaps(heatmaps_npz: Path, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not heatmaps_npz.is_file():
        return None
    data = np.load(heatmaps_npz)
    names = sorted(data.files)[:8]
    if not names:
        return None
    cols = min(4, len(names))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        ax.imshow(data[name], cmap="turbo", vmin=0.0, vmax=1.0)
        ax.set_title(name.replace("_", " ", 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- text
def _summary_rows(r: dict) -> list[tuple[str, str]]:
    g, rel, nav, lerf = r["grounding"], r["relational"], r["navigation"], r["lerf"]
    lat = r["latency_ms"]
    rows = [
        ("Ground Acc@0.25 / Acc@0.5", f"{_pct(g['acc@0.25'])} / {_pct(g['acc@0.5'])} (n={g['n']})"),
    ]
    if g.get("n_observed") is not None:
        c, nv = r["ask"]["counts"], r["navigation"]
        rows.append(
            (
                "on targets the recording observed: Ground Acc@0.25 / counts / navigation",
                f"{_pct(g['acc@0.25_observed'])} (n={g['n_observed']}) / {_pct(c.get('accuracy_observed'))} "
                f"(n={c.get('n_observed')}) / {_pct(nv.get('validity_observed'))} (n={nv.get('n_observed')})",
            )
        )
        rows.append(
            (
                "on targets no frame showed (half of the silhouette never in one image): Ground answered 'not found'",
                f"{_pct(g.get('unobserved_not_found'))} (n={g.get('n_unobserved')})",
            )
        )
    rows += [
        (
            "Relational Acc@0.25 / Acc@0.5",
            f"{_pct(rel['acc@0.25'])} / {_pct(rel['acc@0.5'])} (n={rel['n']}, answered by {rel['answered_by']})",
        ),
        ("Ask (boxes) Acc@0.25", f"{_pct(r['ask']['boxes']['acc@0.25'])} (n={r['ask']['boxes']['n']})"),
        ("Ask (counts) accuracy", f"{_pct(r['ask']['counts']['accuracy'])} (n={r['ask']['counts']['n']})"),
        (
            "Navigation goal validity",
            f"{_pct(nav['validity'])} (n={nav['n']}, planner success {_pct(nav['success_rate'])})",
        ),
        ("LERF localization accuracy", f"{_pct(lerf['localization_accuracy'])} (n={lerf['n']} view-queries)"),
        ("LERF mIoU", _f(lerf["miou"])),
    ]
    lg = r.get("lerf_gaussians") or {"n": 0}
    if lg["n"]:
        rows += [
            (
                "LERF localization / mIoU, rendered from the Gaussians",
                f"{_pct(lg['localization_accuracy'])} / {_f(lg['miou'])} (n={lg['n']}, same views)",
            ),
            ("Gaussians' held-out-view PSNR (dB)", _f(lg.get("heldout_psnr_db"), 2)),
        ]
    for name, st in lat.items():
        rows.append((f"latency {name} p50 / p95 (ms)", f"{_f(st['p50'], 1)} / {_f(st['p95'], 1)} (n={st['n']})"))
    fr = r["frames"]
    rows.append(
        (
            "frames received / fused / dropped / rejected",
            f"{fr['frames_received']} / {fr['frames_fused']} / {fr['frames_dropped']} / {fr['frames_rejected']}",
        )
    )
    if r.get("intake_summary"):
        rows.append(("mapper intake at stop (drops by reason)", r["intake_summary"]))
    rows.append(("keyframes, map points", f"{fr['keyframes']}, {fr['num_points']}"))
    rows.append(("training state", str(fr["training_state"])))
    rows.append(("mapper peak memory (VmHWM, MiB)", _f(r["memory"]["mapper_peak_mb"], 1)))
    return rows


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(out)


def markdown(raw: dict, results: dict, images: dict[str, str], notes: list[str] | None = None) -> str:
    r = results
    lines = [
        "# lang3d evaluation report",
        "",
        f"Bag: `{raw['run']['bag']}`  ",
        f"Ground truth: `{raw['run']['ground_truth']}`  ",
        f"Replay rate: {raw['run']['rate']}x; every number below is recomputed from `raw.json` by "
        "`lang3d_ros.evaluation.metrics.recompute` (the CLI checks it matches `results.json`).",
        "",
    ]
    for n in notes or []:
        lines.append(f"> {n}")
    if notes:
        lines.append("")
    lines += ["## Summary", "", _table(["metric", "value"], [list(x) for x in _summary_rows(r)]), ""]
    lines += [
        "## Grounding (Ground service)",
        "",
        _table(
            ["id", "kind", "query", "target observed", "top label", "answered by", "IoU", "@0.25", "@0.5", "error"],
            [
                [
                    q["id"],
                    q["kind"],
                    q["text"],
                    {True: "yes", False: "no"}.get(q.get("target_observed"), "n/a"),
                    q["top_label"],
                    q["answered_by"],
                    _f(q["iou"]),
                    q["hit@0.25"],
                    q["hit@0.5"],
                    q["error"] or "",
                ]
                for q in r["grounding"]["per_query"]
            ],
        ),
        "",
    ]
    lines += [
        "By kind: "
        + ", ".join(f"{k}: {_pct(v['acc@0.25'])} @0.25 (n={v['n']})" for k, v in r["grounding"]["by_kind"].items()),
        "",
    ]
    counts = r["ask"]["counts"]
    if counts["n"]:
        lines += [
            "Counts by expected number: "
            + ", ".join(f"{k}: {_pct(v['accuracy'])} (n={v['n']})" for k, v in counts.get("by_expected", {}).items()),
            "",
            "Counts by phrasing: "
            + ", ".join(f'"{k}": {_pct(v["accuracy"])} (n={v["n"]})' for k, v in counts.get("by_phrasing", {}).items()),
            "",
        ]
    lines += [
        "## Navigation (Navigate service, checked on the GT scene)",
        "",
        _table(
            [
                "id",
                "instruction",
                "success",
                "collision-free",
                "standoff ok (err m)",
                "facing (err deg)",
                "path connected",
                "valid",
                "message / error",
            ],
            [
                [
                    q["id"],
                    q["text"],
                    q["success"],
                    q["collision_free"],
                    f"{q['standoff_ok']} ({_f(q['standoff_error_m'], 2)})",
                    f"{q['facing']} ({_f(q['facing_error_deg'], 1)})",
                    q["path_connected"],
                    q["valid"],
                    q["error"] or q["message"],
                ]
                for q in r["navigation"]["per_query"]
            ],
        ),
        "",
    ]
    lines += [
        "## Ask",
        "",
        _table(
            ["id", "question", "expected", "answer", "correct", "error"],
            [
                [q["id"], q["text"], q["expected"], q["answer"], q["correct"], q["error"] or ""]
                for q in r["ask"]["counts"]["per_query"]
            ]
            + [
                [q["id"], q["text"], "GT box", q["top_label"], q["hit@0.25"], q["error"] or ""]
                for q in r["ask"]["boxes"]["per_query"]
            ],
        ),
        "",
    ]
    lines += [
        "## Rendered views (LERF protocol on the fused map's relevancy)",
        "",
        _table(
            ["view", "label", "localization hit", "IoU", "level", "error"],
            [
                [q["view"], q["label"], q["hit"], _f(q["iou"]), q["level"], q["error"] or ""]
                for q in r["lerf"]["per_view_query"]
            ],
        ),
        "",
    ]
    lines += ["## Failures (errors and timeouts count as misses)", ""]
    lines += [f"- `{e['id']}` ({e['service']}) {e['text']}: {e['error']}" for e in r["errors"]] or ["- none"]
    lines.append("")
    lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in images.items()] + [""]
    return "\n".join(lines)


def _md_to_html(md: str) -> str:
    """The Markdown this module writes (headings, tables, images, quotes, bullets, paragraphs) as HTML."""
    out, table = [], []

    def flush():
        if table:
            rows = [t.strip().strip("|").split("|") for t in table if not set(t.replace("|", "").strip()) <= {"-"}]
            out.append(
                "<table>"
                + "".join(
                    "<tr>"
                    + "".join(
                        f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>" for c in r
                    )
                    + "</tr>"
                    for i, r in enumerate(rows)
                )
                + "</table>"
            )
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            out.append(f"<h{n}>{html.escape(line[n:].strip())}</h{n}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            out.append(
                f'<p><img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}" style="max-width:100%"></p>'
            )
        elif line.startswith("> "):
            out.append(f"<blockquote>{html.escape(line[2:])}</blockquote>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{html.escape(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.rstrip())}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lang3d evaluation report</title>"
        f"<style>{style}</style></head><body>{''.join(out)}</body></html>"
    )


COMPARISON_ROWS = (  # (summary key, row name, percentage?)
    ("ground_acc@0.25", "Ground Acc@0.25 (all kinds)", True),
    ("ground_label_acc@0.25", "  label (floor objects, unique label)", True),
    ("ground_attribute_acc@0.25", "  colour + label among same-label objects", True),
    ("ground_relation_acc@0.25", '  "the X on the Y"', True),
    ("ground_resting_acc@0.25", "  resting on another object, plain label", True),
    ("ground_in_full_view_acc@0.25", "  targets once entirely in a camera view (field of view only)", True),
    ("ground_observed_acc@0.25", "  targets the recording observed (>= half of the silhouette in one image)", True),
    ("ground_unobserved_not_found", "  the others: answered 'not found' (no frame showed them)", True),
    ("ground_acc@0.5", "Ground Acc@0.5 (all kinds)", True),
    ("count_accuracy", 'Counts ("how many", several phrasings)', True),
    ("count_accuracy_observed", "  of labels whose instances were all observed", True),
    ("navigation_validity", "Navigation validity", True),
    ("navigation_validity_strict", "  counting 'unreachable' as a miss at marginal GT passages", True),
    ("navigation_validity_observed", "  to observed targets", True),
    ("navigation_validity_target_found", "  when the target was found (IoU >= 0.25)", True),
    ("lerf_localization", "LERF localization", True),
    ("lerf_miou", "LERF mIoU", False),
    ("num_points", "map points", False),
    ("keyframes", "keyframes", False),
    ("map_file_mb", "map file (MiB)", False),
    ("mapper_peak_mb", "mapper peak memory (VmHWM, MiB)", False),
    ("errors", "errors and timeouts", False),
)
_COUNT_KEYS = {
    "ground_acc@0.25": "ground_n",
    "ground_acc@0.5": "ground_n",
    "ground_in_full_view_acc@0.25": "ground_in_full_view_n",
    "ground_observed_acc@0.25": "ground_observed_n",
    "ground_unobserved_not_found": "ground_unobserved_n",
    "count_accuracy_observed": "count_n_observed",
    "navigation_validity_observed": "navigation_n_observed",
    "count_accuracy": "count_n",
    "navigation_validity": "navigation_n",
    "navigation_validity_strict": "navigation_n",
    "lerf_localization": "lerf_n",
    "navigation_validity_target_found": "navigation_n_target_found",
    **{f"ground_{k}_acc@0.25": f"ground_{k}_n" for k in ("label", "attribute", "relation", "resting")},
}


def comparison_table(summaries: dict[str, dict]) -> str:
    """Markdown table: one row per headline figure, one column per variant (e.g. clean / noisy), with n."""
    names = list(summaries)
    rows = []
    for key, title, pct in COMPARISON_ROWS:
        cells = []
        for n in names:
            v = summaries[n].get(key)
            cell = _pct(v) if pct else _f(v, 1) if isinstance(v, float) else _f(v)
            if key in _COUNT_KEYS:
                cell += f" (n={summaries[n].get(_COUNT_KEYS[key])})"
            cells.append(cell)
        rows.append([title] + cells)
    return _table(["metric"] + names, rows)


def plot_comparison(summaries: dict[str, dict], path: Path) -> Path:
    """Grouped bars of the percentage figures, one bar per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, t.strip()) for k, t, pct in COMPARISON_ROWS if pct]
    names = list(summaries)
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, n in enumerate(names):
        vals = [summaries[n].get(k) for k, _ in rows]
        vals = [100.0 * v if isinstance(v, (int, float)) and not math.isnan(v) else 0.0 for v in vals]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=n)
    ax.axhline(95, color="0.3", lw=0.8, ls="--")
    ax.axhline(85, color="0.6", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels([t[:28] for _, t in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.set_title("clean vs mask-noise: headline figures (dashed 95%, dotted 85%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_comparison(out_dir: Path, runs: dict[str, tuple[dict, dict]], notes: list[str] | None = None) -> Path:
    """report.md + report.html in out_dir putting the variants' (name -> (raw, results)) headline figures side by
    side, a bar plot, and each variant's top-down plot; each variant's full report is in out_dir/<name>/."""
    out_dir = Path(out_dir)
    summaries = {n: res["summary"] for n, (_, res) in runs.items()}
    plot = plot_comparison(summaries, out_dir / "comparison.png")
    first_raw = next(iter(runs.values()))[0]
    lines = [
        "# lang3d evaluation report: clean and mask-noise runs side by side",
        "",
        f"Bag: `{first_raw['run']['bag']}`  ",
        f"Ground truth: `{first_raw['run']['ground_truth']}`  ",
        "Same bag, same queries, same mapper settings except `semantics.mask_noise`; every number is recomputed "
        "from each run's `raw.json` by `lang3d_ros.evaluation.metrics.recompute`.",
        "",
    ]
    lines += [f"> {n}" for n in notes or []] + ([""] if notes else [])
    lines += ["## Side by side", "", comparison_table(summaries), ""]
    for n, (raw, res) in runs.items():
        noise = ((raw["run"].get("params") or {}).get("semantics") or {}).get("mask_noise") or {}
        lines.append(
            f"- `{n}`: mask noise {'on (seed ' + str(noise.get('seed', 0)) + ')' if noise.get('enabled') else 'off'}"
            f"; full report `{n}/report.md`, raw record `{n}/raw.json`"
        )
    lines += ["", "## Misses per variant", ""]
    for n, (_, res) in runs.items():
        miss = [q for q in res["grounding"]["per_query"] if not q["hit@0.25"]]
        wrong = [q for q in res["ask"]["counts"]["per_query"] if not q["correct"]]
        bad_nav = [q for q in res["navigation"]["per_query"] if not q["valid"]]
        lines.append(
            f"- `{n}`: Ground misses: "
            + (
                "; ".join(
                    f"{q['text']} ({q['kind']}, IoU {_f(q['iou'], 2)}, top {q['top_label'] or '-'})" for q in miss
                )
                or "none"
            )
        )
        lines.append(
            f"- `{n}`: wrong counts: "
            + ("; ".join(f"{q['text']} -> {q['answer']!r} (want {q['expected']})" for q in wrong) or "none")
        )
        lines.append(
            f"- `{n}`: invalid navigation: "
            + ("; ".join(f"{q['text']}: {q['error'] or q['message']}" for q in bad_nav) or "none")
        )
    lines += ["", "## Plots", "", f"![clean vs noisy]({plot.name})", ""]
    lines += [f"![{n}: top-down]({n}/topdown.png)" for n in runs] + [""]
    md = "\n".join(lines)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(_md_to_html(md))
    return out_dir / "report.md"


def write_report(
    out_dir: Path, raw: dict, results: dict, map_xyz: np.ndarray | None = None, notes: list[str] | None = None
) -> Path:
    """Plots + report.md + report.html in out_dir; returns the report.md path."""
    out_dir = Path(out_dir)
    images = {
        "top-down map": plot_topdown(raw, results, out_dir / "topdown.png", map_xyz).name,
        "latency histograms": plot_latency(raw, out_dir / "latency.png").name,
    }
    heat = plot_heatmaps(out_dir / "heatmaps.npz", out_dir / "heatmaps.png")
    if heat is not None:
        images["relevancy heatmaps (best level, rendered from GT poses)"] = heat.name
    md = markdown(raw, results, images, notes)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(_md_to_html(md))
    return out_dir / "report.md"
