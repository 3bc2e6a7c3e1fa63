"""Every number of an evaluation, recomputed from its raw record (raw.json): ``recompute(raw) -> results``.

The raw record holds the requests, the responses (boxes, goals, paths, answers), round-trip times, errors, the
ground truth boxes, the map status and the per-level pixel measurements of rendered views; this module holds
all scoring rules, so the report never shows a number that the raw record cannot reproduce.
A query that errored or timed out has no response and counts as a miss (it stays in the per-query lists).
What it cannot do: judge answers it has no GT for (free-text answers other than counts).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from lang3d_ros.evaluation.lerf_protocol import score_view_query
from lang3d_ros.geometry.boxes import Box3D, iou_3d
from lang3d_ros.navigation.goal import distance_to_footprint

RAW_FORMAT = "lang3d_ros.eval_raw"
RAW_FORMAT_VERSION = 1
IOU_THRESHOLDS = (0.25, 0.5)
DEFAULT_SETTINGS = {
    "robot_radius_m": 0.3,  # goal collision check on the GT scene (the planner's radius)
    "standoff_tolerance_m": 0.2,  # |goal-to-GT-footprint distance - requested standoff|
    "facing_tolerance_deg": 30.0,  # goal yaw vs direction to the GT box centre
    "path_clearance_m": 0.1,  # path samples must keep this far from GT obstacle footprints
    "path_step_m": 0.05,
    "obstacle_max_height_m": 1.5,  # GT objects whose bottom is below this block the floor
    "start_tolerance_m": 0.35,  # the path must start this close to the requested start
    "reachability_margin_m": 0.05,  # a GT route only a disc under robot_radius_m + this fits through is marginal
    "min_seen_fraction": 0.5,  # "observed" targets: this share of the silhouette once visible (evaluation.visibility)
}


def _rate(hits: list[bool]) -> float:
    return float(np.mean(hits)) if hits else float("nan")


def _gt_boxes(raw: dict) -> dict[int, Box3D]:
    return {int(o["instance_id"]): Box3D.from_dict(o["obb"]) for o in raw["ground_truth"]["objects"]}


def best_iou(objects: list[dict], target_ids: list[int], gt: dict[int, Box3D]) -> float:
    """IoU of the top answer's box with the best-matching target (0 without an answer)."""
    if not objects or not target_ids:
        return 0.0
    pred = Box3D.from_dict(objects[0]["box"])
    return max(iou_3d(pred, gt[i]) for i in target_ids if i in gt) if any(i in gt for i in target_ids) else 0.0


