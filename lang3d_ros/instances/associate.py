"""Associating one keyframe's masks (one level) with the segment table, and counting co-observations.

For every mask the pixels that fused into map points (fusion's projective association, ``pixel_slot``) are
histogrammed by the segment those points already carry. Masks and segments are then paired one-to-one, largest
overlap first, when the overlap is large enough and the features agree (cosine). A mask left over tries the
segments whose box holds its points (a new side of a known object); failing that it starts a segment.

What each pixel votes for: its mask's segment, except where its point already belongs to another segment that
(a) no other mask of this frame claims and that covers a good share of this mask (the mask spans two segments:
under-segmentation must not fuse two objects), or (b) disagrees with the mask's feature (label confusion, a small
object inside a host's mask). Fusion's weighted Boyer-Moore vote then moves a point only when the evidence of
several keyframes outweighs what it had, so a wrong mask in one keyframe does not re-label an object for good.

Pairs of segments covered by one mask ("together") or by two masks of one frame while their boxes touch
("apart") are counted for the maintenance pass: a pair seen together more often than apart is one object that
some masks split. Cannot tell apart two objects that every mask covers together.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

    # one-to-one pairing, largest overlap first
    valid = (hist >= cfg.min_overlap_px) & (hist >= cfg.min_overlap_fraction * px_per_mask[:, None])
    valid &= cos_full >= cfg.match_min_cosine
    match = np.full(m_count, -1, np.int64)  # index into seg_ids
    claimed = np.zeros(u, bool)
    mi, si = np.nonzero(valid)
    for k in np.argsort(-hist[mi, si], kind="stable"):
        m, s = mi[k], si[k]
        if match[m] < 0 and not claimed[s]:
            match[m], claimed[s] = s, True
    match_id = np.where(match >= 0, seg_ids[np.maximum(match, 0)] if u else -1, -1).astype(np.int64)

    # geometric fallback, then new segments, for masks with enough points
    active = px_per_mask >= cfg.min_overlap_px
    left = np.flatnonzero(active & (match_id < 0))
    if len(left):
        lvl_rows = table.rows_of_level(level)
        taken = set(match_id[match_id >= 0].tolist())
        lvl_rows = lvl_rows[~np.isin(table.ids[lvl_rows], list(taken))] if taken else lvl_rows
        pts_mask = seg[in_mask]
        xyz = pixel_xyz[in_mask]
        order = np.argsort(pts_mask, kind="stable")
        starts = np.searchsorted(pts_mask[order], np.arange(m_count + 1))
        unit_lvl = table.unit_features(lvl_rows) if len(lvl_rows) else None
        for m in left:
            if unit_lvl is None:
                break
            p = xyz[order[starts[m]:starts[m + 1]]]
            lo, hi = np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)
            blo = table.aabb_min[lvl_rows] - cfg.box_margin_m
            bhi = table.aabb_max[lvl_rows] + cfg.box_margin_m
            inter = np.clip(np.minimum(hi, bhi) - np.maximum(lo, blo), 0.0, None)
            ext = np.maximum(hi - lo, 0.02)
            frac = np.prod(np.minimum(inter, ext) / ext, axis=1) * (table.n_points[lvl_rows] > 0)
            c = unit_lvl @ feats[m]
            cand = np.flatnonzero((frac >= cfg.containment_min_fraction) & (c >= cfg.match_min_cosine))
            if len(cand):
                best = cand[np.argmax(c[cand] * frac[cand])]
                match_id[m] = int(table.ids[lvl_rows[best]])
                keep = np.ones(len(lvl_rows), bool)
                keep[best] = False
                lvl_rows, unit_lvl = lvl_rows[keep], unit_lvl[keep]
        new_masks = np.flatnonzero(active & (match_id < 0))
        if len(new_masks):
            match_id[new_masks] = table.append(level, feats[new_masks], scores[new_masks], stamp_ns, keyframe)
    created_mask = np.zeros(m_count, bool)
    if len(left):
        created_mask[new_masks] = True

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

    # what each pixel votes for
    sel = in_mask & active[np.maximum(seg, 0)]
    px_match = np.where(sel, match_id[np.maximum(seg, 0)], -1)
    out[sel] = px_match[sel]
    if u:
        share = hist / labelled_per_mask[:, None]
        strong = (share >= cfg.split_min_share) & (hist >= cfg.min_overlap_px)
        claimed_ids = set(match_id[match_id >= 0].tolist())
        other = sel & lab & (existing != px_match)
        idx = np.flatnonzero(other)
        if len(idx):
            m_of = seg[idx].astype(np.int64)
            s_of = np.searchsorted(seg_ids, existing[idx])
            is_claimed = np.isin(existing[idx], list(claimed_ids)) if claimed_ids else np.zeros(len(idx), bool)
            keep_own = strong[m_of, s_of] & ~is_claimed & ok_seg[s_of]
            disagree = cos_full[m_of, s_of] < cfg.match_min_cosine
            out[idx[keep_own]] = existing[idx[keep_own]]
            out[idx[~keep_own & disagree]] = -1
        _count_pairs(table, coobs, hist, strong & ok_seg[None, :], seg_ids, match_id, cfg)
    created = match_id[created_mask].astype(np.int32)
    return LevelAssociation(out, match_id[upd].astype(np.int32), created)


def _count_pairs(table: SegmentTable, coobs: CoObservation, hist: np.ndarray, strong: np.ndarray, seg_ids: np.ndarray,
                 match_id: np.ndarray, cfg: InstanceConfig) -> None:
    """together: two segments strong in one mask; apart: strong in different masks, boxes touching."""
    mask_of: dict[int, int] = {}
    for m in range(hist.shape[0]):
        members = seg_ids[strong[m]].tolist()
        if match_id[m] >= 0 and int(match_id[m]) in seg_ids and int(match_id[m]) not in members:
            members.append(int(match_id[m]))
        for i, a in enumerate(members):
            mask_of.setdefault(a, m)
            for b in members[i + 1:]:
                if a != b:
                    coobs.add(int(a), int(b), 1, 0)
    ids = np.array(sorted(mask_of), dtype=np.int64)
    if len(ids) < 2:
        return
    rows = table.row_of(ids)
    masks = np.array([mask_of[int(i)] for i in ids])
    ia, ib = np.triu_indices(len(ids), 1)
    diff = masks[ia] != masks[ib]
    ia, ib = ia[diff], ib[diff]
    touch = _boxes_touch(table.aabb_min[rows[ia]], table.aabb_max[rows[ia]], table.aabb_min[rows[ib]],
                         table.aabb_max[rows[ib]], cfg.box_margin_m)
    for a, b in zip(ids[ia[touch]].tolist(), ids[ib[touch]].tolist()):
        coobs.add(a, b, 0, 1)
