"""Segment statistics refreshed from the labelled points: counts, robust boxes, colour, support.

O(N) bincounts for counts and moments; percentiles per segment come from one sort per quantity over a bounded
sample of the points (at most ``max_sample`` per level, evenly strided), so a refresh costs about the same at 1M
points as at 150k. Runs on the mapping worker after keyframes, never in the query path. What it cannot do: a
segment made of two far-apart pieces (a mislabelled stray) gets a box spanning both unless the stray is under
``box_percentile`` of its points.
"""

from __future__ import annotations

import numpy as np

from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.table import SegmentTable


def group_quantiles(groups: np.ndarray, values: np.ndarray, n_groups: int, qs: tuple[float, ...]) -> np.ndarray:
    """groups (K,) int64 in [0, n_groups), values (K,) float -> (n_groups, len(qs)) per-group quantiles
    (nearest rank; NaN for empty groups). One float64 sort of group + value scaled into [0, 0.5): values are
    resolved to ~1e-12 of their range."""
    out = np.full((n_groups, len(qs)), np.nan, np.float64)
    if len(groups) == 0:
        return out
    v = np.asarray(values, np.float64)
    v_lo = float(v.min())
    span = max(float(v.max()) - v_lo, 1e-12)
    key = np.sort(groups.astype(np.float64) + (v - v_lo) * (0.5 / span))
    v_sorted = (key - np.floor(key)) * (span / 0.5) + v_lo
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    for j, q in enumerate(qs):
        idx = starts[has] + np.floor(q * (counts[has] - 1)).astype(np.int64)
        out[has, j] = v_sorted[idx]
    return out