def _score_box_queries(
    entries: list[dict],
    gt: dict[int, Box3D],
    objects_of,
    full_view: set[int] | None = None,
    observed: set[int] | None = None,
) -> dict:
    """Acc@IoU overall and per kind; with ``full_view`` (GT ids once entirely in a camera view) also over the
    queries whose targets all were (``acc@0.25_in_full_view``), with ``observed`` (GT ids the recording showed,
    ``_observed_ids``) over the queries whose targets all were observed (``acc@0.25_observed``), and for the others
    the share answered with no object (``unobserved_not_found``: the right answer about what no frame showed); None
    in raw records without them."""
    per, by_kind = [], {}
    for e in entries:
        resp = e.get("response")
        objs = objects_of(resp) if resp else []
        iou = best_iou(objs, e["target_ids"], gt) if resp else 0.0
        row = {
            "id": e["id"],
            "service": e["service"],
            "kind": e["kind"],
            "text": e["text"],
            "iou": iou,
            "answered_by": (resp or {}).get("answered_by", ""),
            "top_label": objs[0]["label"] if objs else "",
            "n_objects": len(objs),
            "error": e.get("error"),
        }
        for t in IOU_THRESHOLDS:
            row[f"hit@{t}"] = bool(iou >= t)
        if full_view is not None:
            row["target_in_full_view"] = all(i in full_view for i in e["target_ids"])
        if observed is not None:
            row["target_observed"] = all(i in observed for i in e["target_ids"])
        per.append(row)
        by_kind.setdefault(e["kind"], []).append(row)
    out = {
        "n": len(per),
        "per_query": per,
        "misses": [r["id"] for r in per if not r["hit@0.25"]],
        "by_kind": {
            k: {"n": len(v), **{f"acc@{t}": _rate([r[f"hit@{t}"] for r in v]) for t in IOU_THRESHOLDS}}
            for k, v in sorted(by_kind.items())
        },
    }
    for t in IOU_THRESHOLDS:
        out[f"acc@{t}"] = _rate([r[f"hit@{t}"] for r in per])
    seen = [r for r in per if r.get("target_in_full_view")]
    out["n_in_full_view"] = len(seen) if full_view is not None else None
    out["acc@0.25_in_full_view"] = _rate([r["hit@0.25"] for r in seen]) if full_view is not None else None
    obs = [r for r in per if r.get("target_observed")]
    out["n_observed"] = len(obs) if observed is not None else None
    out["acc@0.25_observed"] = _rate([r["hit@0.25"] for r in obs]) if observed is not None else None
    unobs = [r for r in per if r.get("target_observed") is False]
    out["n_unobserved"] = len(unobs) if observed is not None else None
    out["unobserved_not_found"] = _rate([r["n_objects"] == 0 for r in unobs]) if observed is not None else None
    return out


def _observed_ids(raw: dict, min_seen_fraction: float) -> set[int] | None:
    """GT ids whose silhouette the recording once showed by at least ``min_seen_fraction``
    (raw ``ground_truth.seen_fraction``, ``evaluation.visibility.seen_fractions``); None in older records."""
    seen = raw["ground_truth"].get("seen_fraction")
    if seen is None:
        return None
    return {int(i) for i, f in seen.items() if float(f) >= min_seen_fraction}


def _count_observed(entry: dict, observed: set[int] | None) -> bool | None:
    """A count question is on observed objects when it names what it counts (``target_ids``, one per expected
    instance) and all of them were observed; None when that is unknown (no visibility, no target ids)."""
    if observed is None:
        return None
    ids = entry.get("target_ids") or []
    if len(ids) != int(entry["expected_count"]):
        return None
    return all(int(i) in observed for i in ids)


def _ground_objects(resp: dict) -> list[dict]:
    return resp.get("objects", []) if resp.get("success") else []


def _ask_objects(resp: dict) -> list[dict]:
    return resp.get("objects", []) if resp.get("success") else []


_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen "
        "eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update(no=0, none=0, single=1, a=1, an=1)


def answered_count(answer: str) -> int | None:
    """The first count in an answer: digits, a number word up to twenty, or "no" / "none" (0); "a"/"an" count
    as 1 only when no other number is given. None when the answer holds no count."""
    m = re.search(r"\b(\d+)\b", answer)
    if m:
        return int(m.group(1))
    words = re.findall(r"[a-z]+", answer.lower())
    strong = [w for w in words if w in _NUMBER_WORDS and w not in ("a", "an")]
    if strong:
        return _NUMBER_WORDS[strong[0]]
    return 1 if any(w in ("a", "an") for w in words) else None


def score_count(entry: dict) -> bool:
    resp = entry.get("response")
    if not resp or not resp.get("success"):
        return False
    n = answered_count(resp.get("answer", ""))
    return n is not None and n == int(entry["expected_count"])


def count_phrasing(text: str) -> str:
    """The COUNT_PHRASINGS template a count question was written from ("other" when none matches)."""
    from lang3d_ros.evaluation.queries import COUNT_PHRASINGS

    for t in COUNT_PHRASINGS:
        head, _, tail = t.partition("{p}")
        if text.startswith(head) and text.endswith(tail):
            return t.replace("{p}", "X")
    return "other"


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1" if n == 1 else "2+"


