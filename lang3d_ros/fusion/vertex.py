"""Vertex maps, normal maps and PointFusion sample confidence from a depth image, in torch.

Conventions follow gradSLAM's ``RGBDImages`` so that results agree with its reference maps:
pixel (u, v) = (column, row) with the centre of the top-left pixel at (0, 0); the signed ``fy`` is used
as it is (a negative ``fy`` flips y); invalid depth gives a zero vertex and a zero normal.

Normals are gradSLAM's: forward differences to the right and down neighbour, the last column / row
reusing the previous difference, ``n = normalize(cross(d_right, d_down))`` (zero where the cross product
is zero). They are not oriented towards the camera (gradSLAM does not orient them either) and, next to
depth holes, they are computed against the zero vertex of the hole exactly like gradSLAM does;
``normal_valid_mask`` says which pixels have both neighbours valid. ``edge_normal_map`` (PointFusion's
``edge_normals``) is the same where both are valid and falls back to the left / upper neighbour where not.
"""

from __future__ import annotations

import math

import torch

from lang3d_ros.device import resolve_device
from lang3d_ros.geometry.camera import Intrinsics


def valid_depth_mask(depth_m: torch.Tensor, min_depth_m: float = 0.0, max_depth_m: float = math.inf) -> torch.Tensor:
    """(H, W) float depth -> (H, W) bool: finite and min_depth_m < depth <= max_depth_m (NaN, Inf, <= 0 invalid)."""
    lo = max(float(min_depth_m), 0.0)
    return torch.isfinite(depth_m) & (depth_m > lo) & (depth_m <= max_depth_m)


def pixel_rays(intrinsics: Intrinsics, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 2) float32 ((u - cx) / fx, (v - cy) / fy): the camera-frame x/z and y/z of each pixel."""
    dev = resolve_device(device)
    u = torch.arange(intrinsics.width, dtype=torch.float32, device=dev)
    v = torch.arange(intrinsics.height, dtype=torch.float32, device=dev)
    x = (u - float(intrinsics.cx)) / float(intrinsics.fx)
    y = (v - float(intrinsics.cy)) / float(intrinsics.fy)
    return torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)


def vertex_map(depth_m: torch.Tensor, intrinsics: Intrinsics, rays: torch.Tensor | None = None) -> torch.Tensor:
    """(H, W) depth in metres -> (H, W, 3) float32 camera-frame points; invalid depth (0, NaN, Inf, < 0) -> 0.

    ``rays``: optional cached ``pixel_rays(intrinsics)`` on the same device.
    """
    if depth_m.ndim != 2 or depth_m.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(
            f"depth {tuple(depth_m.shape)} does not match intrinsics {intrinsics.height}x{intrinsics.width}"
        )
    if rays is None:
        rays = pixel_rays(intrinsics, depth_m.device)
    valid = valid_depth_mask(depth_m)
    z = torch.where(valid, depth_m, torch.zeros((), dtype=depth_m.dtype, device=depth_m.device)).to(torch.float32)
    return torch.cat([rays * z[..., None], z[..., None]], dim=-1)


def _forward_diff(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Forward difference along ``dim`` (0 rows, 1 cols) of (H, W, C); the last entry repeats the previous one."""
    d = torch.diff(v, dim=dim)
    last = d.narrow(dim, d.shape[dim] - 1, 1)
    return torch.cat([d, last], dim=dim)


def normal_map(vertices: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) vertex map (zeros where invalid) -> (H, W, 3) unit normals as gradSLAM computes them.

    Needs H >= 2 and W >= 2. Pixels whose vertex is zero (invalid depth) get a zero normal.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[0] < 2 or vertices.shape[1] < 2:
        raise ValueError(f"vertex map must be (H>=2, W>=2, 3), got {tuple(vertices.shape)}")
    a, b = _forward_diff(vertices, 1), _forward_diff(vertices, 0)
    # explicit products, not linalg.cross: its fused multiply-add leaves a residual for parallel a, b (at
    # depth holes a == b == -vertex), which would normalise to a random unit normal instead of gradSLAM's zero
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    n = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)
    norm = torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    n = n / torch.where(norm == 0, torch.ones_like(norm), norm)
    valid = vertices[..., 2:3] != 0
    return n * valid


