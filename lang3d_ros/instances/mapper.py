"""Online instance mapping beside a PointMap: per keyframe associate masks, vote point labels, refresh
statistics, and every few keyframes merge and drop segments.

The PointMap owns the per-point labels and votes (``vote_labels`` / ``labels`` / ``relabel``); this object owns
the segment table. Not thread-safe by itself: the LanguageMap calls it under its lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.instances.associate import CoObservation, associate_level
from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.maintain import maintain
from lang3d_ros.instances.stats import refresh_stats
from lang3d_ros.instances.table import SegmentTable

log = logging.getLogger(__name__)


@dataclass
class InstanceUpdate:
    """What one keyframe did: masks matched / segments created over all levels, maintenance counts, time."""

    matched: int = 0
    created: int = 0
    merged: int = 0
    dropped: int = 0
    time_ms: float = 0.0


def pixel_points(frame) -> np.ndarray:
    """(H*W, 3) float64 map-frame point of each pixel from its depth (NaN where depth is invalid)."""
    K = frame.intrinsics
    depth = np.asarray(frame.depth_m, dtype=np.float64)
    v, u = np.mgrid[0 : K.height, 0 : K.width]
    z = depth.reshape(-1)
    x = (u.reshape(-1) - K.cx) / K.fx * z
    y = (v.reshape(-1) - K.cy) / K.fy * z
    p_cam = np.stack([x, y, z], 1)
    T = np.asarray(frame.T_world_cam, dtype=np.float64)
    p = p_cam @ T[:3, :3].T + T[:3, 3]
    p[~(np.isfinite(z) & (z > 0))] = np.nan
    return p


def _erode_steps(
    seg_map: np.ndarray, px: int, depth_m: np.ndarray | None = None, tol_m: float = 0.0, tol_per_m2: float = 0.0
):
    """Yields the (H, W) mask ids after each of ``px`` steps of 4-neighbourhood erosion of every mask (image border
    included); with ``depth_m``, foreground-silhouette pixels (see ``erode_labels``) are not removed."""
    out = np.asarray(seg_map)
    h, w = out.shape
    steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
    if depth_m is not None:  # which 4-neighbour lies deeper than the pixel by the tolerance: fixed over the steps
        z = np.asarray(depth_m, dtype=np.float32)
        zf = np.where(np.isfinite(z) & (z > 0), z, np.inf).astype(np.float32)
        tol = (tol_m + tol_per_m2 * np.where(np.isfinite(zf), zf, 0.0) ** 2).astype(np.float32)
        pad_z = np.pad(zf, 1, constant_values=-np.inf)  # beyond the image border: not a silhouette
        deeper = [pad_z[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] > zf + tol for dy, dx in steps]
        has_z = np.isfinite(zf)
    for _ in range(px):
        pad = np.pad(out, 1, constant_values=-2)
        same = [pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == out for dy, dx in steps]
        keep = (out >= 0) & np.logical_and.reduce(same)
        if depth_m is not None:
            silhouette = (out >= 0) & has_z
            for sm, dp in zip(same, deeper):
                silhouette &= sm | dp
            keep |= silhouette
        keep[0, :] = keep[-1, :] = False
        keep[:, 0] = keep[:, -1] = False
        out = np.where(keep, out, -1).astype(out.dtype, copy=False)
        yield out


def _part_steps(seg_map: np.ndarray, px: int) -> np.ndarray:
    """(H, W) mask ids -> (H, W) int8: for each mask pixel the most steps k <= ``px`` such that the pixel lies in the
    opening of its mask by a (4k + 1)-pixel square (a part of the mask at least 4k + 1 px wide, so that k steps
    from each side leave half of that part); 0 elsewhere. All masks at once; the image border bounds every mask.

    A pixel whose chessboard distance d to its mask's rim (pixels with another id among their 8 neighbours) is at
    least r has the whole square of radius r around it in its mask, so the opening by that square is where the
    maximum of d over the square reaches r."""
    from scipy import ndimage

    orig = np.asarray(seg_map)
    h, w = orig.shape
    pad = np.pad(orig, 1, constant_values=-2)
    rim = orig < 0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                rim |= pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] != orig
    d = np.minimum(ndimage.distance_transform_cdt(~rim, metric="chessboard"), 2 * px)
    d = d.astype(np.uint8 if 2 * px <= 255 else np.int32)  # uint8: the maximum filters run twice as fast
    out = np.zeros((h, w), np.int8)
    for k in range(1, px + 1):
        opened = ndimage.maximum_filter(d, size=4 * k + 1, mode="constant", cval=0) >= 2 * k
        out[opened & (orig >= 0)] = k
    return out


def erode_labels(
    seg_map: np.ndarray,
    px: int,
    depth_m: np.ndarray | None = None,
    tol_m: float = 0.06,
    tol_per_m2: float = 0.01,
) -> np.ndarray:
    """(H, W) int mask ids (-1 none) -> the same with pixels within ``px`` (4-neighbourhood steps) of another
    mask, of no mask or of the image border set to -1; a mask that this would take more than half of (judged by
    the plain erosion) is eroded by the most steps that leave it half: a small object whose mask bled 2 px onto
    the surface around it loses part of that ring, a thin one (a pole, 3 px wide) keeps every pixel. The same
    holds per part of a mask (``_part_steps``): a thin part of a thick mask (a laptop's base, a strip 3 px tall
    beside its screen, lying on a bed at its own depth) keeps half its width, not nothing; with ``depth_m``, not
    where it lies deeper than its mask's mean depth by more than ``tol_m`` (a strip spilled onto the wall behind a
    small object far away, under ``depth_consistent``'s range-grown tolerance).

    With ``depth_m`` (H, W), a boundary pixel in front of everything outside its mask next to it (each such
    4-neighbour deeper by more than ``tol_m + tol_per_m2 * z^2``, or without depth) is a foreground silhouette
    and stays: erosion is for a mask spilling onto a surface at the object's own depth (the table top around a
    mug's foot), and a pixel in front of its surroundings is the object itself (a chair's leg against the floor
    behind it, a mug's side against the wall). Pixels behind a depth edge are ``depth_consistent``'s business."""
    orig = np.asarray(seg_map)
    n = int(orig.max(initial=-1)) + 1
    if not px or not n:
        return orig.copy()
    # one step at a time; a mask takes each step that plain erosion says leaves at least half of it, so it ends at
    # its deepest such step (a small object spilled over by a ring of background keeps its core, a thin one all)
    before = np.bincount(orig[orig >= 0], minlength=n)
    out = orig.copy()
    part_steps = _part_steps(orig, px)
    if depth_m is not None:  # a thin part behind its mask's mean depth is a spill onto what lies behind: no pass
        z = np.asarray(depth_m, dtype=np.float64)
        has = (orig >= 0) & np.isfinite(z) & (z > 0)
        if has.any():
            mean_z = np.bincount(orig[has], z[has], n) / np.maximum(np.bincount(orig[has], minlength=n), 1)
            part_steps[has & (z > mean_z[np.maximum(orig, 0)] + tol_m)] = px
    deep_steps = None if depth_m is None else _erode_steps(orig, px, depth_m, tol_m, tol_per_m2)
    for step, plain in enumerate(_erode_steps(orig, px), start=1):
        deep = plain if deep_steps is None else next(deep_steps)
        keeps_half = np.bincount(plain[plain >= 0], minlength=n) >= 0.5 * before
        here = (orig >= 0) & keeps_half[np.maximum(orig, 0)] & (part_steps >= step)
        out[here] = deep[here]
    return out


def depth_consistent(
    seg_map: np.ndarray, depth_m: np.ndarray, radius_px: int, tol_m: float, tol_per_m2: float
) -> np.ndarray:
    """(H, W) mask ids (-1 none), (H, W) depth -> the same ids with -1 where a pixel lies behind a depth edge
    inside its own mask: a pixel whose neighbour (8-neighbourhood) in the same mask is closer by more than
    ``tol_m + tol_per_m2 * z^2``, and the pixels continuous in depth with it up to ``radius_px`` steps on. A mask
    that spills over an object's silhouette lands on the wall or floor behind it, across a depth jump; inside an
    object depth changes smoothly from pixel to pixel (a table top seen at a grazing angle too), and thin parts (a
    lamp's pole, a monitor's neck) keep their votes where erosion would remove them. Also drops a band of that
    width behind an object's own depth edges (a chair's back seen past its seat). Cannot see a spill onto a
    surface at the object's own depth (the table top around a mug's foot), nor one wider than ``radius_px``."""
    ids = np.asarray(seg_map)
    if radius_px <= 0:
        return ids.copy()
    z = np.asarray(depth_m, dtype=np.float32)
    h, w = ids.shape
    valid = (ids >= 0) & np.isfinite(z) & (z > 0)
    lab = np.where(valid, ids, -1)
    zv = np.where(valid, z, 0.0).astype(np.float32)
    tol = (tol_m + tol_per_m2 * zv * zv).astype(np.float32)
    pad_i = np.pad(lab, 1, constant_values=-1)
    pad_z = np.pad(zv, 1)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    same = [valid & (pad_i[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == lab) for dy, dx in shifts]
    dz = [zv - pad_z[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in shifts]  # > 0: neighbour closer
    behind = np.zeros((h, w), bool)
    for sm, d in zip(same, dz):
        behind |= sm & (d > tol)
    for _ in range(int(radius_px) - 1):  # on through pixels continuous in depth with a pixel behind the edge
        pad_b = np.pad(behind, 1)
        grow = behind.copy()
        for (dy, dx), sm, d in zip(shifts, same, dz):
            grow |= sm & pad_b[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] & (np.abs(d) <= tol)
        if (grow == behind).all():
            break
        behind = grow
    return np.where(behind, -1, ids)


_NEIGHBOURS_26 = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)],
    np.int64,
)  # half of the 26-neighbourhood: each adjacent voxel pair is linked once


class PixelVoxels:
    """One keyframe's pixel points binned into ``link_m`` voxels and the voxels' 26-neighbour links: what
    ``largest_3d_part`` needs that does not depend on the masks, computed once (on first use) and shared by the
    masks of every level. xyz (N, 3) map-frame points (NaN: no point); it must not change while in use."""

    def __init__(self, xyz: np.ndarray, link_m: float):
        self.xyz = xyz
        self.link_m = float(link_m)
        self._done = False

    def _build(self) -> None:
        xyz = self.xyz
        fin = np.flatnonzero(np.isfinite(xyz[:, 0]))
        self.voxel = np.full(len(xyz), -1, np.int64)  # voxel of each pixel, in the lexicographic order of (x, y, z)
        self.n_voxels = 0
        self.nb_start = np.zeros(1, np.int64)
        self.nb = np.zeros(0, np.int64)
        self._done = True
        if len(fin) == 0:
            return
        v = np.floor(xyz[fin] / self.link_m).astype(np.int64)
        v -= v.min(0) - 1  # >= 1, so that every neighbour offset stays >= 0
        dims = v.max(0) + 2
        cells, inv = np.unique((v[:, 0] * dims[1] + v[:, 1]) * dims[2] + v[:, 2], return_inverse=True)
        self.voxel[fin] = inv.reshape(-1)
        n = self.n_voxels = len(cells)
        src, dst = [], []
        for d in _NEIGHBOURS_26:  # half of them: each adjacent pair once, (src, dst) with src < dst
            nb = cells + (d[0] * dims[1] + d[1]) * dims[2] + d[2]
            pos = np.searchsorted(cells, nb)
            hit = (pos < n) & (cells[np.minimum(pos, n - 1)] == nb)
            src.append(np.flatnonzero(hit))
            dst.append(pos[hit])
        src, dst = np.concatenate(src), np.concatenate(dst)
        order = np.argsort(src, kind="stable")
        self.nb = dst[order]  # neighbours of voxel u: nb[nb_start[u] : nb_start[u + 1]]
        self.nb_start = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])

    def largest_parts(self, seg: np.ndarray) -> np.ndarray:
        """``largest_3d_part(seg, xyz, link_m)`` for these points."""
        out = np.asarray(seg).copy()
        if self.link_m <= 0:
            return out
        if not self._done:
            self._build()
        ok = np.flatnonzero((out >= 0) & (self.voxel >= 0))
        if len(ok) == 0:
            return out
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        m = out[ok].astype(np.int64)
        n_v = self.n_voxels
        key = m * n_v + self.voxel[ok]  # (mask, voxel), in the order of (mask, x, y, z): masks never link
        if (int(m.max()) + 1) * n_v <= 4 * len(key):  # few masks and voxels: a table instead of a sort
            present = np.bincount(key, minlength=(int(m.max()) + 1) * n_v) > 0
            cells = np.flatnonzero(present)
            inv = (np.cumsum(present) - 1)[key]
        else:
            cells, inv = np.unique(key, return_inverse=True)
            inv = inv.reshape(-1)
        n = len(cells)
        cell_mask, cell_voxel = cells // n_v, cells % n_v
        first, last = self.nb_start[cell_voxel], self.nb_start[cell_voxel + 1]
        cnt = last - first
        r = np.repeat(np.arange(n), cnt)  # each cell's neighbouring voxels, in the same mask
        nb = cell_mask[r] * n_v + self.nb[np.arange(len(r)) - (np.cumsum(cnt) - cnt)[r] + first[r]]
        pos = np.searchsorted(cells, nb)
        hit = (pos < n) & (cells[np.minimum(pos, n - 1)] == nb)
        r, c = r[hit], pos[hit]
        _, comp = connected_components(coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)), directed=False)
        px_comp = comp[inv]  # component of each pixel (a component lies in one mask: keys carry the mask)
        size = np.bincount(px_comp)
        comp_mask = np.zeros(len(size), np.int64)
        comp_mask[px_comp] = m
        order = np.lexsort((-size, comp_mask))  # per mask, its largest component first
        first_of_mask = np.unique(comp_mask[order], return_index=True)[1]
        keep = np.zeros(len(size), bool)
        keep[order[first_of_mask]] = True
        out[ok[~keep[px_comp]]] = -1
        return out


def largest_3d_part(seg: np.ndarray, xyz: np.ndarray, link_m: float, voxels: PixelVoxels | None = None) -> np.ndarray:
    """(N,) int mask ids per pixel (-1 none) and (N, 3) map-frame points (NaN: no point) -> the same ids with
    every mask cut down to its largest 3D part (by pixels): points joined through 26-neighbouring voxels of
    ``link_m``. A mask that spans two objects far apart in depth (an under-segmented mask over a monitor and the
    shelf 3 m behind it) keeps one of them, and spill onto a distant wall goes; an object whose visible parts are
    more than ``link_m`` apart keeps its largest part in this keyframe. ``link_m <= 0``: unchanged. ``voxels``:
    ``PixelVoxels(xyz, link_m)`` shared by the levels of one keyframe (built here when None); ties between equal
    parts go to the one whose first voxel comes first in (x, y, z) order, as the reference
    (stats_reference.largest_3d_part_reference)."""
    if voxels is None:
        voxels = PixelVoxels(xyz, link_m)
    elif voxels.xyz is not xyz or voxels.link_m != float(link_m):
        raise ValueError("largest_3d_part: voxels were built for other points or another link_m")
    return voxels.largest_parts(seg)


class InstanceMapper:
    def __init__(self, config: InstanceConfig, feature_dim: int):
        config.validate()
        self.config = config
        self.table = SegmentTable(int(feature_dim))
        self.coobs = CoObservation()
        self.in_view: dict[int, int] = {}  # segment id -> keyframes in which it was matched or its points were seen
        self.keyframes = 0
        self.version = 0

    def observe(self, points, frame, semantics, pixel_slot: np.ndarray, pixel_alpha: np.ndarray) -> InstanceUpdate:
        """After ``points.integrate(frame, want_pixel_slots=True)``: associate the keyframe's masks per level,
        vote the point labels, refresh statistics, maintain every ``maintain_every_keyframes`` keyframes.

        pixel_slot (H*W,) int64 map slot each pixel fused into (-1 none); pixel_alpha (H*W,) float32."""
        t0 = time.perf_counter()
        cfg = self.config
        self.keyframes += 1
        kf = self.keyframes
        upd = InstanceUpdate()
        slot = np.asarray(pixel_slot, dtype=np.int64).reshape(-1)
        alpha = np.asarray(pixel_alpha, dtype=np.float32).reshape(-1)
        xyz = pixel_points(frame)
        xyz[slot < 0] = np.nan
        labels = np.full((len(LEVELS), slot.shape[0]), -1, np.int32)
        depth_m = np.asarray(frame.depth_m, dtype=np.float32)
        voxels = PixelVoxels(xyz, cfg.mask_part_link_m)  # shared by the levels (built on first use)
        for lvl, masks in enumerate(semantics.levels):
            if masks.num_masks == 0:
                continue
            seg_map = depth_consistent(
                masks.seg_map, depth_m, cfg.depth_edge_radius_px, cfg.depth_edge_tol_m, cfg.depth_edge_tol_per_m2
            )
            seg_map = erode_labels(seg_map, cfg.vote_erode_px, depth_m, cfg.depth_edge_tol_m, cfg.depth_edge_tol_per_m2)
            seg = np.where(slot >= 0, seg_map.reshape(-1), -1).astype(np.int32)
            seg = largest_3d_part(seg, xyz, cfg.mask_part_link_m, voxels)
            existing = np.asarray(points.slot_labels(lvl, slot), dtype=np.int32).reshape(-1)
            res = associate_level(
                self.table,
                self.coobs,
                lvl,
                seg,
                masks.features,
                masks.scores.astype(np.float32),
                existing,
                xyz,
                cfg,
                int(frame.stamp_ns),
                kf,
            )
            labels[lvl] = res.pixel_labels
            seen_ids, seen_px = np.unique(existing[existing >= 0], return_counts=True)
            seen = set(seen_ids[seen_px >= cfg.min_overlap_px].tolist())
            seen.update(res.matched.tolist(), res.created.tolist())
            for i in seen:
                self.in_view[i] = self.in_view.get(i, 0) + 1
            upd.matched += len(res.matched)
            upd.created += len(res.created)
        points.vote_labels(slot, alpha, labels)
        self.refresh(points)
        if kf % cfg.maintain_every_keyframes == 0:
            res = self.maintain(points)
            upd.merged, upd.dropped = res.merged, res.dropped
        self.version += 1
        upd.time_ms = (time.perf_counter() - t0) * 1e3
        log.debug("keyframe %d instances: %s, %d segments", kf, upd, len(self.table))
        return upd

    def maintain(self, points):
        """Merge / drop now and relabel the points; statistics are refreshed after."""
        res = maintain(self.table, self.coobs, self.config, self.keyframes, self.in_view)
        if res.merged or res.dropped:
            in_view: dict[int, int] = {}
            for i, n in self.in_view.items():  # a merged segment was in view whenever any of its parts was
                j = int(res.lut[i]) if i < len(res.lut) else i
                if j >= 0:
                    in_view[j] = max(in_view.get(j, 0), n)
            self.in_view = in_view
        if res.merged or res.dropped:
            for lvl in range(len(LEVELS)):
                points.relabel(lvl, res.lut)
            self.refresh(points)
        self.version += 1
        return res

    def in_view_counts(self) -> np.ndarray:
        """(S,) int32 per table row: keyframes that matched the segment or had its points in view (at least its
        matches: a map file older than the in-view counts has none)."""
        t = self.table
        counts = np.fromiter((self.in_view.get(int(i), 0) for i in t.ids.tolist()), np.int32, count=len(t))
        return np.maximum(counts, t.n_observations)

    def answerable(self) -> np.ndarray:
        """(S,) bool: the rows queries may answer with (``SegmentTable.answerable`` under this config: unrevisited
        segments of new points count when ``instances.answer_unrevisited``, unless a confirmed segment of their
        level whose feature agrees (``match_min_cosine``) touches their box (``box_margin_m``): a new side of a known
        object, seen first, waits for the merge pass instead of answering as a second object)."""
        cfg, t = self.config, self.table
        in_view = self.in_view_counts() if cfg.answer_unrevisited else None
        ans = t.answerable(cfg.min_points, cfg.min_observations, in_view, cfg.unrevisited_min_new_fraction)
        if in_view is None:
            return ans
        confirmed = t.answerable(cfg.min_points, cfg.min_observations)
        early, known = np.flatnonzero(ans & ~confirmed), np.flatnonzero(confirmed)
        if len(early) and len(known):
            m = cfg.box_margin_m
            lo_e, hi_e = t.aabb_min[early, None] - m, t.aabb_max[early, None] + m
            touch = np.all((lo_e <= t.aabb_max[None, known] + m) & (t.aabb_min[None, known] - m <= hi_e), axis=2)
            same = (t.level[early, None] == t.level[None, known]) & (
                t.unit_features(early) @ t.unit_features(known).T >= cfg.match_min_cosine
            )
            ans[early[(touch & same).any(axis=1)]] = False
        return ans

    def refresh(self, points) -> None:
        """Counts, boxes, colours and support from the points' current labels."""
        if points.num_points == 0:
            self.table.n_points[:] = 0
            return
        labels = [_np(points.labels(lvl)).astype(np.int32) for lvl in range(len(LEVELS))]
        normals = _np(points.normals) if hasattr(points, "normals") else None
        refresh_stats(self.table, labels, _np(points.points_xyz), _np(points.colors), self.config, normals)

    @property
    def nbytes(self) -> int:
        """Bytes of the segment table plus the co-observation counts (about 48 B per pair in a dict)."""
        return self.table.nbytes + 48 * len(self.coobs.counts)

    # ---------------------------------------------------------------- files
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f"table.{k}": v for k, v in self.table.to_arrays().items()}
        out.update({f"coobs.{k}": v for k, v in self.coobs.to_arrays().items()})
        out["keyframes"] = np.array([self.keyframes], np.int64)
        ids = np.array(sorted(self.in_view), np.int32)
        out["in_view.ids"] = ids
        out["in_view.counts"] = np.array([self.in_view[i] for i in ids.tolist()], np.int32)
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the state by ``to_arrays`` output; ValueError (state unchanged) when it is invalid."""
        table = SegmentTable.from_arrays(
            {k[6:]: v for k, v in arrays.items() if k.startswith("table.")}, self.table.feature_dim
        )
        if "coobs.pairs" not in arrays or "coobs.counts" not in arrays or "keyframes" not in arrays:
            raise ValueError("instance state lacks co-observation arrays or the keyframe counter")
        coobs = CoObservation.from_arrays(arrays["coobs.pairs"], arrays["coobs.counts"])
        in_view: dict[int, int] = {}
        if "in_view.ids" in arrays:  # older map files lack it: every segment then counts as seen when matched
            v_ids, v_n = np.asarray(arrays["in_view.ids"]), np.asarray(arrays.get("in_view.counts", []))
            if v_ids.ndim != 1 or v_n.shape != v_ids.shape or (v_n.size and v_n.min() < 0):
                raise ValueError("instance in-view counts must be two (K,) arrays of counts >= 0")
            in_view = {int(i): int(n) for i, n in zip(v_ids.tolist(), v_n.tolist())}
        self.table, self.coobs, self.in_view = table, coobs, in_view
        self.keyframes = int(np.asarray(arrays["keyframes"]).reshape(-1)[0])
        self.version += 1


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
