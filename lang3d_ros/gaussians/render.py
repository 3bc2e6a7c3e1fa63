"""One rendering interface over two backends: gsplat (CUDA) and the tiled PyTorch rasterizer (any device).

``Ks`` follow ``lang3d_ros.geometry.Intrinsics`` (centre of the top-left pixel at (0, 0)); gsplat and the
torch rasterizer sample pixel centres at (j + 0.5, i + 0.5), so ``render`` adds 0.5 to cx, cy before calling
either. Both backends share gsplat's projection and compositing rules, so they agree to float32 precision
(see test/test_rasterizer_gpu.py). Cannot: SH evaluation (pass post-activation colours or latents as
``features``), distorted cameras.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lang3d_ros.gaussians.rasterizer import rasterize_torch

log = logging.getLogger(__name__)
BACKENDS = ("auto", "gsplat", "torch")


def resolve_backend(backend: str, device: torch.device) -> str:
    """ "auto" -> "gsplat" on CUDA when gsplat imports, else "torch"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return backend
    if device.type != "cuda":
        if backend == "gsplat":
            raise ValueError("backend 'gsplat' needs tensors on a CUDA device; use backend='torch' on CPU")
        return "torch"
    try:
        import gsplat  # noqa: F401
    except ImportError as exc:
        if backend == "gsplat":
            raise ValueError(f"backend 'gsplat' requested but gsplat does not import: {exc}") from exc
        return "torch"
    return "gsplat"


@dataclass
class RenderOutput:
    """image (C, H, W, D); alpha (C, H, W, 1); depth (C, H, W, 1) expected z in metres or None;
    meta: backend name and the projection results (means2d (C, N, 2), radii (C, N, 2), depths (C, N))."""

    image: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor | None
    meta: dict


def _check(means, quats, scales, opacities, features, viewmats, Ks, width, height, background) -> None:
    n = means.shape[0] if means.ndim == 2 else -1
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be (N, 3), got {tuple(means.shape)}")
    if tuple(quats.shape) != (n, 4) or tuple(scales.shape) != (n, 3) or tuple(opacities.shape) != (n,):
        raise ValueError(
            f"quats (N,4), scales (N,3), opacities (N,) must match N={n}; got {tuple(quats.shape)}, "
            f"{tuple(scales.shape)}, {tuple(opacities.shape)}"
        )
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features must be (N, D) with N={n}, got {tuple(features.shape)}")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or Ks.ndim != 3 or Ks.shape[1:] != (3, 3):
        raise ValueError(f"viewmats must be (C, 4, 4) and Ks (C, 3, 3), got {tuple(viewmats.shape)}, {tuple(Ks.shape)}")
    if viewmats.shape[0] != Ks.shape[0] or viewmats.shape[0] == 0:
        raise ValueError(f"need as many viewmats as Ks (>= 1), got {viewmats.shape[0]} and {Ks.shape[0]}")
    if bool((Ks[:, 0, 0] <= 0).any()) or bool((Ks[:, 1, 1] <= 0).any()):
        raise ValueError("focal lengths in Ks must be positive (mirror the viewmat for a y-up camera)")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if background is not None and tuple(background.shape) not in (
        (features.shape[1],),
        (viewmats.shape[0], features.shape[1]),
    ):
        raise ValueError(f"background must be (D,) or (C, D) with D={features.shape[1]}, got {tuple(background.shape)}")


def render(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    features: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backend: str = "auto",
    near: float = 0.01,
    far: float = 1e10,
    background: torch.Tensor | None = None,
    expected_depth: bool = False,
    eps2d: float = 0.3,
    tile_size: int = 16,
) -> RenderOutput:
    """Render N Gaussians into C cameras.

    means (N, 3) world metres; quats (N, 4) wxyz (any norm); scales (N, 3) metres (not log);
    opacities (N,) in [0, 1]; features (N, D) any D (RGB, 3-d latents, ...); viewmats (C, 4, 4)
    world -> camera (= inverse(T_world_cam)); Ks (C, 3, 3) in the project's pixel convention;
    background (D,) or (C, D). All tensors on one device; backend "auto" = gsplat on CUDA, torch otherwise.
    """
    _check(means, quats, scales, opacities, features, viewmats, Ks, width, height, background)
    name = resolve_backend(backend, means.device)
    C, D = viewmats.shape[0], features.shape[1]
    Ks_px = Ks.clone()
    Ks_px[:, 0, 2] += 0.5
    Ks_px[:, 1, 2] += 0.5
    bg = None if background is None else background.expand(C, D).to(features.dtype)
    if name == "gsplat":
        from gsplat import rasterization

        img, alpha, meta = rasterization(
            means,
            quats,
            scales,
            opacities,
            features,
            viewmats,
            Ks_px,
            int(width),
            int(height),
            near_plane=near,
            far_plane=far,
            eps2d=eps2d,
            sh_degree=None,
            packed=False,
            tile_size=tile_size,
            backgrounds=bg,
            render_mode="RGB+ED" if expected_depth else "RGB",
        )
        if meta["means2d"].requires_grad:
            meta["means2d"].retain_grad()
    else:
        img, alpha, meta = rasterize_torch(
            means,
            quats,
            scales,
            opacities,
            features,
            viewmats,
            Ks_px,
            int(width),
            int(height),
            near=near,
            far=far,
            eps2d=eps2d,
            tile_size=tile_size,
            backgrounds=bg,
            expected_depth=expected_depth,
        )
    meta = dict(meta, backend=name)
    depth = img[..., D:] if expected_depth else None
    return RenderOutput(image=img[..., :D], alpha=alpha, depth=depth, meta=meta)