def _split_rate(rows: list[dict], key, ok: str) -> dict:
    groups: dict[str, list[bool]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(bool(r[ok]))
    return {k: {"n": len(v), "accuracy": _rate(v)} for k, v in sorted(groups.items())}


def _room_contains(xy: np.ndarray, room: dict, margin_m: float) -> np.ndarray:
    lo, hi = np.asarray(room["min_xyz"][:2]) + margin_m, np.asarray(room["max_xyz"][:2]) - margin_m
    return np.all((xy >= lo) & (xy <= hi), axis=1)


def _obstacles(raw: dict, s: dict) -> list[Box3D | np.ndarray]:
    """GT obstacle footprints: per object whose bottom is below ``obstacle_max_height_m``, the convex hull of its
    mesh below that height (raw ``ground_truth.footprint_xy``, (K, 2) counter-clockwise; a round stool is no
    square), else (older records) its box."""
    hulls = raw["ground_truth"].get("footprint_xy") or {}
    out: list[Box3D | np.ndarray] = []
    for o in raw["ground_truth"]["objects"]:
        b = Box3D.from_dict(o["obb"])
        if b.min_xyz[2] < s["obstacle_max_height_m"]:
            hull = hulls.get(str(o["instance_id"]))
            out.append(np.asarray(hull, dtype=np.float64).reshape(-1, 2) if hull is not None and len(hull) >= 3 else b)
    return out


def distance_to_polygon(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(N,2) points, (K,2) convex polygon (counter-clockwise) -> (N,) distance to it (0 inside)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(poly, dtype=np.float64)
    e = np.roll(a, -1, axis=0) - a  # (K,2) edges
    rel = xy[:, None, :] - a[None]  # (N,K,2)
    t = np.clip(np.einsum("nkd,kd->nk", rel, e) / np.maximum(np.einsum("kd,kd->k", e, e), 1e-18), 0.0, 1.0)
    d = np.linalg.norm(rel - t[..., None] * e[None], axis=2).min(axis=1)
    inside = np.all(e[None, :, 0] * rel[..., 1] - e[None, :, 1] * rel[..., 0] >= 0.0, axis=1)
    return np.where(inside, 0.0, d)


def _clearance_m(xy: np.ndarray, obstacles: list[Box3D | np.ndarray]) -> np.ndarray:
    """(N,2) -> distance to the nearest GT obstacle footprint (inf without obstacles)."""
    if not obstacles:
        return np.full(len(xy), np.inf)
    return np.min(np.stack([_distance_to_obstacle(xy, o) for o in obstacles]), axis=0)


def _distance_to_obstacle(xy: np.ndarray, obstacle: Box3D | np.ndarray) -> np.ndarray:
    """(N,2) -> distance to one footprint: a hull polygon (K, 2) or a box's rectangle."""
    if isinstance(obstacle, np.ndarray):
        return distance_to_polygon(xy, obstacle)
    return distance_to_footprint(xy, obstacle)


def _sample_path(path_xy: np.ndarray, step_m: float) -> np.ndarray:
    pts = [path_xy[:1]]
    for a, b in zip(path_xy[:-1], path_xy[1:]):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / step_m)))
        t = np.linspace(0.0, 1.0, n + 1)[1:, None]
        pts.append(a + t * (b - a))
    return np.concatenate(pts)


GT_GRID_M = 0.02
"""Cell size of the ground-truth reachability grid."""


