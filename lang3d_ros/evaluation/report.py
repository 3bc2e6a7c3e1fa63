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
        ("Relational Acc@0.25 / Acc@0.5", f"{_pct(rel['acc@0.25'])} / {_pct(rel['acc@0.5'])} (n={rel['n']}, answered by {rel['answered_by']})"),
        ("Ask (boxes) Acc@0.25", f"{_pct(r['ask']['boxes']['acc@0.25'])} (n={r['ask']['boxes']['n']})"),
        ("Ask (counts) accuracy", f"{_pct(r['ask']['counts']['accuracy'])} (n={r['ask']['counts']['n']})"),
        ("Navigation goal validity", f"{_pct(nav['validity'])} (n={nav['n']}, planner success {_pct(nav['success_rate'])})"),
        ("LERF localization accuracy", f"{_pct(lerf['localization_accuracy'])} (n={lerf['n']} view-queries)"),
        ("LERF mIoU", _f(lerf["miou"])),
    ]
    for name, st in lat.items():
        rows.append((f"latency {name} p50 / p95 (ms)", f"{_f(st['p50'], 1)} / {_f(st['p95'], 1)} (n={st['n']})"))
    fr = r["frames"]
    rows.append(("frames received / fused / dropped / rejected", f"{fr['frames_received']} / {fr['frames_fused']} / {fr['frames_dropped']} / {fr['frames_rejected']}"))
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
    lines = ["# lang3d evaluation report", "",
             f"Bag: `{raw['run']['bag']}`  ", f"Ground truth: `{raw['run']['ground_truth']}`  ",
             f"Replay rate: {raw['run']['rate']}x; every number below is recomputed from `raw.json` by "
             "`lang3d_ros.evaluation.metrics.recompute` (the CLI checks it matches `results.json`).", ""]
    for n in notes or []:
        lines.append(f"> {n}")
    if notes:
        lines.append("")
    lines += ["## Summary", "", _table(["metric", "value"], [list(x) for x in _summary_rows(r)]), ""]
    lines += ["## Grounding (Ground service)", "",
              _table(["id", "kind", "query", "top label", "answered by", "IoU", "@0.25", "@0.5", "error"],
                     [[q["id"], q["kind"], q["text"], q["top_label"], q["answered_by"], _f(q["iou"]), q["hit@0.25"], q["hit@0.5"], q["error"] or ""]
                      for q in r["grounding"]["per_query"]]), ""]
    lines += ["By kind: " + ", ".join(f"{k}: {_pct(v['acc@0.25'])} @0.25 (n={v['n']})" for k, v in r["grounding"]["by_kind"].items()), ""]
    lines += ["## Navigation (Navigate service, checked on the GT scene)", "",
              _table(["id", "instruction", "success", "collision-free", "standoff ok (err m)", "facing (err deg)", "path connected", "valid", "message / error"],
                     [[q["id"], q["text"], q["success"], q["collision_free"], f"{q['standoff_ok']} ({_f(q['standoff_error_m'], 2)})",
                       f"{q['facing']} ({_f(q['facing_error_deg'], 1)})", q["path_connected"], q["valid"], q["error"] or q["message"]]
                      for q in r["navigation"]["per_query"]]), ""]
    lines += ["## Ask", "",
              _table(["id", "question", "expected", "answer", "correct", "error"],
                     [[q["id"], q["text"], q["expected"], q["answer"], q["correct"], q["error"] or ""] for q in r["ask"]["counts"]["per_query"]]
                     + [[q["id"], q["text"], "GT box", q["top_label"], q["hit@0.25"], q["error"] or ""] for q in r["ask"]["boxes"]["per_query"]]), ""]
    lines += ["## Rendered views (LERF protocol on the fused map's relevancy)", "",
              _table(["view", "label", "localization hit", "IoU", "level", "error"],
                     [[q["view"], q["label"], q["hit"], _f(q["iou"]), q["level"], q["error"] or ""] for q in r["lerf"]["per_view_query"]]), ""]
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
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>" for c in r) + "</tr>"
                for i, r in enumerate(rows)) + "</table>")
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
            out.append(f'<p><img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}" style="max-width:100%"></p>')
        elif line.startswith("> "):
            out.append(f"<blockquote>{html.escape(line[2:])}</blockquote>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{html.escape(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.rstrip())}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>lang3d evaluation report</title><style>{style}</style></head><body>{''.join(out)}</body></html>"


def write_report(out_dir: Path, raw: dict, results: dict, map_xyz: np.ndarray | None = None, notes: list[str] | None = None) -> Path:
    """Plots + report.md + report.html in out_dir; returns the report.md path."""
    out_dir = Path(out_dir)
    images = {"top-down map": plot_topdown(raw, results, out_dir / "topdown.png", map_xyz).name,
              "latency histograms": plot_latency(raw, out_dir / "latency.png").name}
    heat = plot_heatmaps(out_dir / "heatmaps.npz", out_dir / "heatmaps.png")
    if heat is not None:
        images["relevancy heatmaps (best level, rendered from GT poses)"] = heat.name
    md = markdown(raw, results, images, notes)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(_md_to_html(md))
    return out_dir / "report.md"
