"""Image losses and metrics of 3DGS: L1, SSIM (11x11 Gaussian window, sigma 1.5), PSNR.
Images are (H, W, C) float tensors in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (H, W, C) images (zero padding at borders, as 3DGS)."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim needs two (H, W, C) images of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    c = a.shape[2]
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    w = _window(window, sigma, c, x)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, padding=window // 2, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def rgb_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """3DGS photometric loss (1 - lambda) L1 + lambda (1 - SSIM)."""
    return (1 - ssim_lambda) * (render - target).abs().mean() + ssim_lambda * (1 - ssim(render, target))


def psnr(render: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB for images in [0, 1]."""
    mse = float(((render.detach().clamp(0, 1) - target) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)
