"""Tiled, differentiable 3D Gaussian rasterizer in plain PyTorch, following gsplat 1.5.3's rules.

Projection (EWA, as gsplat's ``persp_proj``): world -> camera with ``viewmats``; 3D covariance
R S S^T R^T from quats (wxyz) and scales; Jacobian of the pinhole projection evaluated at the mean with
x/z, y/z clamped to 1.3x the field of view; 2D covariance J W Sigma W^T J^T + ``eps2d`` * I (0.3 px^2
low-pass); radius ceil(e * sqrt(cov_xx)), ceil(e * sqrt(cov_yy)) with e = min(3.33, sqrt(2 ln(255 o)))
(gsplat's opacity-aware ~3-sigma bound). Culled: depth outside (near, far), det <= 0, opacity < 1/255,
boxes fully outside the image.

Rasterization: each Gaussian goes to every 16x16 tile its box touches (pairs whose alpha is below 1/255
on all the tile's pixels are dropped, losslessly); per tile, Gaussians are sorted
front to back by camera depth and composited at pixel centres (j + 0.5, i + 0.5):
alpha = min(0.999, o exp(-sigma)), skipped when sigma < 0 or alpha < 1/255, and a pixel stops (exclusive)
when its transmittance would fall to 1e-4 or below. Gaussians are processed in depth chunks with the
transmittance carried between chunks; a tile stops as soon as all its pixels are done.
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
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
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
def _min_sigma_over_tiles(
    m: torch.Tensor, con: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, tile: int
) -> torch.Tensor:
    """Lower bound of sigma over the pixel centres of tiles (x0, y0) for Gaussians at m (M, 2) with conics
    con (M, 3): the exact minimum of the quadratic over the tile's rectangle of pixel centres."""
    lo_x, lo_y = x0 * tile + 0.5, y0 * tile + 0.5
    hi_x, hi_y = lo_x + tile - 1, lo_y + tile - 1
    a, b, c = con.unbind(-1)

    def sig(x, y):
        dx, dy = x - m[:, 0], y - m[:, 1]
        return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy

    best = []
    for X in (lo_x, hi_x):  # vertical edges: minimise over y
        y = torch.clamp(m[:, 1] - b * (X - m[:, 0]) / c, lo_y, hi_y)
        best.append(sig(X, y))
    for Y in (lo_y, hi_y):  # horizontal edges: minimise over x
        x = torch.clamp(m[:, 0] - b * (Y - m[:, 1]) / a, lo_x, hi_x)
        best.append(sig(x, Y))
    inside = (m[:, 0] >= lo_x) & (m[:, 0] <= hi_x) & (m[:, 1] >= lo_y) & (m[:, 1] <= hi_y)
    return torch.where(inside, torch.zeros_like(a), torch.stack(best).min(0).values)


