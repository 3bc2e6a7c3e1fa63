"""The periodic maintenance pass: merge segments that are one object, drop segments that are not real.

Merge (same level, features agree to ``merge_min_cosine``) when either
- one mask covered both more often than two masks of one frame covered them separately (co-observation: an
  object that some keyframes over-segmented), or
- their margin-grown AABBs overlap by ``merge_min_box_overlap`` of the smaller one and no frame ever showed them
  apart (ConceptGraphs' geometric + semantic merge, guarded so that touching neighbours seen apart stay two).
The merged segment keeps the oldest id. Once ``drop_after_keyframes`` have passed since a segment appeared, drop
it when it holds fewer than ``min_points`` points, or when it was matched in fewer than ``drop_min_observations``
keyframes although two more had it in view, or in fewer than ``drop_min_detection_ratio`` of the keyframes that
had it in view (a segment of a confused or split mask: its object's points are in view again and again, its
masks rarely recur). An object seen once and never again in view stays.
The caller relabels the points with the returned lookup tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lang3d_ros.instances.associate import CoObservation
from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.table import SegmentTable


@dataclass
class MaintenanceResult:
    """merged: segments merged into another; dropped: segments removed; lut: (next_id,) int32 old id -> new id
    (-1 dropped), for ``PointMap.relabel`` (the same table serves every level: ids are unique across levels)."""

    merged: int
    dropped: int
    lut: np.ndarray


def _find(parent: dict[int, int], a: int) -> int:
    while parent.get(a, a) != a:
        parent[a] = parent.get(parent[a], parent[a])
        a = parent[a]
    return a


def _coobserved_pairs(table: SegmentTable, coobs: CoObservation, cfg: InstanceConfig) -> list[tuple[int, int]]:
    """Pairs covered by one mask more often than apart (``merge_min_together``, ``merge_together_ratio``), of one
    level, whose features agree."""
    if not coobs.counts:
        return []
    keys = np.fromiter((k for pair in coobs.counts for k in pair), np.int64, 2 * len(coobs.counts)).reshape(-1, 2)
    vals = np.stack(list(coobs.counts.values())).astype(np.int64)
    together, apart = vals[:, 0], vals[:, 1]
    ok = (together >= cfg.merge_min_together) & (together > cfg.merge_together_ratio * (together + apart))
    keys = keys[ok]
    ra, rb = table.row_of(keys[:, 0]), table.row_of(keys[:, 1])
    ok = (ra >= 0) & (rb >= 0)
    keys, ra, rb = keys[ok], ra[ok], rb[ok]
    ok = table.level[ra] == table.level[rb]
    keys, ra, rb = keys[ok], ra[ok], rb[ok]
    agree = np.einsum("kd,kd->k", table.unit_features(ra), table.unit_features(rb)) >= cfg.merge_min_cosine
    return [(int(a), int(b)) for a, b in keys[agree].tolist()]


def _overlapping_pairs(lo: np.ndarray, hi: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of boxes lo/hi (K, 3) whose intersection holds ``min_fraction`` of the smaller box's
    volume. Sort and sweep along x: only boxes whose x-intervals overlap are compared (about K log K + pairs, not
    K^2); the kept pairs are the all-pairs test's."""
    if min_fraction <= 0:  # every pair qualifies, even boxes that do not touch
        return np.triu_indices(len(lo), 1)
    order = np.argsort(lo[:, 0], kind="stable")
    lo_s, hi_s = lo[order], hi[order]
    end = np.searchsorted(lo_s[:, 0], hi_s[:, 0], side="right")  # boxes starting before i's x-interval ends
    n_after = np.maximum(end - np.arange(len(order)) - 1, 0)
    i = np.repeat(np.arange(len(order)), n_after)
    j = i + 1 + (np.arange(len(i)) - np.repeat(np.cumsum(n_after) - n_after, n_after))
    inter = np.prod(np.clip(np.minimum(hi_s[i], hi_s[j]) - np.maximum(lo_s[i], lo_s[j]), 0, None), 1)
    vol = np.prod(hi_s - lo_s, axis=1)
    keep = inter >= min_fraction * np.minimum(vol[i], vol[j])
    a, b = order[i[keep]], order[j[keep]]
    return np.minimum(a, b), np.maximum(a, b)


