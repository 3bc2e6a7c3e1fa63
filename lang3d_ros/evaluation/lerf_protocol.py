"""LERF / LangSplat 2D evaluation protocol on rendered relevancy maps (numbers per view and query).

Localization: per level, the relevancy map is smoothed (0.5 x (29x29 mean, borders averaged over valid pixels)
+ 0.5 x map); the level with the highest smoothed maximum answers; a hit is its argmax pixel inside any GT box
of the query's label. Segmentation: that level's smoothed map is min-max normalised, stretched to [-1, 1] and
clipped to [0, 1], thresholded at 0.4, cleaned by a 7x7 majority vote, and compared with the GT mask (IoU).
What it cannot do: pixels no map point projects to hold relevancy 0 (holes count as background).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SMOOTH_KERNEL_PX = 29
MASK_THRESHOLD = 0.4
MAJORITY_PX = 7


def _mean_filter_valid(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over the size x size window, counting only pixels inside the image (no zero padding)."""
    s = ndimage.uniform_filter(a.astype(np.float64), size=size, mode="constant", cval=0.0)
    n = ndimage.uniform_filter(np.ones_like(a, dtype=np.float64), size=size, mode="constant", cval=0.0)
    return s / np.maximum(n, 1e-12)


def smooth_relevancy(rel_hw: np.ndarray, kernel_px: int = SMOOTH_KERNEL_PX) -> np.ndarray:
    """(H,W) relevancy -> 0.5 * (mean filter + relevancy), float64."""
    return 0.5 * (_mean_filter_valid(rel_hw, kernel_px) + rel_hw.astype(np.float64))


def segmentation_mask(smoothed_hw: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """(H,W) smoothed relevancy -> bool mask (normalise, stretch to [-1, 1], clip, threshold, majority vote)."""
    out = smoothed_hw - smoothed_hw.min()
    out = out / (out.max() + 1e-9)
    out = np.clip(out * 2.0 - 1.0, 0.0, 1.0)
    mask = out > threshold
    votes = _mean_filter_valid(mask.astype(np.float64), MAJORITY_PX)
    return votes > 0.5


def box_contains(boxes_xyxy: np.ndarray, u: float, v: float) -> bool:
    """(K,4) pixel boxes x1 y1 x2 y2 (inclusive) -> whether any holds pixel (u, v)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return bool(np.any((b[:, 0] <= u) & (u <= b[:, 2]) & (b[:, 1] <= v) & (v <= b[:, 3])))


@dataclass
class LevelMeasure:
    """One level of one (view, query): smoothed max, its argmax pixel (u = column, v = row), and the
    predicted-mask overlap with the GT mask in pixels."""

    score: float
    argmax_uv: tuple[int, int]
    intersection_px: int
    union_px: int

    def to_dict(self) -> dict:
        return {"score": float(self.score), "argmax_uv": [int(self.argmax_uv[0]), int(self.argmax_uv[1])],
                "intersection_px": int(self.intersection_px), "union_px": int(self.union_px)}


def measure_levels(rel_levels_hw: np.ndarray, gt_mask_hw: np.ndarray) -> list[LevelMeasure]:
    """(L,H,W) relevancy per level and the (H,W) bool GT mask -> one LevelMeasure per level."""
    out = []
    gt = np.asarray(gt_mask_hw, dtype=bool)
    for rel in np.asarray(rel_levels_hw):
        sm = smooth_relevancy(rel)
        v, u = np.unravel_index(int(np.argmax(sm)), sm.shape)
        pred = segmentation_mask(sm)
        out.append(LevelMeasure(float(sm.max()), (int(u), int(v)), int(np.sum(pred & gt)), int(np.sum(pred | gt))))
    return out


def score_view_query(levels: list[dict], gt_boxes_xyxy) -> tuple[bool, float, int]:
    """Level dicts (LevelMeasure.to_dict) + GT boxes -> (localization hit, IoU, chosen level)."""
    k = int(np.argmax([lv["score"] for lv in levels]))
    u, v = levels[k]["argmax_uv"]
    union = levels[k]["union_px"]
    iou = levels[k]["intersection_px"] / union if union > 0 else 0.0
    return box_contains(np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4), u, v), float(iou), k


def mask_boxes(mask_hw: np.ndarray) -> np.ndarray:
    """(H,W) bool -> (K,4) x1 y1 x2 y2 boxes of its 8-connected components (as the LERF labels box polygons)."""
    lab, n = ndimage.label(np.asarray(mask_hw, dtype=bool), structure=np.ones((3, 3)))
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is not None:
            boxes.append([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
