"""SAM-like mask failures for the ground-truth semantics backend (an evaluation tool).

``MaskNoise.apply`` turns one level of perfect instance masks into what SAM + CLIP typically give, in this order:
missed masks (dropped), under-segmentation (touching masks merged; the feature of the larger object or an
area-weighted mix), over-segmentation (a mask split into 2..N parts along straight cuts in a random direction),
boundary jitter (erosion, or dilation into neighbours and background), label confusion (a mask embedded as a
near-synonym or a frequent confuser) and feature noise (isotropic, re-normalised). Every draw comes from a
generator seeded by (seed, keyframe index, level), so a run is reproducible keyframe by keyframe.
What it cannot do: SAM's spatial statistics (cuts follow texture and depth edges there, straight lines here),
masks of unlabelled clutter, or CLIP's view-dependent bias (the feature noise is isotropic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from lang3d_ros.semantics.config import MaskNoiseConfig
from lang3d_ros.semantics.types import LevelMasks

_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass
class MaskNoiseReport:
    """What one ``apply`` did, as counts (the denominators are the masks or pairs each failure could hit)."""

    masks_in: int = 0
    missed: int = 0
    touching_pairs: int = 0
    merged_pairs: int = 0
    split_candidates: int = 0
    split: int = 0
    parts: int = 0
    jitter_candidates: int = 0
    jittered: int = 0
    confusable: int = 0
    confused: int = 0
    masks_out: int = 0
    merged_mixed: int = 0


@dataclass
class _Segment:
    members: list[int]  # GT instance ids covered, largest first
    kind: str = "whole"  # whole | merged | part
    jittered: bool = False
    text: str = ""
    confused: bool = False


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class MaskNoise:
    """Applies ``MaskNoiseConfig`` to one level of one keyframe at a time. Stateless between calls."""

    def __init__(self, config: MaskNoiseConfig) -> None:
        config.validate()
        self.config = config
        self.table = config.confusion_table()

    def rng(self, frame_index: int, level: int) -> np.random.Generator:
        """The generator of (seed, keyframe index, level)."""
        return np.random.default_rng([int(self.config.seed) % 2**32, int(frame_index) % 2**63, int(level)])

    def apply(
        self,
        ids_map: np.ndarray,
        level: int,
        frame_index: int,
        labels: dict[int, str],
        texts: dict[int, str],
        embed: Callable[[list[str]], np.ndarray],
        feature_dim: int,
    ) -> tuple[LevelMasks, MaskNoiseReport]:
        """ids_map (H,W) int: GT instance id per pixel, -1 where no mask may be (unlabelled, too small); every id
        >= 0 must be in ``labels`` (bare label) and ``texts`` (the text the clean backend embeds). ``embed``:
        list of texts -> (N, feature_dim) unit float32 rows. Returns the noisy level (seg_map ids in range, unit
        features, ``labels`` the embedded texts, ``instance_ids`` the largest GT instance of each mask) and the
        report."""
        cfg = self.config
        ids_map = np.asarray(ids_map)
        if ids_map.ndim != 2 or not np.issubdtype(ids_map.dtype, np.integer):
            raise ValueError(f"ids_map must be a 2D integer array, got {ids_map.dtype} {ids_map.shape}")
        if not 0 <= level < 3:
            raise ValueError(f"level must be 0, 1 or 2, got {level}")
        rng = self.rng(frame_index, level)
        report = MaskNoiseReport()
        h, w = ids_map.shape
        ids, areas = np.unique(ids_map[ids_map >= 0], return_counts=True)
        missing = [int(i) for i in ids if int(i) not in labels or int(i) not in texts]
        if missing:
            raise ValueError(f"instance ids {missing} have no label/text")
        report.masks_in = len(ids)
        area_of = {int(i): int(a) for i, a in zip(ids, areas)}
        # 1. missed masks
        keep = rng.random(len(ids)) >= cfg.missed_prob
        report.missed = int((~keep).sum())
        ids = ids[keep]
        if len(ids) == 0:
            return LevelMasks.empty(h, w, feature_dim), report
        lut_pos = np.clip(np.searchsorted(ids, ids_map), 0, len(ids) - 1)
        seg = np.where((ids_map >= 0) & (ids[lut_pos] == ids_map), lut_pos, -1).astype(np.int64)
        segments = [_Segment([int(i)]) for i in ids]
        # 2. under-segmentation: pairs of touching masks
        pairs = self._touching_pairs(seg)
        report.touching_pairs = len(pairs)
        parent = np.arange(len(segments))
        order, draws = rng.permutation(len(pairs)), rng.random(len(pairs))
        used: set[int] = set()
        for k in order:
            a, b = (int(x) for x in pairs[k])
            if a in used or b in used or draws[k] >= cfg.under_segment_prob[level]:
                continue
            used.update((a, b))
            a_first = area_of[segments[a].members[0]] >= area_of[segments[b].members[0]]
            big, small = (a, b) if a_first else (b, a)
            parent[small] = big
            segments[big] = _Segment(segments[big].members + segments[small].members, "merged")
            report.merged_pairs += 1
        seg = np.where(seg >= 0, parent[np.maximum(seg, 0)], -1)
        alive = sorted(set(parent.tolist()))
        segments = [segments[i] for i in alive]
        remap = np.full(len(parent), -1, dtype=np.int64)
        remap[alive] = np.arange(len(alive))
        seg = np.where(seg >= 0, remap[np.maximum(seg, 0)], -1)
        # 3. over-segmentation: straight cuts in a random direction
        split_draws = rng.random(len(segments))
        for s in range(len(segments)):
            if segments[s].kind != "whole":
                continue
            rows, cols = np.nonzero(seg == s)
            if len(rows) < 2 * cfg.min_part_area_px:
                continue
            report.split_candidates += 1
            if split_draws[s] >= cfg.over_segment_prob[level]:
                continue
            k = int(rng.integers(2, cfg.over_segment_max_parts + 1))
            k = min(k, len(rows) // cfg.min_part_area_px)
            theta = rng.uniform(0.0, np.pi)
            rank = np.argsort(cols * np.cos(theta) + rows * np.sin(theta), kind="stable")
            spare = len(rows) - k * cfg.min_part_area_px
            sizes = cfg.min_part_area_px + np.floor(rng.dirichlet(np.full(k, 3.0)) * spare).astype(np.int64)
            sizes[-1] = len(rows) - sizes[:-1].sum()
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            segments[s].kind = "part"
            for p in range(1, k):
                sel = rank[bounds[p] : bounds[p + 1]]
                seg[rows[sel], cols[sel]] = len(segments)
                segments.append(_Segment(list(segments[s].members), "part"))
            report.split += 1
            report.parts += k
        # 4. boundary jitter
        if cfg.boundary_jitter_px > 0:
            n = len(segments)
            jit_draws = rng.random(n)
            radii = rng.integers(1, cfg.boundary_jitter_px + 1, n)
            dilate = rng.random(n) < 0.5
            report.jitter_candidates = len(segments)
            for s in range(len(segments)):
                if jit_draws[s] >= cfg.boundary_jitter_prob:
                    continue
                mask = seg == s
                if not mask.any():
                    continue
                if dilate[s]:
                    grown = ndimage.binary_dilation(mask, _CROSS, iterations=int(radii[s]))
                    seg[grown & ~mask] = s
                else:
                    seg[mask & ~ndimage.binary_erosion(mask, _CROSS, iterations=int(radii[s]))] = -1
                segments[s].jittered = True
                report.jittered += 1
        # 5. compact: masks that lost every pixel are gone
        counts = np.bincount(seg[seg >= 0], minlength=len(segments))
        alive = np.flatnonzero(counts > 0)
        remap = np.full(len(segments), -1, dtype=np.int64)
        remap[alive] = np.arange(len(alive))
        seg = np.where(seg >= 0, remap[np.maximum(seg, 0)], -1).astype(np.int32)
        segments = [segments[i] for i in alive]
        # 6. features: label confusion, merged features, feature noise
        conf_draws, mix_draws = rng.random(len(segments)), rng.random(len(segments))
        visible = sorted({labels[m] for sgm in segments for m in sgm.members})
        rows_out, texts_out, scores = [], [], np.ones(len(segments), dtype=np.float32)
        for s, sgm in enumerate(segments):
            base = sgm.members[0]
            label = labels[base]
            confusers = self.table.get(label) or [v for v in visible if v != label]
            text = texts[base]
            if confusers:
                report.confusable += 1
                if conf_draws[s] < cfg.label_confusion_prob:
                    other = str(confusers[int(rng.integers(len(confusers)))])
                    text = text.replace(label, other) if label in text else other
                    sgm.confused = True
                    report.confused += 1
            if sgm.kind == "merged" and mix_draws[s] < cfg.under_segment_mix_prob:
                member_texts = [text] + [texts[m] for m in sgm.members[1:]]
                weights = np.array([area_of[m] for m in sgm.members], dtype=np.float64)[:, None]
                feat = _unit((embed(member_texts).astype(np.float64) * weights).sum(0))
                report.merged_mixed += 1
            else:
                feat = embed([text])[0].astype(np.float64)
            std = cfg.part_feature_noise_std if sgm.kind == "part" else cfg.feature_noise_std
            if std > 0:
                feat = _unit(feat + rng.normal(0.0, std / np.sqrt(len(feat)), size=len(feat)))
            rows_out.append(feat)
            texts_out.append(text)
            if sgm.kind != "whole" or sgm.jittered or sgm.confused:
                scores[s] = float(rng.uniform(0.7, 0.95))  # SAM's predicted IoU of an imperfect mask
        report.masks_out = len(segments)
        if not rows_out:
            return LevelMasks.empty(h, w, feature_dim), report
        features = np.stack(rows_out).astype(np.float32)
        return LevelMasks(
            seg_map=seg,
            features=features,
            scores=scores,
            labels=texts_out,
            instance_ids=np.array([sgm.members[0] for sgm in segments], dtype=np.int64),
        ), report

    @staticmethod
    def _touching_pairs(seg: np.ndarray) -> np.ndarray:
        """(P,2) int64 sorted unique pairs of mask indices that share a 4-neighbour pixel edge."""
        pairs = []
        for a, b in ((seg[:, :-1], seg[:, 1:]), (seg[:-1, :], seg[1:, :])):
            m = (a >= 0) & (b >= 0) & (a != b)
            pairs.append(np.sort(np.stack([a[m], b[m]], axis=1), axis=1))
        p = np.concatenate(pairs)
        return np.unique(p, axis=0) if len(p) else np.zeros((0, 2), dtype=np.int64)
