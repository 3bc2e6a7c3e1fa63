"""Tiled, differentiable 3D Gaussian rasterizer in plain PyTorch, following gsplat 1.5.3's rules.

Projection (EWA, as gsplat's ``persp_proj``): world -> camera with ``viewmats``; 3D covariance
R S S^T R^T from quats (wxyz) and scales; Jacobian of the pinhole projection evaluated at the mean with
x/z, y/z clamped to 1.3x the field of view; 2D covariance J W Sigma W^T J^T + ``eps2d`` * I (0.3 px^2
low-pass); radius ceil(e * sqrt(cov_xx)), ceil(e * sqrt(cov_yy)) with e = min(3.33, sqrt(2 ln(255 o)))
(gsplat's opacity-aware ~3-sigma bound). Culled: depth outside (near, far), det <= 0, opacity < 1/255,
boxes fully outside the image.

Rasterization: each Gaussian goes to every 16x16 tile its box touches; per tile, Gaussians are sorted
front to back by camera depth and composited at pixel centres (j + 0.5, i + 0.5):
alpha = min(0.999, o exp(-sigma)), skipped when sigma < 0 or alpha < 1/255, and a pixel stops (exclusive)
when its transmittance would fall to 1e-4 or below. Gaussians are processed in depth chunks with the
transmittance carried between chunks; a tile batch stops early when all its pixels are done.
Gradients come from autograd (no hand-written backward).

Cannot: distortion, fisheye/ortho cameras, antialiased mode, packed output, SH evaluation (colours are
features (N, D), any D). ``Ks`` here use gsplat's pixel convention (see ``render.render`` for the
project's integer-centre convention).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999  # gsplat 1.5.3 (the original 3DGS kernel uses 0.99)
TRANSMITTANCE_MIN = 1e-4
EXTEND_MAX = 3.33


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """quats (..., 4) wxyz, any norm -> rotation matrices (..., 3, 3)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """quats (N, 4) wxyz, scales (N, 3) metres -> covariances (N, 3, 3) = R S S^T R^T."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> dict[str, torch.Tensor]:
    """EWA projection of N Gaussians into C cameras (gsplat's fully fused projection, pinhole).

    means (N, 3), quats (N, 4) wxyz, scales (N, 3), opacities (N,) in [0, 1], viewmats (C, 4, 4)
    world -> camera, Ks (C, 3, 3) -> dict with means2d (C, N, 2) px, conics (C, N, 3) (inverse 2D
    covariance a, b, c), depths (C, N) camera z, radii (C, N, 2) int32 (0: culled), covars2d (C, N, 2, 2).
    """
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]
    covars_c = R[:, None] @ quat_scale_to_covar(quats, scales)[None] @ R[:, None].transpose(-1, -2)
    x, y, z = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1)
    J = J.reshape(z.shape + (2, 3))
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        op = opacities.detach()[None].expand_as(z)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(torch.clamp(op / ALPHA_THRESHOLD, min=1.0))), max=EXTEND_MAX)
        rx = torch.ceil(extend * torch.sqrt(torch.clamp(a.detach(), min=0.0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp(c.detach(), min=0.0)))
        m2 = means2d.detach()
        valid = (det.detach() > 0) & (z.detach() > near) & (z.detach() < far) & (op >= ALPHA_THRESHOLD)
        valid &= (rx > 0) | (ry > 0)
        valid &= (m2[..., 0] + rx > 0) & (m2[..., 0] - rx < width) & (m2[..., 1] + ry > 0) & (m2[..., 1] - ry < height)
        radii = torch.stack([rx, ry], dim=-1) * valid[..., None]
    return {
        "means2d": means2d,
        "conics": conics,
        "depths": z,
        "radii": radii.to(torch.int32),
        "covars2d": cov2d,
    }


@torch.no_grad()
def intersect_tiles(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One camera: means2d (N, 2), radii (N, 2), depths (N,) -> (tile_ids (M,), gauss_ids (M,), counts (T,)).

    Pairs are ordered by tile, then front to back (ties by Gaussian index), like gsplat's sorted isect ids.
    """
    order = torch.argsort(depths, stable=True)
    ok = (radii[order] > 0).all(dim=-1)
    order = order[ok]
    m = means2d[order] / tile_size
    r = radii[order].to(means2d.dtype) / tile_size
    x0 = torch.clamp(torch.floor(m[:, 0] - r[:, 0]), 0, tiles_x).long()
    x1 = torch.clamp(torch.ceil(m[:, 0] + r[:, 0]), 0, tiles_x).long()
    y0 = torch.clamp(torch.floor(m[:, 1] - r[:, 1]), 0, tiles_y).long()
    y1 = torch.clamp(torch.ceil(m[:, 1] + r[:, 1]), 0, tiles_y).long()
    wx = x1 - x0
    n = wx * (y1 - y0)
    gauss = torch.repeat_interleave(order, n)
    start = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    local = torch.arange(gauss.numel(), device=means2d.device) - start
    wx_r = torch.repeat_interleave(wx, n).clamp(min=1)
    tile = (torch.repeat_interleave(y0, n) + local // wx_r) * tiles_x + torch.repeat_interleave(x0, n) + local % wx_r
    tile, perm = torch.sort(tile, stable=True)
    gauss = gauss[perm]
    counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
    return tile, gauss, counts


def rasterize_tiles(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    features: torch.Tensor,
    depths: torch.Tensor,
    radii: torch.Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    chunk: int = 64,
    max_elements: int = 1 << 21,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One camera. means2d (N, 2), conics (N, 3), opacities (N,), features (N, D), depths (N,), radii (N, 2)
    -> (features image (H, W, D), alpha (H, W, 1), accumulated depth sum w z (H, W, 1)); no background."""
    N, D = features.shape
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles, P = tiles_x * tiles_y, tile_size * tile_size
    dev, dt = features.device, features.dtype
    _, gauss_ids, counts = intersect_tiles(means2d, radii, depths, tile_size, tiles_x, tiles_y)
    offsets = torch.cumsum(counts, 0) - counts
    tile_order = torch.argsort(counts, descending=True)
    tile_order = tile_order[counts[tile_order] > 0]
    local = torch.arange(P, device=dev)
    pix_local = torch.stack([local % tile_size, local // tile_size], dim=-1).to(dt) + 0.5  # (P, 2)

    out_feat, out_w, out_z = [], [], []
    batch = max(1, max_elements // (P * chunk))
    for b0 in range(0, tile_order.numel(), batch):
        tb = tile_order[b0 : b0 + batch]
        cb = counts[tb]
        B = tb.numel()
        origin = torch.stack([tb % tiles_x, tb // tiles_x], dim=-1).to(dt) * tile_size
        pix = origin[:, None, :] + pix_local[None]  # (B, P, 2)
        T = torch.ones(B, P, device=dev, dtype=dt)
        acc_f = torch.zeros(B, P, D, device=dev, dtype=dt)
        acc_w = torch.zeros(B, P, device=dev, dtype=dt)
        acc_z = torch.zeros(B, P, device=dev, dtype=dt)
        for k0 in range(0, int(cb.max()), chunk):
            k = torch.arange(k0, min(k0 + chunk, int(cb.max())), device=dev)
            in_list = k[None] < cb[:, None]  # (B, K)
            flat = torch.clamp(offsets[tb][:, None] + k[None], max=max(gauss_ids.numel() - 1, 0))
            g = gauss_ids[flat]  # (B, K)
            d = means2d[g][:, None, :, :] - pix[:, :, None, :]  # (B, P, K, 2)
            co = conics[g][:, None]  # (B, 1, K, 3)
            sigma = 0.5 * (co[..., 0] * d[..., 0] ** 2 + co[..., 2] * d[..., 1] ** 2) + co[..., 1] * d[..., 0] * d[..., 1]
            alpha = torch.clamp(opacities[g][:, None, :] * torch.exp(-sigma), max=ALPHA_MAX)
            keep = in_list[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
            alpha = alpha * keep
            cum = torch.cumprod(1.0 - alpha, dim=-1)
            next_T = T[..., None] * cum
            T_before = torch.cat([T[..., None], next_T[..., :-1]], dim=-1)
            w = alpha * T_before * (next_T > TRANSMITTANCE_MIN)
            acc_f = acc_f + torch.bmm(w, features[g])
            acc_w = acc_w + w.sum(-1)
            acc_z = acc_z + (w * depths[g][:, None, :]).sum(-1)
            T = next_T[..., -1]
            if bool((T <= TRANSMITTANCE_MIN).all()):
                break
        out_feat.append(acc_f)
        out_w.append(acc_w)
        out_z.append(acc_z)

    def to_image(chunks: list[torch.Tensor], ch: int) -> torch.Tensor:
        full = torch.zeros(n_tiles, P, ch, device=dev, dtype=dt)
        if chunks:
            vals = torch.cat(chunks, 0).reshape(-1, P, ch)
            full = full.index_copy(0, tile_order, vals)
        img = full.reshape(tiles_y, tiles_x, tile_size, tile_size, ch).permute(0, 2, 1, 3, 4)
        return img.reshape(tiles_y * tile_size, tiles_x * tile_size, ch)[:height, :width]

    return to_image(out_feat, D), to_image(out_w, 1), to_image(out_z, 1)


def rasterize_torch(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    features: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    backgrounds: torch.Tensor | None = None,
    expected_depth: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """gsplat-like ``rasterization`` for C cameras (gsplat pixel convention, ``sh_degree=None``).

    Returns image (C, H, W, D) (+1 channel of expected depth when ``expected_depth``), alpha (C, H, W, 1),
    meta with means2d (C, N, 2) (its ``.grad`` is kept for densification when it requires grad), radii,
    depths, conics.
    """
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far)
    if proj["means2d"].requires_grad:
        proj["means2d"].retain_grad()
    images, alphas = [], []
    for ci in range(viewmats.shape[0]):
        img, alpha, zsum = rasterize_tiles(
            proj["means2d"][ci], proj["conics"][ci], opacities, features, proj["depths"][ci], proj["radii"][ci],
            width, height, tile_size,
        )
        if backgrounds is not None:
            img = img + backgrounds[ci] * (1.0 - alpha)
        if expected_depth:
            img = torch.cat([img, zsum / alpha.clamp(min=1e-10)], dim=-1)
        images.append(img)
        alphas.append(alpha)
    return torch.stack(images), torch.stack(alphas), proj