def refresh_stats(
    table: SegmentTable,
    labels_by_level: list[np.ndarray],
    xyz: np.ndarray,
    rgb: np.ndarray,
    config: InstanceConfig,
    normals: np.ndarray | None = None,
    max_sample: int = 150_000,
) -> None:
    """Recompute n_points, boxes and colour of every row from the points, then support (of the last level,
    "whole"; the other levels get -1).

    labels_by_level: per level (N,) int32 segment id of each point (-1 none); xyz (N, 3) float32 map frame;
    rgb (N, 3) float32 in [0, 1]; normals (N, 3) or None. Rows without points keep their previous boxes and get
    n_points 0.
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
        pick = pick[
            main_clusters(
                rows_all[pick], xyz[pick], config.cluster_voxel_m, config.cluster_keep_ratio, config.cluster_near_m
            )
        ]
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
        # colour: median chromaticity times the brightness of the best-lit face (shading darkens faces, it moves
        # brightness, not chromaticity; the lit faces are closest to the albedo)
        col = rgb[pick].astype(np.float64)
        bright = col.mean(1)
        chroma = col / np.maximum(col.sum(1, keepdims=True), 1e-6)
        med_b = group_quantiles(g, bright, s, (0.9,))[:, 0]
        if normals is not None:
            med_b = np.fmax(med_b, lit_face_brightness(g, bright, normals[pick], s))
        med_c = np.stack([group_quantiles(g, chroma[:, k], s, (0.5,))[:, 0] for k in range(3)], 1)
        med_c /= np.maximum(med_c.sum(1, keepdims=True), 1e-6)
        color = np.clip(med_c * 3.0 * med_b[:, None], 0.0, 1.0)
        r = np.flatnonzero(present)
        table.aabb_min[r], table.aabb_max[r] = lo[r], hi[r]
        table.obb_center[r], table.obb_size[r], table.obb_yaw_rad[r] = center[r], size[r], yaw[r]
        table.color_rgb[r] = color[r]
    whole = len(labels_by_level) - 1
    compute_support(table, whole, labels_by_level[whole], xyz, normals, config)


_NEIGHBOURS = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)],
    np.int64,
)


def main_clusters(
    groups: np.ndarray, xyz: np.ndarray, voxel_m: float, keep_ratio: float, near_m: float = 0.0
) -> np.ndarray:
    """(K,) bool: the points of each group that lie in its main 3D clusters. Points are binned into ``voxel_m``
    voxels per group, voxels joined through their 26 neighbours (connected components, all groups in one sparse
    graph); per group, clusters holding at least ``keep_ratio`` of its largest cluster's points are kept, and
    smaller ones whose box lies within ``near_m`` of a kept cluster's box horizontally and twice that vertically
    (a lamp's base under its shade, repeatedly). Points a
    confused or spilled mask labelled far from the object (a few on the wall, on a neighbour across the room) form
    small clusters of their own and leave the box, as ConceptGraphs' per-object DBSCAN does. voxel_m <= 0: all."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = len(groups)
    if k == 0 or voxel_m <= 0:
        return np.ones(k, bool)
    v = np.floor(np.asarray(xyz, np.float64) / voxel_m).astype(np.int64)
    v -= v.min(0) - 1
    span = int(v.max()) + 2
    key = ((groups.astype(np.int64) * span + v[:, 0]) * span + v[:, 1]) * span + v[:, 2]
    uniq, inv = np.unique(key, return_inverse=True)
    n = len(uniq)
    src, dst = [], []
    for dx, dy, dz in _NEIGHBOURS:
        nb = uniq + (dx * span + dy) * span + dz
        j = np.searchsorted(uniq, nb)
        hit = (j < n) & (uniq[np.minimum(j, n - 1)] == nb)
        src.append(np.flatnonzero(hit))
        dst.append(j[hit])
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    comp_of_point = comp[inv]
    size = np.bincount(comp_of_point)
    group_of_comp = np.zeros(len(size), np.int64)
    group_of_comp[comp_of_point] = groups
    largest = np.zeros(int(groups.max()) + 1, np.int64)
    np.maximum.at(largest, group_of_comp, size)
    keep_comp = size >= keep_ratio * largest[group_of_comp]
    if near_m > 0 and not keep_comp.all():  # small clusters right beside a kept one: a lamp's sparse pole
        n_c = len(size)
        lo = np.full((n_c, 3), np.inf)
        hi = np.full((n_c, 3), -np.inf)
        p = np.asarray(xyz, np.float64)
        np.minimum.at(lo, comp_of_point, p)
        np.maximum.at(hi, comp_of_point, p)
        for _ in range(8):  # grow through chains of small clusters (a pole seen as a few dotted pieces)
            big = np.flatnonzero(keep_comp)
            added = False
            for c in np.flatnonzero(~keep_comp).tolist():
                same = big[group_of_comp[big] == group_of_comp[c]]
                gap = np.maximum(0.0, np.maximum(lo[same] - hi[c], lo[c] - hi[same]))
                if ((gap[:, :2].max(1) <= near_m) & (gap[:, 2] <= 2.0 * near_m)).any():
                    keep_comp[c] = added = True
            if not added:
                break
    return keep_comp[comp_of_point]


def lit_face_brightness(
    groups: np.ndarray, bright: np.ndarray, normals: np.ndarray, n_groups: int, min_share: float = 0.05
) -> np.ndarray:
    """Per group, the 90th-percentile brightness of its horizontal faces (|normal z| >= 0.7; fused normals carry
    no sign), where those hold at least ``min_share`` of its points (and 5); NaN elsewhere. Indoor light comes
    from above: a white shelf is mostly vertical faces in shade, its board tops show its albedo. (n_groups,)."""
    horizontal = np.abs(normals[:, 2]) >= 0.7
    g = groups[horizontal].astype(np.int64)
    out = group_quantiles(g, bright[horizontal], n_groups, (0.9,))[:, 0]
    cnt = np.bincount(g, minlength=n_groups)
    total = np.bincount(groups.astype(np.int64), minlength=n_groups)
    return np.where((cnt >= np.maximum(5, min_share * total)), out, np.nan)


def compute_support(
    table: SegmentTable,
    level: int,
    labels: np.ndarray,
    xyz: np.ndarray,
    normals: np.ndarray | None,
    config: InstanceConfig,
    max_points_per_segment: int = 20_000,
) -> None:
    """support_id of the level's rows (other levels: -1): among segments reaching lower than this one's bottom
        (a neighbour resting on the same surface is no support), the one with the most points on a horizontal
        surface (|normal z| >= 0.7 when normals are given) at the height of this one's bottom (within
        ``support_max_gap_m``) and inside its footprint grown by ``support_search_margin_m`` (the surface right under
        an object is hidden by it; the surface around it is seen); at least ``support_min_points`` such points.

        labels (N,) int32 segment ids of ``level``; xyz (N, 3); normals (N, 3) or None. Large segments are strided
        down to ``max_points_per_segment`` points for the test. Cannot see support by a surface the camera never
        saw around the object (an object filling its support's whole top). An object with a support gets its box
    bottom lowered to the support surface's height (the underside a camera cannot see)."""
    cfg = config
    table.support_id[:] = -1
    rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
    if len(rows) == 0:
        return
    seen_z = seen_surface_below(table, rows, labels, xyz, cfg)  # from the boxes before any lowering
    bottom0 = table.aabb_min[rows, 2].astype(np.float64)
    if len(rows) < 2:
        _rest_on(table, rows, seen_z, bottom0)
        return
    r_of = table.row_of(labels)
    has = np.flatnonzero(r_of >= 0)
    order = has[np.argsort(r_of[has], kind="stable")]
    counts = np.bincount(r_of[has], minlength=len(table))
    starts = np.concatenate([[0], np.cumsum(counts)])
    lo, hi = table.aabb_min.astype(np.float64), table.aabb_max.astype(np.float64)
    m, gap = cfg.support_search_margin_m, cfg.support_max_gap_m
    lo_r, hi_r = lo[rows], hi[rows]
    pairs: dict[int, list[int]] = {}
    for s0 in range(0, len(rows), 512):  # candidate supporters by box, vectorised
        a = slice(s0, s0 + 512)
        ok = np.all(lo_r[None, :, :2] <= hi_r[a, None, :2] + m, 2)
        ok &= np.all(hi_r[None, :, :2] >= lo_r[a, None, :2] - m, 2)
        ok &= (lo_r[None, :, 2] < lo_r[a, None, 2] - gap) & (hi_r[None, :, 2] >= lo_r[a, None, 2] - gap)
        for i, j in zip(*np.nonzero(ok)):
            pairs.setdefault(int(rows[s0 + i]), []).append(int(rows[j]))
    for a, cand in pairs.items():
        bottom = lo[a, 2]
        flo, fhi = lo[a, :2] - m, hi[a, :2] + m
        best, best_n, surface_z = -1, cfg.support_min_points - 1, bottom
        for b in cand:
            idx = order[starts[b] : starts[b + 1]]
            idx = idx[:: max(1, len(idx) // max_points_per_segment)]
            p = xyz[idx]
            ok = np.all((p[:, :2] >= flo) & (p[:, :2] <= fhi), 1) & (np.abs(p[:, 2] - bottom) <= gap)
            if normals is not None:
                ok &= np.abs(normals[idx, 2]) >= 0.7
            n = int(ok.sum())
            if n > best_n:
                best, best_n, surface_z = b, n, float(np.median(p[ok, 2]))
        if best >= 0:
            table.support_id[a] = table.ids[best]
            if surface_z < bottom:  # it rests on the surface: its hidden underside reaches down to it
                top = float(table.aabb_max[a, 2])
                table.aabb_min[a, 2] = surface_z
                table.obb_center[a, 2] = 0.5 * (surface_z + top)
                table.obb_size[a, 2] = top - surface_z
    free = rows[table.support_id[rows] < 0]  # no surface seen around them: box bottom vs the top of a box under
    host, surface = _support_by_box(table, free, rows, cfg)
    for a, b, z in zip(free[host >= 0].tolist(), host[host >= 0].tolist(), surface[host >= 0].tolist()):
        table.support_id[a] = table.ids[b]
        top = float(table.aabb_max[a, 2])
        table.aabb_min[a, 2] = z
        table.obb_center[a, 2] = 0.5 * (z + top)
        table.obb_size[a, 2] = top - z
    _rest_on(table, rows, seen_z, bottom0)


def _rest_on(table: SegmentTable, rows: np.ndarray, surface_z: np.ndarray, bottom0: np.ndarray) -> None:
    """Box bottoms of ``rows`` onto the surface seen under them (``surface_z``, NaN: none; ``bottom0``: their
    bottoms before the support rules). A row without a support goes down to it (an object on the floor, which
    is no segment, or on a surface no segment holds). A row the support rules lowered goes no lower than it:
    they lower onto the support's box top or its labelled points, which are too low when its top board is
    unlabelled or seen edge-on (a bowl 5 cm under a shelf's top). A supported row they left alone stays (its
    lowest points are on the surface already: what is under them is the surface's own front edge)."""
    for i, a in enumerate(rows.tolist()):
        z = float(surface_z[i])
        if not np.isfinite(z):
            continue
        bottom = float(table.aabb_min[a, 2])
        if table.support_id[a] < 0:
            new = z
        elif bottom < bottom0[i]:
            new = max(bottom, z)
        else:
            continue
        top = float(table.aabb_max[a, 2])
        table.aabb_min[a, 2] = new
        table.obb_center[a, 2] = 0.5 * (new + top)
        table.obb_size[a, 2] = top - new


def seen_surface_below(
    table: SegmentTable, rows: np.ndarray, labels: np.ndarray, xyz: np.ndarray, cfg: InstanceConfig
) -> np.ndarray:
    """Per row: the height of the highest surface seen under its box bottom (NaN: none), whatever segment its
    points carry or none. Candidates: points of other segments or of none inside the footprint grown by
    ``support_search_margin_m``, at most ``support_box_max_gap_m`` under the bottom, each the highest point of
    its ``support_surface_band_m`` column up to the row's top (a wall behind it, a neighbour's side, the row's
    own lower part under its labelled points: their columns go on up and are no surface). The surface: the
    highest candidate with ``support_min_points`` candidates within the band under it; its height, their median.

    Gravity: a segment rests on the highest surface under it, and what the camera did not see between its
    lowest points and that surface (an underside, a foot hidden by the edge of a shelf it is seen over, a mask
    eroded where it meets its support) is the object. Normals are not consulted: a top board seen edge-on has
    none to trust. Cannot tell a hovering object (none in a static scene), nor see a surface the object covers
    entirely (the surface right under it is hidden by it)."""
    out = np.full(len(rows), np.nan)
    if len(xyz) == 0 or len(rows) == 0:
        return out
    idx = np.argsort(xyz[:, 0], kind="stable")
    xs = xyz[idx, 0]
    m, band = cfg.support_search_margin_m, cfg.support_surface_band_m
    lo, hi = table.aabb_min.astype(np.float64), table.aabb_max.astype(np.float64)
    for i, r in enumerate(rows.tolist()):
        a, b = np.searchsorted(xs, [lo[r, 0] - m, hi[r, 0] + m], side="left")
        cand = idx[a:b]
        p = xyz[cand].astype(np.float64)
        bottom = lo[r, 2]
        ok = (p[:, 1] >= lo[r, 1] - m) & (p[:, 1] <= hi[r, 1] + m)
        ok &= (p[:, 2] >= bottom - cfg.support_box_max_gap_m) & (p[:, 2] <= hi[r, 2])
        cand, p = cand[ok], p[ok]
        if len(p) < cfg.support_min_points:
            continue
        cell = np.floor(p[:, :2] / band).astype(np.int64)
        _, col = np.unique(cell, axis=0, return_inverse=True)
        col = col.reshape(-1)
        col_top = np.full(int(col.max()) + 1, -np.inf)
        np.maximum.at(col_top, col, p[:, 2])
        sel = (p[:, 2] >= col_top[col]) & (p[:, 2] < bottom) & (labels[cand] != table.ids[r])
        z = np.sort(p[sel, 2])
        if len(z) < cfg.support_min_points:
            continue
        n_below = np.arange(1, len(z) + 1) - np.searchsorted(z, z - band, side="left")  # in [z - band, z]
        top = np.flatnonzero(n_below >= cfg.support_min_points)
        if len(top):
            k = int(top[-1])
            out[i] = float(np.median(z[k - int(n_below[k]) + 1 : k + 1]))
    return out


def _support_by_box(
    table: SegmentTable, rows_a: np.ndarray, rows_b: np.ndarray, cfg: InstanceConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows_a``: the row of ``rows_b`` whose box top is right under its box bottom (at most
    ``support_box_max_gap_m`` below it, its xy centre over the other's footprint, the other's bottom lower by more
    than ``support_max_gap_m``), the highest such top, and that height; -1 / NaN when none. Thin parts a camera
    loses at an object's foot (a monitor's neck, a lamp's pole) leave its box hovering over what it stands on."""
    host = np.full(len(rows_a), -1, np.int64)
    surface = np.full(len(rows_a), np.nan)
    if len(rows_a) == 0 or len(rows_b) == 0:
        return host, surface
    lo, hi = table.aabb_min.astype(np.float64), table.aabb_max.astype(np.float64)
    lo_b, hi_b = lo[rows_b], hi[rows_b]
    for s0 in range(0, len(rows_a), 512):
        a = rows_a[s0 : s0 + 512]
        bottom = lo[a, 2][:, None]
        c = 0.5 * (lo[a, :2] + hi[a, :2])
        ok = (hi_b[None, :, 2] >= bottom - cfg.support_box_max_gap_m) & (
            hi_b[None, :, 2] <= bottom + cfg.support_max_gap_m
        )
        ok &= lo_b[None, :, 2] < bottom - cfg.support_max_gap_m
        ok &= np.all((c[:, None] >= lo_b[None, :, :2]) & (c[:, None] <= hi_b[None, :, :2]), 2)
        ok &= rows_b[None, :] != a[:, None]
        ok &= table.level[rows_b][None, :] == table.level[a][:, None]
        top = np.where(ok, hi_b[None, :, 2], -np.inf)
        j = np.argmax(top, 1)
        found = ok.any(1)
        host[s0 : s0 + 512][found] = rows_b[j[found]]
        surface[s0 : s0 + 512][found] = np.minimum(top[found, j[found]], bottom[found, 0])
    return host, surface
