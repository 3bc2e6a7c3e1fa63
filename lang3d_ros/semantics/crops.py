"""LangSplat's per-mask CLIP input: bounding-box crop, background zeroed, zero-padded to a centred square, resized.

Resizing is bilinear with antialiasing (LangSplat uses OpenCV's bilinear without it), so small details of
large masks are averaged rather than aliased. One small crop per mask: cost grows with the masks' box areas,
never with M * H * W.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """masks (M, H, W) bool -> (M, 4) int64 [x0, y0, x1, y1) tight boxes, end-exclusive; all-zero for empty masks."""
    m = masks.shape[0]
    if m == 0:
        return torch.zeros((0, 4), dtype=torch.long, device=masks.device)
    rows = masks.any(dim=2)  # (M, H)
    cols = masks.any(dim=1)  # (M, W)
    h, w = masks.shape[1:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def mask_crops(rgb: torch.Tensor | np.ndarray, masks: torch.Tensor, size: int = 224) -> torch.Tensor:
    """rgb (H, W, 3) uint8; masks (M, H, W) bool -> (M, 3, size, size) float32 in [0, 1] on the masks' device.

    Empty masks give all-zero crops.
    """
    img = torch.as_tensor(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != torch.uint8:
        raise ValueError(f"rgb must be (H,W,3) uint8, got {tuple(img.shape)} {img.dtype}")
    if masks.ndim != 3 or masks.dtype != torch.bool or tuple(masks.shape[1:]) != tuple(img.shape[:2]):
        raise ValueError(
            f"masks must be (M,H,W) bool matching rgb {tuple(img.shape[:2])}, got {tuple(masks.shape)} {masks.dtype}"
        )
    device = masks.device
    img = img.to(device).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    out = torch.zeros((masks.shape[0], 3, size, size), dtype=torch.float32, device=device)
    for i, (x0, y0, x1, y1) in enumerate(mask_boxes(masks).tolist()):
        bw, bh = x1 - x0, y1 - y0
        if bw <= 0 or bh <= 0:
            continue
        side = max(bw, bh)
        square = torch.zeros((3, side, side), dtype=torch.float32, device=device)
        oy, ox = (side - bh) // 2, (side - bw) // 2
        square[:, oy : oy + bh, ox : ox + bw] = img[:, y0:y1, x0:x1] * masks[i, y0:y1, x0:x1]
        out[i] = F.interpolate(
            square[None], size=(size, size), mode="bilinear", align_corners=False, antialias=side > size
        )[0]
    return out.clamp_(0.0, 1.0)
