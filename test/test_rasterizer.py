"""The tiled PyTorch rasterizer against a naive per-pixel reference (values and gradients), and its
projection against gsplat's own CPU-runnable PyTorch reference (gsplat/cuda/_torch_impl.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lang3d_ros.gaussians.rasterizer import (
    project_gaussians,
    quat_scale_to_covar,
    rasterize_tiles,
    rasterize_torch,
)
from lang3d_ros.gaussians.render import render


def _look_at(eye, target) -> torch.Tensor:
    """world -> camera (optical frame, y down) looking from eye at target, world z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world
    V = np.eye(4)
    V[:3, :3] = R
    V[:3, 3] = -R @ eye
    return torch.tensor(V, dtype=torch.float64)


def _scene(n=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.35
    means[:4] = torch.tensor([[0.0, 0.0, 0.05], [0.01, 0.0, 0.1], [0.0, 0.01, 0.15], [0.02, 0.01, 0.2]], dtype=dtype)
    means[-1] = torch.tensor([0.0, -9.0, 0.0], dtype=dtype)  # behind camera 0
    means[-2] = torch.tensor([6.0, 0.0, 0.0], dtype=dtype)  # far off to the side
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.12 + 0.02
    scales[:4] = 0.3
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    opac[:4] = 0.995  # an opaque stack: exercises the transmittance stop
    opac[4] = 0.002  # below 1/255: culled
    feats = torch.rand(n, 4, generator=g, dtype=dtype)
    viewmats = torch.stack([_look_at([0.0, -2.5, 0.4], [0, 0, 0]), _look_at([1.8, -1.6, 1.0], [0, 0, 0.1])])
    Ks = torch.tensor([[40.0, 0.0, 19.5], [0.0, 42.0, 17.0], [0.0, 0.0, 1.0]], dtype=dtype).expand(2, 3, 3).clone()
    return means, quats, scales, opac, feats, viewmats.to(dtype), Ks


def _reference_projection(means, quats, scales, opac, viewmats, Ks, W, H):
    """gsplat's pure-PyTorch projection plus gsplat's CUDA opacity-aware radius (written here)."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    _, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmats, Ks, W, H, 0.3, 0.01, 1e10)
    from gsplat.cuda._torch_impl import _persp_proj, _world_to_cam

    mc, cc = _world_to_cam(means, covars, viewmats)
    _, cov2d = _persp_proj(mc, cc, Ks, W, H)
    radii = torch.zeros(depths.shape + (2,), dtype=torch.int64)
    for c in range(depths.shape[0]):
        for i in range(means.shape[0]):
            a, b, d = cov2d[c, i, 0, 0].item() + 0.3, cov2d[c, i, 0, 1].item(), cov2d[c, i, 1, 1].item() + 0.3
            o = opac[i].item()
            if a * d - b * b <= 0 or not 0.01 < depths[c, i].item() < 1e10 or o < 1 / 255:
                continue
            e = min(3.33, math.sqrt(2 * math.log(o * 255)))
            rx, ry = math.ceil(e * math.sqrt(a)), math.ceil(e * math.sqrt(d))
            mx, my = means2d[c, i].tolist()
            if mx + rx <= 0 or mx - rx >= W or my + ry <= 0 or my - ry >= H:
                continue
            radii[c, i] = torch.tensor([rx, ry])
    return means2d, conics, depths, radii


def _naive_render(means, quats, scales, opac, feats, viewmats, Ks, W, H, tile=16):
    """Per pixel: loop over Gaussians sorted front to back with gsplat 1.5.3's kernel rules written out
    (alpha clamp 0.999, skip below 1/255, stop when T would reach 1e-4)."""
    means2d, conics, depths, radii = _reference_projection(means, quats, scales, opac, viewmats, Ks, W, H)
    C, D = viewmats.shape[0], feats.shape[1]
    images, alphas = [], []
    for c in range(C):
        order = sorted(range(means.shape[0]), key=lambda i: (depths[c, i].item(), i))
        boxes = {}
        for i in order:
            rx, ry = radii[c, i].tolist()
            if rx <= 0 or ry <= 0:
                continue
            mx, my = (means2d[c, i] / tile).tolist()
            boxes[i] = (
                min(max(math.floor(mx - rx / tile), 0), math.ceil(W / tile)),
                min(max(math.ceil(mx + rx / tile), 0), math.ceil(W / tile)),
                min(max(math.floor(my - ry / tile), 0), math.ceil(H / tile)),
                min(max(math.ceil(my + ry / tile), 0), math.ceil(H / tile)),
            )
        rows, arows = [], []
        for y in range(H):
            row, arow = [], []
            for x in range(W):
                T = torch.ones((), dtype=feats.dtype)
                pix = torch.zeros(D, dtype=feats.dtype)
                for i in order:
                    if i not in boxes:
                        continue
                    x0, x1, y0, y1 = boxes[i]
                    if not (x0 <= x // tile < x1 and y0 <= y // tile < y1):
                        continue
                    dx = means2d[c, i, 0] - (x + 0.5)
                    dy = means2d[c, i, 1] - (y + 0.5)
                    a, b, cc = conics[c, i]
                    sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    alpha = torch.clamp(opac[i] * torch.exp(-sigma), max=0.999)
                    if sigma.item() < 0 or alpha.item() < 1 / 255:
                        continue
                    next_T = T * (1 - alpha)
                    if next_T.item() <= 1e-4:
                        break
                    pix = pix + feats[i] * alpha * T
                    T = next_T
                row.append(pix)
                arow.append(1 - T)
            rows.append(torch.stack(row))
            arows.append(torch.stack(arow))
        images.append(torch.stack(rows))
        alphas.append(torch.stack(arows)[..., None])
    return torch.stack(images), torch.stack(alphas)


def test_projection_matches_gsplat_torch_reference():
    means, quats, scales, opac, _, viewmats, Ks = _scene()
    W, H = 40, 36
    ours = project_gaussians(means, quats, scales, opac, viewmats, Ks, W, H)
    m2, con, dep, radii = _reference_projection(means, quats, scales, opac, viewmats, Ks, W, H)
    front = dep > 0.01
    assert torch.allclose(ours["means2d"][front], m2[front], atol=1e-9)
    assert torch.allclose(ours["conics"][front], con[front], rtol=1e-9, atol=1e-12)
    assert torch.allclose(ours["depths"], dep, atol=1e-12)
    assert torch.equal(ours["radii"].long(), radii)
    assert (radii[0, -1] == 0).all() and (radii[:, 4] == 0).all()  # behind the camera; below 1/255 opacity
    assert torch.allclose(quat_scale_to_covar(quats, scales)[0], quat_scale_to_covar(quats * 3, scales)[0])


def test_tiled_rasterizer_matches_naive_reference_values_and_gradients():
    W, H = 40, 36  # 3x3 tiles, the last row and column partial
    leaves = [t.clone().requires_grad_(True) for t in _scene()[:5]]
    means, quats, scales, opac, feats = leaves
    viewmats, Ks = _scene()[5:]
    img, alpha, _ = rasterize_torch(means, quats, scales, opac, feats, viewmats, Ks, W, H)
    ref_img, ref_alpha = _naive_render(means, quats, scales, opac, feats, viewmats, Ks, W, H)
    assert img.shape == (2, H, W, 4) and alpha.shape == (2, H, W, 1)
    assert float(alpha.detach().max()) > 0.99  # the opaque stack is in view (the stop rule is exercised)
    assert torch.allclose(img, ref_img, atol=1e-5) and torch.allclose(alpha, ref_alpha, atol=1e-5)
    g = torch.Generator().manual_seed(1)
    w_img = torch.rand(img.shape, generator=g, dtype=img.dtype)
    w_alpha = torch.rand(alpha.shape, generator=g, dtype=img.dtype)
    grads = torch.autograd.grad((img * w_img).sum() + (alpha * w_alpha).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_img * w_img).sum() + (ref_alpha * w_alpha).sum(), leaves)
    for name, a, b in zip(["means", "quats", "scales", "opacities", "features"], grads, ref_grads):
        assert b.abs().max() > 0, name
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), f"{name}: max diff {(a - b).abs().max():.2e}"


def test_depth_chunks_carry_transmittance():
    means, quats, scales, opac, feats, viewmats, Ks = _scene(n=40, seed=3)
    p = project_gaussians(means, quats, scales, opac, viewmats, Ks, 40, 36)
    args = (p["means2d"][0], p["conics"][0], opac, feats, p["depths"][0], p["radii"][0], 40, 36, 16)
    a = rasterize_tiles(*args, chunk=64)
    b = rasterize_tiles(*args, chunk=3, max_elements=256 * 3)  # many chunks, one tile per batch
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-12)


def test_render_interface_background_depth_and_errors():
    # one flat Gaussian facing the camera at z = 2 m covering the image centre
    means = torch.tensor([[0.0, 0.0, 2.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.tensor([[0.5, 0.5, 1e-3]])
    opac = torch.tensor([0.9])
    feats = torch.tensor([[1.0, 0.0, 0.0]])
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[50.0, 0.0, 15.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]]])
    out = render(
        means,
        quats,
        scales,
        opac,
        feats,
        viewmats,
        Ks,
        32,
        24,
        backend="torch",
        background=torch.tensor([0.0, 0.0, 1.0]),
        expected_depth=True,
    )
    assert out.image.shape == (1, 24, 32, 3) and out.depth.shape == (1, 24, 32, 1)
    # with the project's pixel convention the Gaussian centre projects onto pixel (15.5, 11.5): symmetric image
    assert torch.allclose(out.image[0], out.image[0].flip(0).flip(1), atol=1e-5)
    centre = out.image[0, 11, 15]
    var_px2 = (50.0 * 0.5 / 2.0) ** 2 + 0.3  # (f * s / z)^2 + eps2d
    assert abs(float(centre[0]) - 0.9 * math.exp(-0.5 * 0.5 / var_px2)) < 1e-4  # pixel centre 0.5 px off the mean
    assert torch.allclose(out.image[0].sum(-1)[out.alpha[0, ..., 0] > 0], torch.ones(1), atol=1e-5)  # fg + bg mix
    assert torch.allclose(out.depth[0][out.alpha[0] > 0.01], torch.tensor(2.0), atol=1e-4)
    with pytest.raises(ValueError, match="features"):
        render(means, quats, scales, opac, feats[:, :, None], viewmats, Ks, 32, 24, backend="torch")
    with pytest.raises(ValueError, match="gsplat"):
        render(means, quats, scales, opac, feats, viewmats, Ks, 32, 24, backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        render(means, quats, scales, opac, feats, viewmats, Ks, 32, 24, backend="vulkan")


def test_real_garden_points_render_and_backprop(garden_npz):
    d = np.load(garden_npz)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(d["means3d"].shape[0], generator=g)[:20000]
    means = torch.from_numpy(d["means3d"])[idx].float()
    n = means.shape[0]
    colors = (torch.from_numpy(d["colors"])[idx].float() / 255).requires_grad_(True)
    quats = torch.tensor([1.0, 0, 0, 0]).expand(n, 4).contiguous()
    scales = torch.full((n, 3), 0.02)
    opac = torch.full((n,), 0.8)
    W, H = int(d["width"]) // 4, int(d["height"]) // 4
    Ks = torch.from_numpy(d["Ks"][:1]).float().clone()
    Ks[:, :2] /= 4
    out = render(
        means, quats, scales, opac, colors, torch.from_numpy(d["viewmats"][:1]).float(), Ks, W, H, backend="torch"
    )
    assert out.image.shape == (1, H, W, 3)
    assert float(out.alpha.mean()) > 0.5 and torch.isfinite(out.image).all()
    out.image.sum().backward()
    assert colors.grad is not None and int((colors.grad.abs().sum(-1) > 0).sum()) > 1000
