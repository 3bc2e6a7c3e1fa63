"""LERF / LangSplat 2D evaluation protocol on rendered relevancy maps (numbers per view and query).

As LangSplat's evaluation code does it, with the smoothing kernel scaled to the evaluated image:
- Kernel: LangSplat smooths with a ~29-30 px mean filter on LERF's images (~986 px wide). The kernel is defined
  for that width: ``smooth_kernel_px(width)`` keeps its angular extent (29 px at 986 px, 5 px at 160 px; nearest
  odd size, >= 1). Borders are averaged over the pixels inside the image (no zero padding).
- Localization: per level, the relevancy map is mean-filtered (pure mean, as LangSplat's localization); the level
  with the highest filtered maximum answers; a hit is its argmax pixel inside any GT box of the query's label.
- Segmentation: per level, 0.5 x (mean-filtered map + map) (LangSplat's segmentation); the level with the highest
  maximum of that map is min-max normalised, stretched to [-1, 1] and clipped to [0, 1], thresholded at 0.4,
  cleaned by a 7x7 majority vote, and compared with the GT mask (IoU).
What it cannot do: pixels no map point projects to hold relevancy 0 (holes count as background); on ties of the
maximum only the first argmax pixel is tested (LangSplat tests all tied pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LERF_IMAGE_WIDTH_PX = 986  # width of LERF's evaluation images, for which the kernel below is defined
LERF_SMOOTH_KERNEL_PX = 29  # mean-filter size at LERF_IMAGE_WIDTH_PX (LangSplat uses 30, LERF-sized)
MASK_THRESHOLD = 0.4
MAJORITY_PX = 7


def _mean_filter_valid(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over the size x size window, counting only pixels inside the image (no zero padding)."""
    s = ndimage.uniform_filter(a.astype(np.float64), size=size, mode="constant", cval=0.0)
    n = ndimage.uniform_filter(np.ones_like(a, dtype=np.float64), size=size, mode="constant", cval=0.0)
    return s / np.maximum(n, 1e-12)


def smooth_kernel_px(
    width_px: int, reference_kernel_px: int = LERF_SMOOTH_KERNEL_PX, reference_width_px: int = LERF_IMAGE_WIDTH_PX
) -> int:
    """Mean-filter size for an image ``width_px`` wide: the reference kernel scaled by width, nearest odd, >= 1."""
    if width_px <= 0 or reference_kernel_px <= 0 or reference_width_px <= 0:
        raise ValueError(
            f"sizes must be positive, got width {width_px}, kernel {reference_kernel_px} at {reference_width_px}"
        )
    scaled = reference_kernel_px * width_px / reference_width_px
    return max(1, 2 * int(np.floor((scaled - 1.0) / 2.0 + 0.5)) + 1)


def _check_kernel(kernel_px: int) -> None:
    if kernel_px <= 0 or kernel_px % 2 == 0:
        raise ValueError(f"kernel_px must be odd and positive, got {kernel_px}")


def localization_relevancy(rel_hw: np.ndarray, kernel_px: int) -> np.ndarray:
    """(H,W) relevancy -> its kernel_px mean filter (LangSplat's localization map), float64."""
    _check_kernel(kernel_px)
    return _mean_filter_valid(rel_hw, kernel_px)


def smooth_relevancy(rel_hw: np.ndarray, kernel_px: int) -> np.ndarray:
    """(H,W) relevancy -> 0.5 * (kernel_px mean filter + relevancy) (LangSplat's segmentation map), float64."""
    return 0.5 * (localization_relevancy(rel_hw, kernel_px) + rel_hw.astype(np.float64))


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
    """One level of one (view, query): the localization map's max (``score``) and its argmax pixel (u = column,
    v = row); the segmentation map's max (``seg_score``) and its predicted-mask overlap with the GT mask in pixels;
    the mean-filter size used."""

    score: float
    argmax_uv: tuple[int, int]
    intersection_px: int
    union_px: int
    seg_score: float
    kernel_px: int

    def to_dict(self) -> dict:
        return {
            "score": float(self.score),
            "argmax_uv": [int(self.argmax_uv[0]), int(self.argmax_uv[1])],
            "intersection_px": int(self.intersection_px),
            "union_px": int(self.union_px),
            "seg_score": float(self.seg_score),
            "kernel_px": int(self.kernel_px),
        }


def measure_levels(
    rel_levels_hw: np.ndarray, gt_mask_hw: np.ndarray, kernel_px: int | None = None
) -> list[LevelMeasure]:
    """(L,H,W) relevancy per level and the (H,W) bool GT mask -> one LevelMeasure per level.
    ``kernel_px``: mean-filter size; None: ``smooth_kernel_px(W)`` (LERF's kernel scaled to this width)."""
    rels = np.asarray(rel_levels_hw)
    if rels.ndim != 3:
        raise ValueError(f"relevancy must be (L, H, W), got shape {rels.shape}")
    k_px = smooth_kernel_px(rels.shape[2]) if kernel_px is None else int(kernel_px)
    _check_kernel(k_px)
    out = []
    gt = np.asarray(gt_mask_hw, dtype=bool)
    for rel in rels:
        loc = localization_relevancy(rel, k_px)
        v, u = np.unravel_index(int(np.argmax(loc)), loc.shape)
        seg = 0.5 * (loc + rel.astype(np.float64))
        pred = segmentation_mask(seg)
        out.append(
            LevelMeasure(
                float(loc.max()),
                (int(u), int(v)),
                int(np.sum(pred & gt)),
                int(np.sum(pred | gt)),
                float(seg.max()),
                k_px,
            )
        )
    return out


def score_view_query(levels: list[dict], gt_boxes_xyxy) -> tuple[bool, float, int]:
    """Level dicts (LevelMeasure.to_dict) + GT boxes -> (localization hit, IoU, localization's chosen level).
    The IoU is the level with the highest ``seg_score`` (records without it: the localization level)."""
    k = int(np.argmax([lv["score"] for lv in levels]))
    u, v = levels[k]["argmax_uv"]
    ks = int(np.argmax([lv.get("seg_score", lv["score"]) for lv in levels]))
    union = levels[ks]["union_px"]
    iou = levels[ks]["intersection_px"] / union if union > 0 else 0.0
    return box_contains(np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4), u, v), float(iou), k


def mask_boxes(mask_hw: np.ndarray) -> np.ndarray:
    """(H,W) bool -> (K,4) x1 y1 x2 y2 boxes of its 8-connected components (as the LERF labels box polygons)."""
    lab, n = ndimage.label(np.asarray(mask_hw, dtype=bool), structure=np.ones((3, 3)))
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is not None:
            boxes.append([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
