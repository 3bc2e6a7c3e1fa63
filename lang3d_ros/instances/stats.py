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
    """support_id of the level's rows (other levels: -1): among segments reaching ``support_min_drop_m`` lower
        than this one's bottom (a neighbour resting on the same surface is no support; a book under a mug is one)
        with at least ``support_min_points`` points on a horizontal surface (|normal z| >= 0.7 when normals are
        given) at the height of this one's bottom (within ``support_max_gap_m``) and inside its footprint grown by
        ``support_search_margin_m`` (the surface right under an object is hidden by it; the surface around it is
        seen): of those whose box holds its centre (xy), the ones whose surface (the median height of those points)
        lies within ``support_nearer_m`` of the nearest to its bottom among those with ``support_nearer_share`` of
        the most such points, then the one with the most such points (a mug on a book on a box rests on the book,
        whose top the mug mostly hides; a book beside a ball on a table does not hold the ball); when no box holds
        its centre, the one with the most such points.

        labels (N,) int32 segment ids of ``level``; xyz (N, 3); normals (N, 3) or None. Large segments are strided
        down to ``max_points_per_segment`` points for the test. Cannot see support by a surface the camera never
        saw around the object (an object filling its support's whole top). An object with a support gets its box
    bottom lowered to the support surface's height (the underside a camera cannot see).

    Vectorised: candidate pairs by box, then each pair's points as one slice of the candidate's points sorted by
    height (``_ZIndex``), all pairs' points tested at once; the result is identical to
    ``stats_reference.compute_support_reference`` (the loop over pairs it replaced; test_instances_support)."""
    cfg = config
    table.support_id[:] = -1
    rows = np.flatnonzero((table.level == level) & (table.n_points > 0))
    if len(rows) == 0:
        return
    p64 = np.asarray(xyz, np.float64)
    zidx = _ZIndex(np.asarray(xyz)[:, 2])
    seen_z = seen_surface_below(table, rows, labels, xyz, cfg, _p64=p64, _zidx=zidx)  # boxes before any lowering
    bottom0 = table.aabb_min[rows, 2].astype(np.float64)
    if len(rows) < 2:
        _rest_on(table, rows, seen_z, bottom0)
        return
    lo, hi = table.aabb_min.astype(np.float64), table.aabb_max.astype(np.float64)
    m, gap, drop = cfg.support_search_margin_m, cfg.support_max_gap_m, cfg.support_min_drop_m
    lo_r, hi_r = lo[rows], hi[rows]
    pa, pb = [], []
    for s0 in range(0, len(rows), 512):  # candidate supporters by box: (a, b) row pairs, a then b ascending
        a = slice(s0, s0 + 512)
        ok = np.all(lo_r[None, :, :2] <= hi_r[a, None, :2] + m, 2)
        ok &= np.all(hi_r[None, :, :2] >= lo_r[a, None, :2] - m, 2)
        ok &= (lo_r[None, :, 2] < lo_r[a, None, 2] - drop) & (hi_r[None, :, 2] >= lo_r[a, None, 2] - gap)
        i, j = np.nonzero(ok)
        pa.append(rows[s0 + i])
        pb.append(rows[j])
    pair_a, pair_b = np.concatenate(pa), np.concatenate(pb)
    if len(pair_a):
        # the points each candidate offers: its labelled points strided to max_points_per_segment (as the loop
        # did: every step-th in point order), horizontal ones only, sorted by (row, height)
        r_of = table.row_of(labels)
        counts = np.bincount(r_of[r_of >= 0], minlength=len(table))
        step = np.maximum(1, counts // max_points_per_segment)
        is_cand = np.zeros(len(table), bool)
        is_cand[pair_b] = True
        pts = np.flatnonzero(r_of >= 0)
        pts = pts[is_cand[r_of[pts]]]  # ascending: point order within each row
        g = r_of[pts]
        keep = np.ones(len(pts), bool)
        big = np.flatnonzero(step[g] > 1)
        if len(big):  # every step-th point of a large segment: its points' ranks within it, in point order
            gb = g[big]
            o = np.argsort(gb, kind="stable")
            first = np.cumsum(np.bincount(gb, minlength=len(table))) - np.bincount(gb, minlength=len(table))
            pos = np.empty(len(big), np.int64)
            pos[o] = np.arange(len(big)) - first[gb[o]]
            keep[big] = pos % step[gb] == 0
        if normals is not None:
            keep &= np.abs(np.asarray(normals)[pts, 2]) >= 0.7
        pts, g = pts[keep], g[keep]
        key = g * zidx.n + zidx.rank[pts]
        srt = np.argsort(key)
        pts, key = pts[srt], key[srt]
        bottom = lo[pair_a, 2]
        # a height slice a little wider than the test (|z - bottom| <= gap, rounded in float64), exact test after
        tol = 1e-6 * (1.0 + np.abs(bottom))
        first = np.searchsorted(key, pair_b * zidx.n + zidx.at_least(bottom - gap - tol), "left")
        last = np.searchsorted(key, pair_b * zidx.n + zidx.above(bottom + gap + tol), "left")
        n_pairs = len(pair_a)
        n_ok = np.zeros(n_pairs, np.int64)
        z_ok = []  # the heights of each pair's points that pass, pair after pair, ascending within a pair
        for c0, c1 in _chunks(last - first, _CHUNK):
            k, pos = _expand(first[c0:c1], last[c0:c1])
            k += c0
            ok = _on_footprint(xyz, pts[pos], lo, hi, pair_a[k], m, gap)
            n_ok += np.bincount(k[ok], minlength=n_pairs)
            z_ok.append(np.asarray(xyz)[pts[pos[ok]], 2])  # the slices are sorted by height
        qual = np.flatnonzero(n_ok >= cfg.support_min_points)  # pairs with at least min_points
        if len(qual):
            # each one's surface height: the median of its passing points (as np.median in xyz's dtype)
            z = np.concatenate(z_ok)
            cnt = n_ok[qual]
            s = (np.cumsum(n_ok) - n_ok)[qual]
            mid_hi = z[s + cnt // 2]
            mid_lo = z[s + (cnt - 1) // 2]
            surf = np.where(cnt % 2 == 1, mid_hi, (mid_lo + mid_hi) / 2).astype(np.float64)
            # per a: among the candidates whose box holds a's centre (xy), those whose surface is within
            # support_nearer_m of the nearest well-seen one (support_nearer_share of the most points) to a's
            # bottom (a mug rests on the book, not on the box under the book; a book beside a ball does not hold
            # it), then the most points, then the first (lowest row); when no box holds its centre, the most points
            qa, qb, n = pair_a[qual], pair_b[qual], n_ok[qual]
            centre = 0.5 * (lo[qa, :2] + hi[qa, :2])
            under = np.all((lo[qb, :2] <= centre) & (centre <= hi[qb, :2]), 1)
            dist = np.abs(surf - lo[qa, 2])
            most = np.zeros(len(table), np.int64)
            np.maximum.at(most, qa[under], n[under])
            seen = under & (n >= cfg.support_nearer_share * most[qa])
            nearest = np.full(len(table), np.inf)
            np.minimum.at(nearest, qa[seen], dist[seen])
            farther = under & ~(seen & (dist <= nearest[qa] + cfg.support_nearer_m))
            best = np.lexsort((qb, -n, farther, ~under, qa))
            head = best[np.r_[True, qa[best][1:] != qa[best][:-1]]]
            a, b, surface_z = qa[head], qb[head], surf[head]
            table.support_id[a] = table.ids[b]
            low = surface_z < lo[a, 2]  # it rests on the surface: its hidden underside reaches down to it
            _set_bottom(table, a[low], surface_z[low])
    free = rows[table.support_id[rows] < 0]  # no surface seen around them: box bottom vs the top of a box under
    host, surface = _support_by_box(table, free, rows, cfg)
    found = host >= 0
    table.support_id[free[found]] = table.ids[host[found]]
    _set_bottom(table, free[found], surface[found])
    _rest_on(table, rows, seen_z, bottom0)


def _set_bottom(table: SegmentTable, rows: np.ndarray, z: np.ndarray) -> None:
    """Box bottoms of ``rows`` to heights ``z`` (float64), the top kept: aabb_min z and the oriented box's z."""
    top = table.aabb_max[rows, 2].astype(np.float64)
    table.aabb_min[rows, 2] = z
    table.obb_center[rows, 2] = 0.5 * (z + top)
    table.obb_size[rows, 2] = top - z


def _on_footprint(xyz, pts, lo, hi, a, m, gap) -> np.ndarray:
    """(K,) bool: points ``pts`` inside the footprints of rows ``a`` grown by ``m`` and within ``gap`` of their box
    bottoms (the comparisons of the reference loop, in float64)."""
    p = np.asarray(xyz)[pts]
    ok = (p[:, 0] >= lo[a, 0] - m) & (p[:, 0] <= hi[a, 0] + m)
    ok &= (p[:, 1] >= lo[a, 1] - m) & (p[:, 1] <= hi[a, 1] + m)
    ok &= np.abs(p[:, 2] - lo[a, 2]) <= gap
    return ok


class _ZIndex:
    """Integer ranks of heights (N,) float: ``rank[i]`` = number of points lower than point i, so that a height
    interval is an interval of ranks, exactly (ties share a rank), and (group, height) orders as one int64 key."""

    def __init__(self, z: np.ndarray):
        order = np.argsort(z)
        self.sorted = z[order].astype(np.float64)
        new = np.ones(len(z), bool)
        new[1:] = self.sorted[1:] != self.sorted[:-1]
        self.rank = np.empty(len(z), np.int64)
        self.rank[order] = np.maximum.accumulate(np.where(new, np.arange(len(z)), 0))  # first equal height's place
        self.n = max(1, len(z))

    def at_least(self, z: np.ndarray) -> np.ndarray:
        """Ranks r with (point height >= z) == (rank >= r)."""
        return np.searchsorted(self.sorted, z, "left")

    def above(self, z: np.ndarray) -> np.ndarray:
        """Ranks r with (point height <= z) == (rank < r)."""
        return np.searchsorted(self.sorted, z, "right")


def _expand(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K,) index ranges [first, last) -> (range of each element, element): the concatenated aranges."""
    n = np.maximum(np.asarray(last) - np.asarray(first), 0)
    k = np.repeat(np.arange(len(n)), n)
    return k, np.arange(len(k)) - (np.cumsum(n) - n)[k] + np.asarray(first)[k]


_CHUNK = 1 << 19
"""Candidate (pair or row, point) entries expanded at a time: ~50 MiB of temporaries at ~100 B each."""


def _chunks(sizes: np.ndarray, budget: int):
    """Consecutive [c0, c1) runs of ``sizes`` summing to about ``budget`` each (one item at least)."""
    c0, total = 0, np.cumsum(sizes)
    while c0 < len(sizes):
        base = total[c0 - 1] if c0 else 0
        c1 = max(c0 + 1, int(np.searchsorted(total, base + budget, "right")))
        yield c0, c1
        c0 = c1


def _rest_on(table: SegmentTable, rows: np.ndarray, surface_z: np.ndarray, bottom0: np.ndarray) -> None:
    """Box bottoms of ``rows`` onto the surface seen under them (``surface_z``, NaN: none; ``bottom0``: their
    bottoms before the support rules). A row without a support goes down to it (an object on the floor, which
    is no segment, or on a surface no segment holds). A row the support rules lowered goes no lower than it:
    they lower onto the support's box top or its labelled points, which are too low when its top board is
    unlabelled or seen edge-on (a bowl 5 cm under a shelf's top). A supported row they left alone stays (its
    lowest points are on the surface already: what is under them is the surface's own front edge)."""
    z = np.asarray(surface_z, np.float64)
    bottom = table.aabb_min[rows, 2].astype(np.float64)
    free = table.support_id[rows] < 0
    move = np.isfinite(z) & (free | (bottom < bottom0))
    new = np.where(free, z, np.maximum(bottom, z))
    _set_bottom(table, rows[move], new[move])


def seen_surface_below(
    table: SegmentTable,
    rows: np.ndarray,
    labels: np.ndarray,
    xyz: np.ndarray,
    cfg: InstanceConfig,
    _p64: np.ndarray | None = None,
    _zidx: _ZIndex | None = None,
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
    entirely (the surface right under it is hidden by it).

    Vectorised: the points sorted once by (column, height); each row's candidates are, per column of its
    footprint, one slice of that order; identical to ``stats_reference.seen_surface_below_reference``."""
    out = np.full(len(rows), np.nan)
    if len(xyz) == 0 or len(rows) == 0:
        return out
    p = np.asarray(xyz, np.float64) if _p64 is None else _p64
    zidx = _ZIndex(np.asarray(xyz)[:, 2]) if _zidx is None else _zidx
    n = zidx.n
    m, band = cfg.support_search_margin_m, cfg.support_surface_band_m
    cell = np.floor(p[:, :2] / band).astype(np.int64)  # the reference's columns
    c_lo, c_hi = cell.min(0), cell.max(0)
    span_y = int(c_hi[1] - c_lo[1]) + 1
    col = (cell[:, 0] - c_lo[0]) * span_y + (cell[:, 1] - c_lo[1])
    key = col * n + zidx.rank
    order = np.argsort(key)
    key = key[order]
    lo, hi = table.aabb_min[rows].astype(np.float64), table.aabb_max[rows].astype(np.float64)
    x0, x1, y0, y1 = lo[:, 0] - m, hi[:, 0] + m, lo[:, 1] - m, hi[:, 1] + m
    bottom, top = lo[:, 2], hi[:, 2]
    r_lo, r_hi = zidx.at_least(bottom - cfg.support_box_max_gap_m), zidx.above(top)
    # the columns each footprint covers, clipped to those holding points
    cx0 = np.clip(np.floor(x0 / band).astype(np.int64), c_lo[0], c_hi[0] + 1) - c_lo[0]
    cx1 = np.clip(np.floor(x1 / band).astype(np.int64), c_lo[0] - 1, c_hi[0]) - c_lo[0]
    cy0 = np.clip(np.floor(y0 / band).astype(np.int64), c_lo[1], c_hi[1] + 1) - c_lo[1]
    cy1 = np.clip(np.floor(y1 / band).astype(np.int64), c_lo[1] - 1, c_hi[1]) - c_lo[1]
    ny = np.maximum(cy1 - cy0 + 1, 0)
    n_cols = np.maximum(cx1 - cx0 + 1, 0) * ny
    own = table.ids[rows]
    sel_row, sel_z = [], []
    for c0, c1 in _chunks(n_cols, 1 << 18):
        i, j = _expand(np.zeros(c1 - c0, np.int64), n_cols[c0:c1])  # (row, its j-th column)
        i += c0
        c = (cx0[i] + j // ny[i]) * span_y + cy0[i] + j % ny[i]
        first = np.searchsorted(key, c * n + r_lo[i], "left")
        last = np.searchsorted(key, c * n + r_hi[i], "left")
        nz = last > first
        i, first, last = i[nz], first[nz], last[nz]
        for s0, s1 in _chunks(last - first, _CHUNK):  # whole (row, column) slices, ~_CHUNK candidates at a time
            k, pos = _expand(first[s0:s1], last[s0:s1])  # slice of each candidate, ascending height within it
            pt = order[pos]
            r = i[s0:s1][k]
            q = p[pt]
            ok = (q[:, 0] >= x0[r]) & (q[:, 0] < x1[r]) & (q[:, 1] >= y0[r]) & (q[:, 1] <= y1[r])
            zq = np.where(ok, q[:, 2], -np.inf)
            n_k = last[s0:s1] - first[s0:s1]
            col_top = np.maximum.reduceat(zq, np.cumsum(n_k) - n_k)
            sel = ok & (q[:, 2] >= col_top[k]) & (q[:, 2] < bottom[r]) & (labels[pt] != own[r])
            sel_row.append(r[sel])
            sel_z.append(pt[sel])
    r = np.concatenate(sel_row)
    pt = np.concatenate(sel_z)
    if len(r) == 0:
        return out
    skey = r * n + zidx.rank[pt]
    srt = np.argsort(skey)
    r, skey, z = r[srt], skey[srt], p[pt[srt], 2]
    idx = np.arange(len(r))
    n_below = idx - np.searchsorted(skey, r * n + zidx.at_least(z - band), "left") + 1  # in [z - band, z]
    good = n_below >= cfg.support_min_points
    if not good.any():
        return out
    last_good = np.full(len(rows), -1, np.int64)
    np.maximum.at(last_good, r[good], idx[good])
    hit = np.flatnonzero(last_good >= 0)
    k = last_good[hit]
    w = n_below[k]
    s = k - w + 1
    mid_hi, mid_lo = z[s + w // 2], z[s + (w - 1) // 2]
    out[hit] = np.where(w % 2 == 1, mid_hi, (mid_lo + mid_hi) / 2)
    return out


def _support_by_box(
    table: SegmentTable, rows_a: np.ndarray, rows_b: np.ndarray, cfg: InstanceConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows_a``: the row of ``rows_b`` whose box top is right under its box bottom (at most
    ``support_box_max_gap_m`` below it, its xy centre over the other's footprint, the other's bottom lower by more
    than ``support_min_drop_m``), the highest such top, and that height; -1 / NaN when none. Thin parts a camera
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
        ok &= lo_b[None, :, 2] < bottom - cfg.support_min_drop_m
        ok &= np.all((c[:, None] >= lo_b[None, :, :2]) & (c[:, None] <= hi_b[None, :, :2]), 2)
        ok &= rows_b[None, :] != a[:, None]
        ok &= table.level[rows_b][None, :] == table.level[a][:, None]
        top = np.where(ok, hi_b[None, :, 2], -np.inf)
        j = np.argmax(top, 1)
        found = ok.any(1)
        host[s0 : s0 + 512][found] = rows_b[j[found]]
        surface[s0 : s0 + 512][found] = np.minimum(top[found, j[found]], bottom[found, 0])
    return host, surface
