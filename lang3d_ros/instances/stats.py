"""Segment statistics refreshed from the labelled points: counts, robust boxes, colour, support.

O(N) bincounts for counts and moments; percentiles per segment come from one sort per quantity over a bounded
sample of the points (at most ``max_sample`` per level, evenly strided), so a refresh costs the same at 1M
points as at 300k. Runs on the mapping worker after keyframes, never in the query path. What it cannot do: a
segment made of two far-apart pieces (a mislabelled stray) gets a box spanning both unless the stray is under
``box_percentile`` of its points.
"""
from __future__ import annotations

import numpy as np

from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.table import SegmentTable


def group_quantiles(groups: np.ndarray, values: np.ndarray, n_groups: int, qs: tuple[float, ...]) -> np.ndarray:
    """groups (K,) int64 in [0, n_groups), values (K,) float -> (n_groups, len(qs)) per-group quantiles
    (nearest rank; NaN for empty groups)."""
    out = np.full((n_groups, len(qs)), np.nan, np.float64)
    if len(groups) == 0:
        return out
    order = np.lexsort((values, groups))
    g_sorted = groups[order]
    v_sorted = values[order]
    counts = np.bincount(g_sorted, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    for j, q in enumerate(qs):
        idx = starts[has] + np.floor(q * (counts[has] - 1)).astype(np.int64)
        out[has, j] = v_sorted[idx]
    return out


def refresh_stats(table: SegmentTable, labels_by_level: list[np.ndarray], xyz: np.ndarray, rgb: np.ndarray,
                  config: InstanceConfig, max_sample: int = 300_000) -> None:
    """Recompute n_points, boxes and colour of every row from the points, then support.

    labels_by_level: per level (N,) int32 segment id of each point (-1 none); xyz (N, 3) float32 map frame;
    rgb (N, 3) float32 in [0, 1]. Rows without points keep their previous boxes and get n_points 0.
    """
    s = len(table)
    table.n_points[:] = 0
    if s == 0:
        return
    p_lo, p_hi = config.box_percentile / 100.0, 1.0 - config.box_percentile / 100.0
    n = xyz.shape[0]
    step = max(1, -(-n // max_sample))
    for labels in labels_by_level:
        rows_all = table.row_of(labels)
        has = rows_all >= 0
        table.n_points += np.bincount(rows_all[has], minlength=s).astype(np.int32)
        sample = np.zeros(n, bool)
        sample[::step] = True
        pick = np.flatnonzero(has & sample)
        # small segments the stride would starve: take all their points
        small = table.n_points < 64 * step
        if step > 1 and small.any():
            pick = np.union1d(pick, np.flatnonzero(has & small[np.maximum(rows_all, 0)]))
        if len(pick) == 0:
            continue
        g = rows_all[pick]
        p = xyz[pick].astype(np.float64)
        present = np.bincount(g, minlength=s) > 0
        # axis-aligned box
        lo = np.zeros((s, 3))
        hi = np.zeros((s, 3))
        for k in range(3):
            q = group_quantiles(g, p[:, k], s, (p_lo, p_hi))
            lo[:, k], hi[:, k] = q[:, 0], q[:, 1]
        # gravity-aligned box: yaw of the xy principal axis from per-segment second moments
        cnt = np.maximum(np.bincount(g, minlength=s), 1)
        mx = np.bincount(g, p[:, 0], s) / cnt
        my = np.bincount(g, p[:, 1], s) / cnt
        dx, dy = p[:, 0] - mx[g], p[:, 1] - my[g]
        sxx = np.bincount(g, dx * dx, s)
        syy = np.bincount(g, dy * dy, s)
        sxy = np.bincount(g, dx * dy, s)
        yaw = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)
        c, sn = np.cos(yaw)[g], np.sin(yaw)[g]
        u = c * p[:, 0] + sn * p[:, 1]
        v = -sn * p[:, 0] + c * p[:, 1]
        qu = group_quantiles(g, u, s, (p_lo, p_hi))
        qv = group_quantiles(g, v, s, (p_lo, p_hi))
        uc, vc = qu.mean(1), qv.mean(1)
        cy, sy = np.cos(yaw), np.sin(yaw)
        center = np.stack([cy * uc - sy * vc, sy * uc + cy * vc, 0.5 * (lo[:, 2] + hi[:, 2])], 1)
        size = np.stack([qu[:, 1] - qu[:, 0], qv[:, 1] - qv[:, 0], hi[:, 2] - lo[:, 2]], 1)
        # colour: median chromaticity times median brightness (a shaded face moves brightness, not chromaticity)
        col = rgb[pick].astype(np.float64)
        bright = col.mean(1)
        chroma = col / np.maximum(col.sum(1, keepdims=True), 1e-6)
        med_b = group_quantiles(g, bright, s, (0.5,))[:, 0]
        med_c = np.stack([group_quantiles(g, chroma[:, k], s, (0.5,))[:, 0] for k in range(3)], 1)
        med_c /= np.maximum(med_c.sum(1, keepdims=True), 1e-6)
        color = np.clip(med_c * 3.0 * med_b[:, None], 0.0, 1.0)
        r = np.flatnonzero(present)
        table.aabb_min[r], table.aabb_max[r] = lo[r], hi[r]
        table.obb_center[r], table.obb_size[r], table.obb_yaw_rad[r] = center[r], size[r], yaw[r]
        table.color_rgb[r] = color[r]
    compute_support(table, config)


def compute_support(table: SegmentTable, config: InstanceConfig) -> None:
    """support_id of each row: among same-level segments whose box top is within ``support_max_gap_m`` of
    this one's bottom and whose footprint (xy AABB) holds at least ``support_min_footprint_overlap`` of this
    one's footprint, the one with the highest top; -1 if none. Boxes only: a chair pushed under a table's top
    is not "on" it because its bottom is far below the top."""
    table.support_id[:] = -1
    for level in np.unique(table.level):
        rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
        if len(rows) < 2:
            continue
        lo, hi = table.aabb_min[rows].astype(np.float64), table.aabb_max[rows].astype(np.float64)
        area = np.maximum((hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1]), 1e-6)
        for s0 in range(0, len(rows), 512):
            a = slice(s0, s0 + 512)
            gap = np.abs(lo[a, None, 2] - hi[None, :, 2])  # (a, b): a's bottom vs b's top
            ixy = np.minimum(hi[a, None, :2], hi[None, :, :2]) - np.maximum(lo[a, None, :2], lo[None, :, :2])
            ixy = np.clip(ixy, 0, None)
            ix, iy = ixy[..., 0], ixy[..., 1]
            ok = (gap <= config.support_max_gap_m) & (ix * iy / area[a, None] >= config.support_min_footprint_overlap)
            ok &= hi[None, :, 2] < hi[a, None, 2]  # the support's top is below this one's top
            ok[np.arange(ok.shape[0]), np.arange(s0, s0 + ok.shape[0])] = False
            top = np.where(ok, hi[None, :, 2], -np.inf)
            best = np.argmax(top, axis=1)
            has = ok.any(1)
            table.support_id[rows[a][has]] = table.ids[rows[best[has]]]