def edge_normal_map(vertices: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) vertex map (zeros where invalid), (H, W) bool valid depth -> (H, W, 3) unit normals and (H, W)
    bool usable pixels. Per axis the difference to the next pixel where both are valid, else from the previous
    pixel where both are valid (the last column / row: the previous one, as gradSLAM); usable: valid, one
    difference per axis, non-zero normal. Equals ``normal_map`` on the pixels ``normal_valid_mask`` keeps."""
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[0] < 2 or vertices.shape[1] < 2:
        raise ValueError(f"vertex map must be (H>=2, W>=2, 3), got {tuple(vertices.shape)}")
    if valid.shape != vertices.shape[:2]:
        raise ValueError(f"valid mask must be {tuple(vertices.shape[:2])}, got {tuple(valid.shape)}")

    def one_sided(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = valid.shape[dim]
        d = torch.diff(vertices, dim=dim)  # d[k] = v[k + 1] - v[k]
        pair = valid.narrow(dim, 0, n - 1) & valid.narrow(dim, 1, n - 1)
        d0, p0 = torch.zeros_like(d.narrow(dim, 0, 1)), torch.zeros_like(pair.narrow(dim, 0, 1))
        fwd, fwd_ok = torch.cat([d, d0], dim=dim), torch.cat([pair, p0], dim=dim)
        bwd, bwd_ok = torch.cat([d0, d], dim=dim), torch.cat([p0, pair], dim=dim)
        return torch.where(fwd_ok[..., None], fwd, bwd), fwd_ok | bwd_ok

    (a, ok_a), (b, ok_b) = one_sided(1), one_sided(0)
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    n = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)
    norm = torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    usable = valid & ok_a & ok_b & (norm[..., 0] != 0)
    n = n / torch.where(norm == 0, torch.ones_like(norm), norm)
    return n * usable[..., None], usable


def normal_valid_mask(valid: torch.Tensor) -> torch.Tensor:
    """(H, W) bool valid-depth mask -> (H, W) bool: the pixel and both neighbours its normal uses are valid."""

    def both(dim: int) -> torch.Tensor:
        n = valid.shape[dim]
        pair = valid.narrow(dim, 0, n - 1) & valid.narrow(dim, 1, n - 1)
        return torch.cat([pair, pair.narrow(dim, n - 2, 1)], dim=dim)

    return valid & both(0) & both(1)


def confidence_map(vertices: torch.Tensor, intrinsics: Intrinsics, sigma: float, mode: str = "radial") -> torch.Tensor:
    """PointFusion sample confidence alpha = exp(-r^2 / (2 sigma^2)), (H, W) float32.

    mode "radial" (Keller et al. 2013, the paper gradSLAM cites): r = pixel distance from the principal point
    divided by half the image diagonal (0 at the centre, about 1 in the corners).
    mode "gradslam" (gradSLAM's code, ``get_alpha`` on the camera-frame vertex map): r = |p_cam| in metres;
    alpha is then clamped to [1e-20, 1.01] as gradSLAM does. Far points get almost no weight in this mode.
    """
    if mode == "gradslam":
        r2 = (vertices.to(torch.float32) ** 2).sum(-1)
        return torch.exp(-r2 / (2.0 * sigma * sigma)).clamp(min=1e-20, max=1.01)
    if mode != "radial":
        raise ValueError(f"confidence mode must be 'radial' or 'gradslam', got {mode!r}")
    h, w = vertices.shape[:2]
    dev = vertices.device
    du = torch.arange(w, dtype=torch.float32, device=dev) - float(intrinsics.cx)
    dv = torch.arange(h, dtype=torch.float32, device=dev) - float(intrinsics.cy)
    half_diag2 = (w * w + h * h) / 4.0
    r2 = (du[None, :] ** 2 + dv[:, None] ** 2) / half_diag2
    return torch.exp(-r2 / (2.0 * sigma * sigma))