@torch.no_grad()
def intersect_tiles(
    means2d: torch.Tensor,
    radii: torch.Tensor,
    depths: torch.Tensor,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    conics: torch.Tensor | None = None,
    opacities: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One camera: means2d (N, 2), radii (N, 2), depths (N,) -> (tile_ids (M,), gauss_ids (M,), counts (T,)).

    Pairs are ordered by tile, then front to back (ties by Gaussian index), like gsplat's sorted isect ids.
    With conics (N, 3) and opacities (N,), pairs whose alpha stays below 1/255 on every pixel centre of the
    tile are dropped: the compositing rule skips them anyway, so the image is unchanged.
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
    tx = torch.repeat_interleave(x0, n) + local % wx_r
    ty = torch.repeat_interleave(y0, n) + local // wx_r
    if conics is not None and opacities is not None and gauss.numel():
        smin = _min_sigma_over_tiles(means2d[gauss].detach(), conics[gauss].detach(), tx, ty, tile_size)
        hit = opacities[gauss].detach() * torch.exp(-smin) >= ALPHA_THRESHOLD * (1 - 1e-6)
        gauss, tx, ty = gauss[hit], tx[hit], ty[hit]
    tile, perm = torch.sort(ty * tiles_x + tx, stable=True)
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
    chunk: int | None = None,
    max_elements: int = 1 << 21,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One camera. means2d (N, 2), conics (N, 3), opacities (N,), features (N, D), depths (N,), radii (N, 2)
    -> (features image (H, W, D), alpha (H, W, 1), accumulated depth sum w z (H, W, 1)); no background.

    Tiles are processed in batches; each step composites the next ``chunk`` Gaussians of every active
    tile (None: 8, 16, 32, ... capped by ``max_elements`` pixel-Gaussian pairs); a tile leaves the batch as soon as
    its list is exhausted or all its pixels are done, so work follows the visible depth complexity.
    """
    N, D = features.shape
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles, P = tiles_x * tiles_y, tile_size * tile_size
    dev, dt = features.device, features.dtype
    _, gauss_ids, counts = intersect_tiles(means2d, radii, depths, tile_size, tiles_x, tiles_y, conics, opacities)
    offsets = torch.cumsum(counts, 0) - counts
    tile_order = torch.argsort(counts, descending=True)
    tile_order = tile_order[counts[tile_order] > 0]
    local = torch.arange(P, device=dev)
    px, py = (local % tile_size).to(dt) + 0.5, (local // tile_size).to(dt) + 0.5  # pixel centres in the tile
    basis = torch.stack([px * px, py * py, px * py, px, py, torch.ones_like(px)], dim=-1)  # (P, 6)
    # one gathered table per Gaussian: features, depth and 1 (accumulated weight) in a single bmm
    values = torch.cat([features, depths[:, None].to(dt), torch.ones(N, 1, device=dev, dtype=dt)], dim=1)
    last = max(gauss_ids.numel() - 1, 0)

    done_tiles, done_acc = [], []
    batch = max(1, max_elements // (P * (chunk or 64)))
    for b0 in range(0, tile_order.numel(), batch):
        tb = tile_order[b0 : b0 + batch]
        cb, ob = counts[tb], offsets[tb]
        origin = torch.stack([tb % tiles_x, tb // tiles_x], dim=-1).to(dt) * tile_size  # (B, 2)
        inside = ((origin[:, None, 0] + px) < width) & ((origin[:, None, 1] + py) < height)
        T = inside.to(dt)  # pixels beyond the image border start done
        acc = torch.zeros(tb.numel(), P, D + 2, device=dev, dtype=dt)
        k0, step = 0, 0
        while tb.numel():  # chunks grow geometrically: most tiles saturate within the first Gaussians
            kc = chunk or max(8, min(8 << step, max_elements // (P * tb.numel())))
            step += 1
            k = torch.arange(k0, k0 + kc, device=dev)
            in_list = k[None] < cb[:, None]  # (B, K)
            g = gauss_ids[torch.clamp(ob[:, None] + k[None], max=last)]  # (B, K)
            mx, my = (means2d[g] - origin[:, None, :]).unbind(-1)  # (B, K) tile-local
            a, b, c = conics[g].unbind(-1)
            # sigma(px, py) = 0.5 a dx^2 + 0.5 c dy^2 + b dx dy, dx = px - mx: a quadratic form in the pixel basis
            coef = torch.stack(
                [
                    0.5 * a,
                    0.5 * c,
                    b,
                    -a * mx - b * my,
                    -c * my - b * mx,
                    0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my,
                ],
                dim=1,
            )  # (B, 6, K)
            sigma = torch.matmul(basis, coef)  # (B, P, K)
            op = opacities[g] * in_list  # padding rows get opacity 0 -> skipped
            alpha = torch.clamp(op[:, None, :] * torch.exp(-sigma), max=ALPHA_MAX)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros((), dtype=dt, device=dev))
            one_minus = 1.0 - alpha
            next_T = T[..., None] * torch.cumprod(one_minus, dim=-1)
            w = torch.where(
                next_T > TRANSMITTANCE_MIN, alpha * next_T / one_minus, torch.zeros((), dtype=dt, device=dev)
            )
            acc = acc + torch.bmm(w, values[g])
            T = next_T[..., -1]
            k0 += kc
            fin = (cb <= k0) | (T <= TRANSMITTANCE_MIN).all(dim=-1)
            if bool(fin.any()):
                done_tiles.append(tb[fin])
                done_acc.append(acc[fin])
                live = ~fin
                tb, cb, ob, origin, T, acc = tb[live], cb[live], ob[live], origin[live], T[live], acc[live]

    full = torch.zeros(n_tiles, P, D + 2, device=dev, dtype=dt)
    if done_tiles:
        full = full.index_copy(0, torch.cat(done_tiles), torch.cat(done_acc))
    img = full.reshape(tiles_y, tiles_x, tile_size, tile_size, D + 2).permute(0, 2, 1, 3, 4)
    img = img.reshape(tiles_y * tile_size, tiles_x * tile_size, D + 2)[:height, :width]
    return img[..., :D], img[..., D + 1 :], img[..., D : D + 1]


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
            proj["means2d"][ci],
            proj["conics"][ci],
            opacities,
            features,
            proj["depths"][ci],
            proj["radii"][ci],
            width,
            height,
            tile_size,
        )
        if backgrounds is not None:
            img = img + backgrounds[ci] * (1.0 - alpha)
        if expected_depth:
            img = torch.cat([img, zsum / alpha.clamp(min=1e-10)], dim=-1)
        images.append(img)
        alphas.append(alpha)
    return torch.stack(images), torch.stack(alphas), proj
