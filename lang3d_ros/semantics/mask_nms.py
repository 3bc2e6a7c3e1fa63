"""LangSplat's mask NMS, vectorised: one matrix product instead of an O(n^2) Python loop.

Semantics (LangSplat ``preprocess.mask_nms``), masks sorted by score, descending (stable order for ties):
- IoU: mask j is dropped if any higher-scored mask i has IoU(i, j) > ``iou_thr`` (every higher mask counts,
  dropped or not: a matrix NMS, not a greedy one);
- score: mask j is dropped if its score <= ``score_thr``; if that drops every mask, the 3 best stay eligible;
- containment: for a pair (i, j), with r_i = |i & j| / |i| and r_j = |i & j| / |j|, when r_i < 0.5 and
  r_j >= 0.85 (j lies inside a much larger i) j is dropped if 1 - r_i * r_j > 1 - ``inner_thr``; the mirror
  case (i inside a much larger j) drops i. This is applied in both score directions, so a small mask nested
  in a big one goes whatever the scores. If that rule would drop every mask, the 3 best stay eligible
  (separately for each direction, as LangSplat does).
Masks of zero area are never kept (LangSplat divides by zero there). Cannot handle soft masks: inputs are boolean.
"""

from __future__ import annotations

import torch

CONTAIN_SMALL = 0.5  # r of the large mask below which the pair is "nested" (LangSplat's constant)
CONTAIN_LARGE = 0.85  # r of the small mask at or above which it lies "inside" the large one


def pairwise_intersections(masks: torch.Tensor, chunk_elements: int = 1 << 26) -> torch.Tensor:
    """masks (N, H, W) bool -> (N, N) float32 pixel counts of pairwise intersections.

    One float32 matmul per chunk of pixels (at most ``chunk_elements`` N*pixels floats live at once);
    0/1 inputs and float32 accumulation keep counts exact below 2^24 pixels (also under TF32).
    """
    n = masks.shape[0]
    flat = masks.reshape(n, -1)
    out = torch.zeros((n, n), dtype=torch.float32, device=masks.device)
    step = max(1, chunk_elements // max(n, 1))
    for start in range(0, flat.shape[1], step):
        p = flat[:, start : start + step].float()
        out += p @ p.T
    return out


def mask_nms(
    masks: torch.Tensor,
    scores: torch.Tensor,
    iou_thr: float = 0.8,
    score_thr: float = 0.7,
    inner_thr: float = 0.5,
) -> torch.Tensor:
    """Vectorised LangSplat mask NMS.

    masks: (N, H, W) bool; scores: (N,) float (LangSplat: stability * predicted IoU).
    Returns (K,) int64 indices into the inputs of the kept masks, in descending score order.
    """
    if masks.ndim != 3 or scores.ndim != 1 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"need masks (N,H,W) and scores (N,), got {tuple(masks.shape)} and {tuple(scores.shape)}")
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool, got {masks.dtype}")
    n = masks.shape[0]
    device = masks.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    scores = scores.to(device=device, dtype=torch.float32)
    order = torch.sort(scores, descending=True, stable=True).indices
    m = masks[order]
    s = scores[order]
    area = m.reshape(n, -1).sum(dim=1).float()
    inter = pairwise_intersections(m)
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))
    upper = torch.ones((n, n), dtype=torch.bool, device=device).triu(diagonal=1)
    iou_max = torch.where(upper, iou, torch.zeros_like(iou)).amax(dim=0)

    safe_area = area.clamp_min(1.0)
    r_row = inter / safe_area[:, None]  # |i & j| / |i|, i = row
    r_col = inter / safe_area[None, :]  # |i & j| / |j|, j = column
    # LangSplat stores "column mask inside the much larger row mask" at [row, col] for both score orders
    nested = (r_row < CONTAIN_SMALL) & (r_col >= CONTAIN_LARGE)
    inner = torch.where(nested, 1.0 - r_row * r_col, torch.zeros_like(inter))
    inner_u = inner.triu(diagonal=1).amax(dim=0)  # j dropped for lying inside a higher-scored larger mask
    inner_l = inner.tril(diagonal=1).amax(dim=0)  # i dropped for lying inside a lower-scored larger mask
    # (tril(diagonal=1) also reads the first superdiagonal, as LangSplat does)

    top = torch.arange(n, device=device) < 3  # sorted order: the 3 best
    keep_iou = iou_max <= iou_thr
    keep_conf = s > score_thr
    keep_u = inner_u <= 1.0 - inner_thr
    keep_l = inner_l <= 1.0 - inner_thr
    if not bool(keep_conf.any()):
        keep_conf = top
    if not bool(keep_u.any()):
        keep_u = top
    if not bool(keep_l.any()):
        keep_l = top
    keep = keep_iou & keep_conf & keep_u & keep_l & (area > 0)
    return order[keep]