def gt_reachable(raw: dict, target_ids: list[int], standoff_m: float, s: dict) -> bool | None:
    """Whether a disc of ``robot_radius_m`` can go, keeping its radius from every GT obstacle footprint and the
    walls all the way, from the start to a point ``standoff_m`` +- ``standoff_tolerance_m`` from a GT target's
    footprint (on a ``GT_GRID_M`` grid, 4-connected; the start is the nearest free cell within
    ``start_tolerance_m``). A passage within a cell of the robot's diameter may be judged either way. None when no
    target is in the GT."""
    gt = _gt_boxes(raw)
    targets = [gt[i] for i in target_ids if i in gt]
    if not targets:
        return None
    from scipy.ndimage import label

    room = raw["ground_truth"]["room"]
    lo, hi = np.asarray(room["min_xyz"][:2], float), np.asarray(room["max_xyz"][:2], float)
    half = GT_GRID_M / 2
    gx, gy = np.meshgrid(np.arange(lo[0] + half, hi[0], GT_GRID_M), np.arange(lo[1] + half, hi[1], GT_GRID_M))
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1)
    r = float(s["robot_radius_m"])
    free = (_clearance_m(xy, _obstacles(raw, s)) >= r) & _room_contains(xy, room, r)
    start = np.asarray(raw["start_xy_yaw"][:2], dtype=np.float64)
    d_start = np.linalg.norm(xy - start, axis=1)
    near = free & (d_start <= float(s["start_tolerance_m"]))
    if not near.any():
        return False
    comp, _ = label(free.reshape(gx.shape))
    comp = comp.ravel()
    start_comp = comp[np.flatnonzero(near)[np.argmin(d_start[near])]]
    d_target = np.min(np.stack([distance_to_footprint(xy, b) for b in targets]), axis=0)
    goal = free & (np.abs(d_target - standoff_m) <= float(s["standoff_tolerance_m"]))
    return bool(np.any(comp[goal] == start_comp))


def said_unreachable(resp: dict) -> bool:
    """A Navigate answer that found its target but reports it unreachable (error code, or the message of a raw
    record written before error codes were recorded)."""
    from lang3d_ros.errors import ErrorCode

    code = resp.get("error_code")
    if code is not None:
        return int(code) == int(ErrorCode.UNREACHABLE)
    return not resp.get("success") and "unreachable" in str(resp.get("message", ""))


def score_navigation(entry: dict, raw: dict, gt: dict[int, Box3D], s: dict) -> dict:
    """Goal validity on the GT scene: collision-free (robot disc vs GT footprints and walls), standoff within
    tolerance of the GT target's footprint, facing the GT box centre, path from the start to the goal clear.
    An answer that found the target (IoU >= 0.25) and says it is unreachable is valid when the GT agrees
    (``gt_reachable``), or when the GT's only routes are marginal (``gt_marginal``: none is left for a disc
    ``reachability_margin_m`` wider, one navigation grid cell: a map with 5 cm cells and centimetre depth noise
    cannot resolve such a gap, either answer is right); invalid otherwise."""
    resp = entry.get("response") or {}
    row = {
        "id": entry["id"],
        "text": entry["text"],
        "success": bool(resp.get("success")),
        "message": resp.get("message", ""),
        "error": entry.get("error"),
        "collision_free": False,
        "standoff_ok": False,
        "facing": False,
        "path_connected": False,
        "standoff_error_m": None,
        "facing_error_deg": None,
        "target_iou": 0.0,
    }
    tgt = resp.get("target")
    if tgt and tgt.get("box"):
        row["target_iou"] = best_iou([tgt], entry["target_ids"], gt)
    want = float(entry.get("standoff_m") or raw.get("standoff_m", 0.6))
    if not row["success"] or not resp.get("goal"):
        row["valid"] = False
        if said_unreachable(resp) and row["target_iou"] >= IOU_THRESHOLDS[0]:
            row["gt_reachable"] = gt_reachable(raw, entry["target_ids"], want, s)
            row["gt_marginal"] = bool(row["gt_reachable"]) and not gt_reachable(
                raw,
                entry["target_ids"],
                want,
                dict(s, robot_radius_m=float(s["robot_radius_m"]) + float(s["reachability_margin_m"])),
            )
            row["valid"] = row["gt_reachable"] is False or row["gt_marginal"]
        return row
    g = resp["goal"]
    goal_xy = np.array([[g["x"], g["y"]]])
    obstacles = _obstacles(raw, s)
    room = raw["ground_truth"]["room"]
    row["collision_free"] = bool(
        _clearance_m(goal_xy, obstacles)[0] >= s["robot_radius_m"]
        and _room_contains(goal_xy, room, s["robot_radius_m"])[0]
    )
    gt_boxes = [gt[i] for i in entry["target_ids"] if i in gt]
    if gt_boxes:
        d = min(float(distance_to_footprint(goal_xy, b)[0]) for b in gt_boxes)
        row["standoff_error_m"] = abs(d - want)
        row["standoff_ok"] = bool(row["standoff_error_m"] <= s["standoff_tolerance_m"])
        c = gt_boxes[0].center
        err = (g["yaw"] - math.atan2(c[1] - g["y"], c[0] - g["x"]) + math.pi) % (2 * math.pi) - math.pi
        row["facing_error_deg"] = abs(math.degrees(err))
        row["facing"] = bool(row["facing_error_deg"] <= s["facing_tolerance_deg"])
    path = np.asarray(resp.get("path") or [], dtype=np.float64).reshape(-1, 2)
    start = np.asarray(raw["start_xy_yaw"][:2], dtype=np.float64)
    if (
        len(path) >= 1
        and np.linalg.norm(path[-1] - goal_xy[0]) < 1e-3
        and np.linalg.norm(path[0] - start) <= s["start_tolerance_m"]
    ):
        samples = _sample_path(path, s["path_step_m"])
        row["path_connected"] = bool(
            np.all(_clearance_m(samples, obstacles) >= s["path_clearance_m"])
            and np.all(_room_contains(samples, room, 0.0))
        )
    row["valid"] = bool(row["collision_free"] and row["standoff_ok"] and row["facing"] and row["path_connected"])
    return row