def merge_candidates(table: SegmentTable, coobs: CoObservation, config: InstanceConfig) -> list[tuple[int, int]]:
    """Pairs of ids (a, b) to merge, by co-observation and by box overlap (see the module docstring)."""
    cfg = config
    pairs = _coobserved_pairs(table, coobs, cfg)
    for level in np.unique(table.level):
        rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
        if len(rows) < 2:
            continue
        lo = table.aabb_min[rows].astype(np.float64) - cfg.box_margin_m
        hi = table.aabb_max[rows].astype(np.float64) + cfg.box_margin_m
        ia, ib = _overlapping_pairs(lo, hi, cfg.merge_min_box_overlap)
        unit_a, unit_b = table.unit_features(rows[ia]), table.unit_features(rows[ib])
        agree = np.einsum("kd,kd->k", unit_a, unit_b) >= cfg.merge_min_cosine
        for i, j in zip(ia[agree].tolist(), ib[agree].tolist()):
            ida, idb = int(table.ids[rows[i]]), int(table.ids[rows[j]])
            if coobs.get(ida, idb)[1] == 0:
                pairs.append((ida, idb))
    return pairs


def maintain(
    table: SegmentTable,
    coobs: CoObservation,
    config: InstanceConfig,
    keyframe: int,
    in_view: dict[int, int] | None = None,
) -> MaintenanceResult:
    """Merge and drop (table and co-observations updated in place); returns the relabel table for the points.
    Needs fresh ``n_points`` and boxes (``refresh_stats`` first). in_view: segment id -> keyframes in which it was
    matched or its points were in view (None: only the observation count decides)."""
    cfg = config
    lut = np.arange(table.next_id, dtype=np.int32)
    parent: dict[int, int] = {}
    for a, b in merge_candidates(table, coobs, cfg):
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    merged = 0
    if parent:
        groups: dict[int, list[int]] = {}
        for i in list(parent):
            groups.setdefault(_find(parent, i), []).append(i)
        keep = np.ones(len(table), bool)
        for root, members in groups.items():
            r_root = int(table.row_of(np.array([root]))[0])
            r_mem = table.row_of(np.array(members))
            rows = np.concatenate([[r_root], r_mem])
            w = table.feature_weight[rows].astype(np.float32)
            f = (table.unit_features(rows) * w[:, None]).sum(0)
            table.feature[r_root] = (f / max(float(np.linalg.norm(f)), 1e-8)).astype(np.float16)
            table.feature_weight[r_root] = w.sum()
            table.n_observations[r_root] = table.n_observations[rows].max()
            table.n_points[r_root] = table.n_points[rows].sum()
            table.first_seen_ns[r_root] = table.first_seen_ns[rows].min()
            table.last_seen_ns[r_root] = table.last_seen_ns[rows].max()
            table.first_keyframe[r_root] = table.first_keyframe[rows].min()
            table.last_keyframe[r_root] = table.last_keyframe[rows].max()
            table.aabb_min[r_root] = table.aabb_min[rows].min(0)
            table.aabb_max[r_root] = table.aabb_max[rows].max(0)
            keep[r_mem] = False
            lut[members] = root
            merged += len(members)
        table.keep(keep)
    age = keyframe - table.first_keyframe
    if in_view is None:
        chances = table.n_observations.astype(np.float64)
    else:
        chances = np.array([in_view.get(int(i), 0) for i in table.ids.tolist()], np.float64).reshape(-1)
        chances = np.maximum(chances, table.n_observations)
    # seen too rarely to be real: matched in few of the keyframes that had it in view (a confused or split mask's
    # segment is in view whenever its object is, and rarely matched again); an object seen once and never since
    # stays until a later keyframe looks at it
    rare = (table.n_observations < cfg.drop_min_observations) & (chances >= cfg.drop_min_observations + 2)
    rare |= table.n_observations < cfg.drop_min_detection_ratio * chances
    weak = rare | (table.n_points < cfg.min_points)
    drop = (age >= cfg.drop_after_keyframes) & weak
    dropped_ids = table.ids[drop]
    lut[dropped_ids] = -1
    lut[lut >= 0] = np.where(np.isin(lut[lut >= 0], dropped_ids), -1, lut[lut >= 0])
    if drop.any():
        table.keep(~drop)
    coobs.remap({int(i): int(v) for i, v in enumerate(lut.tolist()) if v != i})
    return MaintenanceResult(merged, int(drop.sum()), lut)
