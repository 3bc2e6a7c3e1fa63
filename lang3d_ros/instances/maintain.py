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


def merge_candidates(table: SegmentTable, coobs: CoObservation, config: InstanceConfig) -> list[tuple[int, int]]:
    """Pairs of ids (a, b) to merge, by co-observation and by box overlap (see the module docstring)."""
    cfg = config
    pairs: list[tuple[int, int]] = []
    for (a, b), (together, apart) in ((k, v.tolist()) for k, v in coobs.counts.items()):
        if together < cfg.merge_min_together or together <= cfg.merge_together_ratio * (together + apart):
            continue
        ra, rb = table.row_of(np.array([a, b]))
        if ra < 0 or rb < 0 or table.level[ra] != table.level[rb]:
            continue
        fa, fb = table.unit_features(np.array([ra, rb]))
        if float(fa @ fb) >= cfg.merge_min_cosine:
            pairs.append((a, b))
    for level in np.unique(table.level):
        rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
        if len(rows) < 2:
            continue
        lo = table.aabb_min[rows].astype(np.float64) - cfg.box_margin_m
        hi = table.aabb_max[rows].astype(np.float64) + cfg.box_margin_m
        vol = np.prod(hi - lo, axis=1)
        unit = table.unit_features(rows)
        for s0 in range(0, len(rows), 512):
            a = slice(s0, s0 + 512)
            inter = np.prod(np.clip(np.minimum(hi[a, None], hi[None]) - np.maximum(lo[a, None], lo[None]), 0, None), 2)
            frac = inter / np.minimum(vol[a, None], vol[None])
            ia, ib = np.nonzero(frac >= cfg.merge_min_box_overlap)
            ia += s0
            upper = ia < ib
            ia, ib = ia[upper], ib[upper]
            agree = np.einsum("kd,kd->k", unit[ia], unit[ib]) >= cfg.merge_min_cosine
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