def latency_stats(samples_ms: list[float]) -> dict:
    a = np.asarray([x for x in samples_ms if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(a) == 0:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
    return {
        "n": int(len(a)),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


def _mean_or_none(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def score_views(raw: dict) -> dict:
    per, hits, ious = [], [], []
    for view in raw.get("views", []):
        for q in view["queries"]:
            if q.get("error") or not q.get("levels"):
                hit, iou, lvl = False, 0.0, -1
            else:
                hit, iou, lvl = score_view_query(q["levels"], q["gt_boxes_xyxy"])
            hits.append(hit)
            ious.append(iou)
            per.append(
                {
                    "view": view["view"],
                    "label": q["label"],
                    "hit": hit,
                    "iou": iou,
                    "level": lvl,
                    "error": q.get("error"),
                }
            )
    return {"n": len(per), "localization_accuracy": _rate(hits), "miou": _rate(ious), "per_view_query": per}


def recompute(raw: dict) -> dict:
    """raw record -> results (every number of results.json and the report)."""
    if raw.get("format") != RAW_FORMAT or raw.get("format_version") != RAW_FORMAT_VERSION:
        raise ValueError(f"not a {RAW_FORMAT} v{RAW_FORMAT_VERSION} record")
    s = dict(DEFAULT_SETTINGS, **raw.get("settings", {}))
    gt = _gt_boxes(raw)
    seen = raw["ground_truth"].get("in_full_view")
    full_view = {int(i) for i in seen} if seen is not None else None
    observed = _observed_ids(raw, float(s["min_seen_fraction"]))
    entries = raw["queries"]
    ground = [e for e in entries if e["service"] == "ground"]
    asks_box = [e for e in entries if e["service"] == "ask" and e["kind"] != "count"]
    counts = [e for e in entries if e["service"] == "ask" and e["kind"] == "count"]
    navs = [e for e in entries if e["service"] == "navigate"]
    relational = _score_box_queries(
        [e for e in ground + asks_box if e["kind"] == "relation"],
        gt,
        lambda r: r.get("objects", []) if r.get("success") else [],
    )
    relational["answered_by"] = dict(Counter(r["answered_by"] or "none" for r in relational["per_query"]))
    count_rows = [
        {
            "id": e["id"],
            "text": e["text"],
            "expected": e["expected_count"],
            "answer": (e.get("response") or {}).get("answer", ""),
            "correct": score_count(e),
            "phrasing": count_phrasing(e["text"]),
            "observed": _count_observed(e, observed),
            "error": e.get("error"),
        }
        for e in counts
    ]
    nav_rows = [
        dict(
            score_navigation(e, raw, gt, s),
            kind=e["kind"],
            target_observed=None if observed is None else all(int(i) in observed for i in e["target_ids"]),
        )
        for e in navs
    ]
    by_service: dict[str, list[float]] = {}
    for e in entries:
        by_service.setdefault(e["service"], []).append(e.get("latency_ms"))
    by_service["get_map_status"] = [c.get("latency_ms") for c in raw.get("status_calls", [])]
    if raw.get("save_map", {}).get("latency_ms") is not None:
        by_service["save_map"] = [raw["save_map"]["latency_ms"]]
    server_ground = [(e.get("response") or {}).get("latency_ms") for e in ground if e.get("response")]
    st = raw.get("mapping", {}).get("final_status") or {}
    results = {
        "grounding": _score_box_queries(ground, gt, _ground_objects, full_view, observed),
        "relational": relational,
        "ask": {
            "boxes": _score_box_queries(asks_box, gt, _ask_objects),
            "counts": {
                "n": len(count_rows),
                "accuracy": _rate([r["correct"] for r in count_rows]),
                "n_observed": sum(r["observed"] is True for r in count_rows) if observed is not None else None,
                "accuracy_observed": _rate([r["correct"] for r in count_rows if r["observed"]])
                if observed is not None
                else None,
                "by_expected": _split_rate(count_rows, lambda r: _bucket(int(r["expected"])), "correct"),
                "by_phrasing": _split_rate(count_rows, lambda r: r["phrasing"], "correct"),
                "per_query": count_rows,
            },
        },
        "navigation": {
            "n": len(nav_rows),
            "validity": _rate([r["valid"] for r in nav_rows]),
            "validity_strict": _rate([r["valid"] and not r.get("gt_marginal") for r in nav_rows]),
            "n_marginal": sum(bool(r.get("gt_marginal")) for r in nav_rows),
            "by_kind": _split_rate(nav_rows, lambda r: r["kind"], "valid"),
            "validity_target_found": _rate([r["valid"] for r in nav_rows if r["target_iou"] >= 0.25]),
            "n_observed": sum(bool(r["target_observed"]) for r in nav_rows) if observed is not None else None,
            "validity_observed": _rate([r["valid"] for r in nav_rows if r["target_observed"]])
            if observed is not None
            else None,
            "n_target_found": sum(r["target_iou"] >= 0.25 for r in nav_rows),
            "success_rate": _rate([r["success"] for r in nav_rows]),
            "per_query": nav_rows,
            "settings": {
                k: s[k]
                for k in (
                    "robot_radius_m",
                    "standoff_tolerance_m",
                    "facing_tolerance_deg",
                    "path_clearance_m",
                    "reachability_margin_m",
                )
            },
        },
        "lerf": score_views(raw),
        "lerf_gaussians": dict(
            score_views({"views": raw.get("views_gaussians", [])}),
            heldout_psnr_db=_mean_or_none([v.get("heldout_psnr_db") for v in raw.get("views_gaussians", [])]),
        ),
        "latency_ms": {k: latency_stats(v) for k, v in sorted(by_service.items())},
        "server_ground_latency_ms": latency_stats(server_ground),
        "frames": {
            k: st.get(k)
            for k in (
                "frames_received",
                "frames_fused",
                "frames_dropped",
                "frames_rejected",
                "keyframes",
                "num_points",
                "num_gaussians",
                "training_state",
            )
        },
        "intake_summary": raw.get("mapping", {}).get("intake_summary"),
        "mapping_wait_s": raw.get("mapping", {}).get("wait_s"),
        "memory": {"mapper_peak_mb": raw.get("memory", {}).get("mapper_vmhwm_mb")},
        "errors": [
            {"id": e["id"], "service": e["service"], "text": e["text"], "error": e["error"]}
            for e in entries
            if e.get("error")
        ]
        + [
            {"id": "mapping", "service": "mapping", "text": "", "error": m}
            for m in raw.get("mapping", {}).get("errors", [])
        ],
    }
    results["summary"] = headline(results, raw)
    return results


HEADLINE_KINDS = ("label", "attribute", "relation", "resting")


def headline(results: dict, raw: dict) -> dict:
    """The figures the issue's targets name, flat (side-by-side tables read them): Ground Acc@0.25 overall and per
    kind, count accuracy, navigation validity, LERF localization and mIoU, map size and mapper peak memory."""
    g = results["grounding"]
    out = {"ground_acc@0.25": g["acc@0.25"], "ground_acc@0.5": g["acc@0.5"], "ground_n": g["n"]}
    out["ground_in_full_view_acc@0.25"] = g.get("acc@0.25_in_full_view")
    out["ground_in_full_view_n"] = g.get("n_in_full_view")
    out["ground_observed_acc@0.25"] = g.get("acc@0.25_observed")
    out["ground_observed_n"] = g.get("n_observed")
    out["ground_unobserved_not_found"] = g.get("unobserved_not_found")
    out["ground_unobserved_n"] = g.get("n_unobserved")
    for k in HEADLINE_KINDS:
        v = g["by_kind"].get(k, {"n": 0, "acc@0.25": float("nan")})
        out[f"ground_{k}_acc@0.25"], out[f"ground_{k}_n"] = v["acc@0.25"], v["n"]
    c, nav, lerf = results["ask"]["counts"], results["navigation"], results["lerf"]
    out.update(
        {
            "count_accuracy": c["accuracy"],
            "count_n": c["n"],
            "count_accuracy_observed": c.get("accuracy_observed"),
            "count_n_observed": c.get("n_observed"),
            "navigation_validity": nav["validity"],
            "navigation_validity_strict": nav["validity_strict"],
            "navigation_n_marginal": nav["n_marginal"],
            "navigation_n": nav["n"],
            "navigation_validity_observed": nav.get("validity_observed"),
            "navigation_n_observed": nav.get("n_observed"),
            "navigation_validity_target_found": nav["validity_target_found"],
            "navigation_n_target_found": nav["n_target_found"],
            "lerf_localization": lerf["localization_accuracy"],
            "lerf_miou": lerf["miou"],
            "lerf_n": lerf["n"],
            "num_points": results["frames"].get("num_points"),
            "keyframes": results["frames"].get("keyframes"),
            "map_file_mb": (raw.get("save_map") or {}).get("size_bytes", 0) / 2**20 or None,
            "mapper_peak_mb": results["memory"]["mapper_peak_mb"],
            "errors": len(results["errors"]),
        }
    )
    return out


def _close(a, b, path: str, tol: float, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            _close(a.get(k), b.get(k), f"{path}.{k}", tol, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} entries")
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]", tol, out)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (math.isnan(a) and math.isnan(b)) and abs(a - b) > tol * max(1.0, abs(a)):
            out.append(f"{path}: {a} vs {b}")
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}")


def differences(a: dict, b: dict, tol: float = 1e-9) -> list[str]:
    """Paths where two results differ (numbers beyond a relative tol); [] when they agree."""
    out: list[str] = []
    _close(a, b, "results", tol, out)
    return out
