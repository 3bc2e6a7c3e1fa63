"""The instance pass's steps as they were before vectorisation, kept apart as the references the faster ones must
match exactly (test parity, benchmarks side by side); not used by the mapper:
- the support pass (stats.compute_support): a Python loop over candidate pairs and one over rows;
- a mask's largest 3D part (mapper.largest_3d_part): voxel keys of every pixel point recomputed per level.
"""

from __future__ import annotations

import numpy as np

from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.stats import _support_by_box
from lang3d_ros.instances.table import SegmentTable


def compute_support_reference(
    table: SegmentTable,
    level: int,
    labels: np.ndarray,
    xyz: np.ndarray,
    normals: np.ndarray | None,
    config: InstanceConfig,
    max_points_per_segment: int = 20_000,
) -> None:
    """support_id of the level's rows (other levels: -1): among segments reaching lower than this one's bottom
        (a neighbour resting on the same surface is no support) with at least ``support_min_points`` points on a
        horizontal surface (|normal z| >= 0.7 when normals are given) at the height of this one's bottom (within
        ``support_max_gap_m``) and inside its footprint grown by ``support_search_margin_m`` (the surface right under
        an object is hidden by it; the surface around it is seen): of those whose box holds its centre (xy), the
        ones whose surface (their median height) lies within ``support_nearer_m`` of the nearest to its bottom
        among those with ``support_nearer_share`` of the most such points, then the one with the most such
        points; when no box holds its centre, the one with the most such points.

        labels (N,) int32 segment ids of ``level``; xyz (N, 3); normals (N, 3) or None. Large segments are strided
        down to ``max_points_per_segment`` points for the test. Cannot see support by a surface the camera never
        saw around the object (an object filling its support's whole top). An object with a support gets its box
    bottom lowered to the support surface's height (the underside a camera cannot see)."""
    cfg = config
    table.support_id[:] = -1
    rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
    if len(rows) == 0:
        return
    seen_z = seen_surface_below_reference(table, rows, labels, xyz, cfg)  # from the boxes before any lowering
    bottom0 = table.aabb_min[rows, 2].astype(np.float64)
    if len(rows) < 2:
        _rest_on_reference(table, rows, seen_z, bottom0)
        return
    r_of = table.row_of(labels)
    has = np.flatnonzero(r_of >= 0)
    order = has[np.argsort(r_of[has], kind="stable")]
    counts = np.bincount(r_of[has], minlength=len(table))
    starts = np.concatenate([[0], np.cumsum(counts)])
    lo, hi = table.aabb_min.astype(np.float64), table.aabb_max.astype(np.float64)
    m, gap, drop = cfg.support_search_margin_m, cfg.support_max_gap_m, cfg.support_min_drop_m
    lo_r, hi_r = lo[rows], hi[rows]
    pairs: dict[int, list[int]] = {}
    for s0 in range(0, len(rows), 512):  # candidate supporters by box, vectorised
        a = slice(s0, s0 + 512)
        ok = np.all(lo_r[None, :, :2] <= hi_r[a, None, :2] + m, 2)
        ok &= np.all(hi_r[None, :, :2] >= lo_r[a, None, :2] - m, 2)
        ok &= (lo_r[None, :, 2] < lo_r[a, None, 2] - drop) & (hi_r[None, :, 2] >= lo_r[a, None, 2] - gap)
        for i, j in zip(*np.nonzero(ok)):
            pairs.setdefault(int(rows[s0 + i]), []).append(int(rows[j]))
    for a, cand in pairs.items():
        bottom = lo[a, 2]
        flo, fhi = lo[a, :2] - m, hi[a, :2] + m
        centre = 0.5 * (lo[a, :2] + hi[a, :2])
        found = []  # (not under a's centre, its surface's distance to a's bottom, -points, order, candidate, z)
        for i, b in enumerate(cand):
            idx = order[starts[b] : starts[b + 1]]
            idx = idx[:: max(1, len(idx) // max_points_per_segment)]
            p = xyz[idx]
            ok = np.all((p[:, :2] >= flo) & (p[:, :2] <= fhi), 1) & (np.abs(p[:, 2] - bottom) <= gap)
            if normals is not None:
                ok &= np.abs(normals[idx, 2]) >= 0.7
            n = int(ok.sum())
            if n >= cfg.support_min_points:
                z = float(np.median(p[ok, 2]))
                under = bool(np.all((lo[b, :2] <= centre) & (centre <= hi[b, :2])))
                found.append((not under, abs(z - bottom), -n, i, b, z))
        if found:
            under = [f for f in found if not f[0]]
            most = max((-f[2] for f in under), default=0)
            nearest = min((f[1] for f in under if -f[2] >= cfg.support_nearer_share * most), default=np.inf)
            ranked = []
            for f in found:
                near = -f[2] >= cfg.support_nearer_share * most and f[1] <= nearest + cfg.support_nearer_m
                ranked.append((f[0], (not f[0]) and not near, f[2], f[3], f[4], f[5]))
            *_, best, surface_z = min(ranked)
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
    _rest_on_reference(table, rows, seen_z, bottom0)


def _rest_on_reference(table: SegmentTable, rows: np.ndarray, surface_z: np.ndarray, bottom0: np.ndarray) -> None:
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


def seen_surface_below_reference(
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


_NEIGHBOURS_26 = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)],
    np.int64,
)


def largest_3d_part_reference(seg: np.ndarray, xyz: np.ndarray, link_m: float) -> np.ndarray:
    """(N,) int mask ids per pixel (-1 none) and (N, 3) map-frame points (NaN: no point) -> the same ids with
    every mask cut down to its largest 3D part (by pixels): points joined through 26-neighbouring voxels of
    ``link_m``. A mask that spans two objects far apart in depth (an under-segmented mask over a monitor and the
    shelf 3 m behind it) keeps one of them, and spill onto a distant wall goes; an object whose visible parts are
    more than ``link_m`` apart keeps its largest part in this keyframe. ``link_m <= 0``: unchanged."""
    out = np.asarray(seg).copy()
    ok = np.flatnonzero((out >= 0) & np.isfinite(xyz[:, 0]))
    if link_m <= 0 or len(ok) == 0:
        return out
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = np.floor(xyz[ok] / link_m).astype(np.int64)
    v -= v.min(0) - 1  # >= 1, so that every neighbour offset stays >= 0
    dims = v.max(0) + 2
    m = out[ok].astype(np.int64)
    key = ((m * dims[0] + v[:, 0]) * dims[1] + v[:, 1]) * dims[2] + v[:, 2]  # (mask, voxel): masks never link
    cells, inv = np.unique(key, return_inverse=True)
    rows, cols = [], []
    for d in _NEIGHBOURS_26:
        nb = key + (d[0] * dims[1] + d[1]) * dims[2] + d[2]
        pos = np.searchsorted(cells, nb)
        hit = (pos < len(cells)) & (cells[np.minimum(pos, len(cells) - 1)] == nb)
        rows.append(inv[hit])
        cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    n = len(cells)
    _, comp = connected_components(coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)), directed=False)
    px_comp = comp[inv]  # component of each pixel (a component lies in one mask: keys carry the mask)
    size = np.bincount(px_comp)
    comp_mask = np.zeros(len(size), np.int64)
    comp_mask[px_comp] = m
    order = np.lexsort((-size, comp_mask))  # per mask, its largest component first
    first = np.unique(comp_mask[order], return_index=True)[1]
    keep = np.zeros(len(size), bool)
    keep[order[first]] = True
    out[ok[~keep[px_comp]]] = -1
    return out
