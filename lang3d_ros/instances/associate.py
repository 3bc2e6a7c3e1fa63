"""Associating one keyframe's masks (one level) with the segment table, and counting co-observations.

For every mask the pixels that fused into map points (fusion's projective association, ``pixel_slot``) are
histogrammed by the segment those points already carry. A mask may pair with a segment whose features agree
(cosine) when enough of its pixels landed on the segment's points, or when the box of its points and the
segment's box overlap by most of the smaller one (a new side of a known object, or a segment an earlier mask of
this object started); masks and segments are paired one-to-one maximising the evidence (linear assignment), so
when a segment still spans two objects each mask keeps the segment it has most history with. A mask left over
starts a segment, unless it covers the same pixels as an established segment (IoU >= ``confused_min_iou``) whose
feature it does not share: that is the object under a confused label, and the mask is ignored.

A segment that no point has voted for yet keeps the box of its masks' points, so the next keyframe finds it
again. Every pixel of a mask votes for the mask's segment; fusion's weighted Boyer-Moore vote moves a point only
when the evidence of several keyframes outweighs what it had, so one wrong mask (two objects under one mask, a
confused label, an object split in two) does not re-label an object for good, and a wrong first keyframe is
undone by the next clean ones.

Pairs of segments are counted for the maintenance pass: "together" when a mask matched to one also covers the
other and no mask of the frame matched the other, "apart" when two masks of the frame matched them while their
boxes touch; a pair seen together more often than apart is one object that some masks split. Cannot tell
apart two objects that every mask covers together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.table import SegmentTable


@dataclass
class CoObservation:
    """Per unordered pair of segment ids (a < b): [together, apart] keyframe counts."""

    counts: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def add(self, a: int, b: int, together: int, apart: int) -> None:
        key = (a, b) if a < b else (b, a)
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = np.zeros(2, np.int64)
        c[0] += together
        c[1] += apart

    def get(self, a: int, b: int) -> tuple[int, int]:
        c = self.counts.get((a, b) if a < b else (b, a))
        return (0, 0) if c is None else (int(c[0]), int(c[1]))

    def remap(self, lut: dict[int, int]) -> None:
        """Apply merges / drops: ids in ``lut`` become lut[id] (-1: removed); counts of merged pairs add up."""
        old = self.counts
        self.counts = {}
        for (a, b), c in old.items():
            a2, b2 = lut.get(a, a), lut.get(b, b)
            if a2 < 0 or b2 < 0 or a2 == b2:
                continue
            self.add(a2, b2, int(c[0]), int(c[1]))

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = np.array(sorted(self.counts), dtype=np.int32).reshape(-1, 2)
        vals = np.array([self.counts[tuple(k)] for k in keys.tolist()], dtype=np.int64).reshape(-1, 2)
        return {"pairs": keys, "counts": vals}

    @classmethod
    def from_arrays(cls, pairs: np.ndarray, counts: np.ndarray) -> "CoObservation":
        pairs, counts = np.asarray(pairs), np.asarray(counts)
        if pairs.ndim != 2 or pairs.shape[1:] != (2,) or counts.shape != pairs.shape:
            raise ValueError(f"co-observation arrays must be (P, 2), got {pairs.shape} and {counts.shape}")
        if counts.size and counts.min() < 0:
            raise ValueError("co-observation counts must be >= 0")
        out = cls()
        for (a, b), c in zip(pairs.tolist(), counts.tolist()):
            out.add(int(a), int(b), int(c[0]), int(c[1]))
        return out


@dataclass
class LevelAssociation:
    """Outcome for one level of one keyframe: pixel_labels (P,) int32 segment id each pixel votes for (-1
    none); matched / created: ids of segments matched / started."""

    pixel_labels: np.ndarray
    matched: np.ndarray
    created: np.ndarray


def _boxes_touch(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray, margin: float) -> np.ndarray:
    """(K,3) x4 -> (K,) bool: the margin-grown AABBs intersect."""
    return np.all((lo_a - margin <= hi_b + margin) & (lo_b - margin <= hi_a + margin), axis=-1)


def associate_level(
    table: SegmentTable,
    coobs: CoObservation,
    level: int,
    seg: np.ndarray,
    features: np.ndarray,
    scores: np.ndarray,
    existing: np.ndarray,
    pixel_xyz: np.ndarray,
    config: InstanceConfig,
    stamp_ns: int,
    keyframe: int,
) -> LevelAssociation:
    """Associate one level's masks and update ``table`` (features, counts, new rows) and ``coobs``.

    seg (P,) int32 mask row per pixel (-1 none) for the P pixels of the frame; features (M, D) unit rows;
    scores (M,) mask confidences; existing (P,) int32 segment id of the map point each pixel fused into
    (-1: no point, or a point without a segment at this level); pixel_xyz (P, 3) map-frame point of each pixel
    (NaN where there is none). Pixels without a map point must carry seg -1 or existing -1 and NaN xyz.
    """
    cfg = config
    n_pix = seg.shape[0]
    m_count = int(features.shape[0])
    out = np.full(n_pix, -1, np.int32)
    if m_count == 0:
        return LevelAssociation(out, np.zeros(0, np.int32), np.zeros(0, np.int32))
    has_pt = np.isfinite(pixel_xyz[:, 0])
    in_mask = (seg >= 0) & has_pt
    px_per_mask = np.bincount(seg[in_mask], minlength=m_count)
    feats = features.astype(np.float32)

    # (mask, segment) overlap histogram over pixels whose point already has a segment of this level
    lab = in_mask & (existing >= 0)
    seg_ids, inv = np.unique(existing[lab], return_inverse=True)
    rows = table.row_of(seg_ids)
    ok_seg = (rows >= 0) & (table.level[np.maximum(rows, 0)] == level)
    u = len(seg_ids)
    width = max(u, 1)
    hist = np.bincount(seg[lab].astype(np.int64) * width + inv, minlength=m_count * width)
    hist = hist.reshape(m_count, width)[:, :u]
    hist[:, ~ok_seg] = 0
    labelled_per_mask = np.maximum(hist.sum(1), 1)
    cos = feats @ table.unit_features(rows[ok_seg]).T if u else np.zeros((m_count, 0), np.float32)
    cos_full = np.full((m_count, u), -1.0, np.float32)
    cos_full[:, ok_seg] = cos

    # boxes of the masks' points
    active = px_per_mask >= cfg.min_overlap_px
    box_lo = np.zeros((m_count, 3))
    box_hi = np.zeros((m_count, 3))
    pts_mask = seg[in_mask]
    xyz = pixel_xyz[in_mask]
    order = np.argsort(pts_mask, kind="stable")
    starts = np.searchsorted(pts_mask[order], np.arange(m_count + 1))
    for m in np.flatnonzero(active):
        p = xyz[order[starts[m] : starts[m + 1]]]
        box_lo[m], box_hi[m] = np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)

    # candidates: the level's segments with a box or with labelled pixels in some mask
    cols = table.rows_of_level(level)
    cols = cols[np.any(table.aabb_max[cols] > table.aabb_min[cols], axis=1) | np.isin(cols, rows[ok_seg])]
    n_c = len(cols)
    col_of_seg = np.searchsorted(cols, rows) if n_c else np.zeros(u, np.int64)
    hist_c = np.zeros((m_count, n_c), np.float64)
    if u and n_c:
        in_cols = ok_seg & (col_of_seg < n_c) & (cols[np.minimum(col_of_seg, n_c - 1)] == rows)
        hist_c[:, col_of_seg[in_cols]] = hist[:, in_cols]
    cos_c = feats @ table.unit_features(cols).T if n_c else np.zeros((m_count, 0), np.float32)
    blo = table.aabb_min[cols].astype(np.float64) - cfg.box_margin_m
    bhi = table.aabb_max[cols].astype(np.float64) + cfg.box_margin_m
    ext = np.maximum(box_hi - box_lo, 0.02)
    side = np.minimum(box_hi[:, None] + 0.01, bhi[None]) - np.maximum(box_lo[:, None] - 0.01, blo[None])
    inter = np.prod(np.clip(side, 0.0, None), axis=2)
    frac = inter / np.minimum(np.prod(ext + 0.02, axis=1)[:, None], np.prod(bhi - blo, axis=1)[None])  # of the smaller
    agree = (cos_c >= cfg.match_min_cosine) & active[:, None]
    by_overlap = (hist_c >= cfg.min_overlap_px) & (hist_c >= cfg.min_overlap_fraction * px_per_mask[:, None])
    by_box = frac >= cfg.containment_min_fraction
    valid = agree & (by_overlap | by_box)
    # one-to-one pairing maximising the evidence: labelled pixels shared, plus half the mask's pixels times the box
    # overlap (a segment an earlier mask of this object started, a new side of a known object)
    score = hist_c + 0.5 * frac * px_per_mask[:, None] * by_box
    match_id = np.full(m_count, -1, np.int64)
    keep_cols = np.flatnonzero(valid.any(0))
    if len(keep_cols):
        big = 1e12
        cost = np.where(valid[:, keep_cols], -score[:, keep_cols], big)
        cost = np.concatenate([cost, np.where(np.eye(m_count, dtype=bool), 0.0, big)], 1)  # "no match" columns
        r_idx, c_idx = linear_sum_assignment(cost)
        ok = c_idx < len(keep_cols)
        match_id[r_idx[ok]] = table.ids[cols[keep_cols[c_idx[ok]]]]
    created_mask = np.zeros(m_count, bool)
    confused = np.zeros(m_count, bool)
    if u and cfg.confused_min_iou < 1.0:
        # a mask that covers the same pixels as an established segment (IoU with the segment's pixels in view)
        # but names something else is that object under a confused label: it neither starts a segment nor votes
        ex = existing[has_pt & (existing >= 0)]
        pos = np.searchsorted(seg_ids, ex)
        hit = (pos < u) & (seg_ids[np.minimum(pos, u - 1)] == ex)
        in_view = np.bincount(pos[hit], minlength=u)
        j = np.argmax(hist, axis=1)
        inter = hist[np.arange(m_count), j].astype(np.float64)
        iou = inter / np.maximum(px_per_mask + in_view[j] - inter, 1)
        established = ok_seg[j] & (table.n_observations[np.maximum(rows[j], 0)] >= cfg.confused_min_observations)
        disagree = cos_full[np.arange(m_count), j] < cfg.match_min_cosine  # not just left over by the pairing
        confused = active & (match_id < 0) & established & disagree & (iou >= cfg.confused_min_iou)
    new_masks = np.flatnonzero(active & (match_id < 0) & ~confused)
    if len(new_masks):
        new_frac = 1.0 - hist[new_masks].sum(1) / np.maximum(px_per_mask[new_masks], 1)  # points without a segment
        match_id[new_masks] = table.append(level, feats[new_masks], scores[new_masks], stamp_ns, keyframe, new_frac)
        rows_new = table.row_of(match_id[new_masks])
        table.aabb_min[rows_new], table.aabb_max[rows_new] = box_lo[new_masks], box_hi[new_masks]
        created_mask[new_masks] = True
    grow = np.flatnonzero((match_id >= 0) & ~created_mask)
    if len(grow):  # a segment no point voted for yet: its box is the union of its masks' boxes
        r = table.row_of(match_id[grow])
        empty = table.n_points[r] == 0
        r, g = r[empty], grow[empty]
        table.aabb_min[r] = np.minimum(table.aabb_min[r], box_lo[g])
        table.aabb_max[r] = np.maximum(table.aabb_max[r], box_hi[g])

    # running mean features and observation counts of matched segments
    upd = np.flatnonzero((match_id >= 0) & ~created_mask)
    if len(upd):
        r = table.row_of(match_id[upd])
        w_old = table.feature_weight[r].astype(np.float32)
        w_new = scores[upd].astype(np.float32)
        f = table.unit_features(r) * w_old[:, None] + feats[upd] * w_new[:, None]
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)
        table.feature[r] = f.astype(np.float16)
        table.feature_weight[r] = w_old + w_new
        table.n_observations[r] += 1
        table.last_seen_ns[r] = stamp_ns
        table.last_keyframe[r] = keyframe

    # every pixel of an active mask votes for the mask's segment: the points' vote (weighted Boyer-Moore over
    # keyframes) decides, so one wrong mask does not move an established point
    sel = in_mask & (active & ~confused)[np.maximum(seg, 0)]
    out[sel] = match_id[seg[sel]]
    if u:
        share = hist / labelled_per_mask[:, None]
        strong = (share >= cfg.split_min_share) & (hist >= cfg.min_overlap_px) & ok_seg[None, :]
        _count_pairs(table, coobs, strong, seg_ids, np.where(created_mask, -1, match_id), cfg)
    created = match_id[created_mask].astype(np.int32)
    return LevelAssociation(out, match_id[upd].astype(np.int32), created)


def _count_pairs(
    table: SegmentTable,
    coobs: CoObservation,
    strong: np.ndarray,
    seg_ids: np.ndarray,
    match_id: np.ndarray,
    cfg: InstanceConfig,
) -> None:
    """together: a mask matched to a also covers b (strong) and no mask of the frame matched b (b looks like a
    fragment of a); apart: a and b matched by two masks of the frame while their boxes touch. strong (M, U)
    bool over seg_ids; match_id (M,) segment each mask matched (-1 none or new)."""
    matched = match_id[match_id >= 0]
    matched_set = set(matched.tolist())
    for m in np.flatnonzero(match_id >= 0):
        a = int(match_id[m])
        for b in seg_ids[strong[m]].tolist():
            if b != a and b not in matched_set:
                coobs.add(a, int(b), 1, 0)
    ids = np.unique(matched)
    if len(ids) < 2:
        return
    rows = table.row_of(ids)
    ia, ib = np.triu_indices(len(ids), 1)
    touch = _boxes_touch(
        table.aabb_min[rows[ia]],
        table.aabb_max[rows[ia]],
        table.aabb_min[rows[ib]],
        table.aabb_max[rows[ib]],
        cfg.box_margin_m,
    )
    for a, b in zip(ids[ia[touch]].tolist(), ids[ib[touch]].tolist()):
        coobs.add(a, b, 0, 1)
