"""gsplat (CUDA) against the tiled PyTorch rasterizer on real garden points; skips without CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.gaussians.render import render

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat rasterization is CUDA-only)")


@cuda
def test_gsplat_matches_torch_rasterizer(garden_npz):
    pytest.importorskip("gsplat")
    d = np.load(garden_npz)
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(d["means3d"].shape[0], generator=g)[:30000]
    n = idx.numel()
    means = torch.from_numpy(d["means3d"])[idx].to(dev)
    quats = torch.randn(n, 4, generator=g).to(dev)
    scales = (torch.rand(n, 3, generator=g) * 0.03 + 0.005).to(dev)
    opac = (torch.rand(n, generator=g) * 0.9 + 0.05).to(dev)
    feats = torch.cat([torch.from_numpy(d["colors"])[idx].float() / 255, torch.randn(n, 3, generator=g)], 1).to(dev)
    W, H = int(d["width"]) // 2, int(d["height"]) // 2
    Ks = torch.from_numpy(d["Ks"]).float().clone()
    Ks[:, :2] /= 2
    viewmats, Ks = torch.from_numpy(d["viewmats"]).float().to(dev), Ks.to(dev)
    outs, grads = {}, {}
    for backend in ("gsplat", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, feats)]
        out = render(*leaves, viewmats, Ks, W, H, backend=backend, expected_depth=True)
        assert out.meta["backend"] == backend
        (out.image.square().sum() + out.alpha.sum()).backward()
        outs[backend] = out
        grads[backend] = [t.grad for t in leaves]
    a, b = outs["gsplat"], outs["torch"]
    assert (a.image - b.image).abs().mean() < 1e-5 and (a.image - b.image).abs().max() < 1e-2
    assert (a.alpha - b.alpha).abs().mean() < 1e-5
    valid = (a.alpha > 0.5) & (b.alpha > 0.5)
    assert torch.allclose(a.depth[valid], b.depth[valid], rtol=1e-3)
    for name, ga, gb in zip(["means", "quats", "scales", "opacities", "features"], grads["gsplat"], grads["torch"]):
        rel = (ga - gb).norm() / gb.norm().clamp(min=1e-12)
        assert rel < 1e-2, f"{name}: relative gradient difference {rel:.2e}"
