"""PointMap against a brute-force PointFusion reference (numpy, every map point projected every frame, the
gradSLAM algorithm plus PointMap's documented deviations) on gradSLAM's real RGB-D frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import PointMap
from lang3d_ros.geometry.camera import Intrinsics

DIST, ANGLE, SIGMA = 0.05, 20.0, 0.6


def _one_sided(vc, valid, axis: int):
    """Differences to the next pixel where both have depth, else from the previous one (``edge_normals``)."""
    lo = [slice(None)] * 2
    hi = [slice(None)] * 2
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    lo, hi = tuple(lo), tuple(hi)
    diff, pair = vc[hi] - vc[lo], valid[hi] & valid[lo]
    fwd, fok = np.zeros_like(vc), np.zeros_like(valid)
    bwd, bok = np.zeros_like(vc), np.zeros_like(valid)
    fwd[lo], fok[lo], bwd[hi], bok[hi] = diff, pair, diff, pair
    return np.where(fok[..., None], fwd, bwd), fok | bok


def _maps(depth, intr, T, edge_normals: bool = False):
    """Independent numpy vertex / normal maps (float64) and the usable-pixel mask."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0)
    vc = np.stack([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z], -1)
    dx = np.concatenate([vc[:, 1:] - vc[:, :-1], (vc[:, -1:] - vc[:, -2:-1])], 1)
    dy = np.concatenate([vc[1:] - vc[:-1], (vc[-1:] - vc[-2:-1])], 0)
    n = np.cross(dx, dy)
    nn = np.linalg.norm(n, axis=-1, keepdims=True)
    n = n / np.where(nn == 0, 1, nn)
    vx = np.concatenate([valid[:, 1:] & valid[:, :-1], (valid[:, -1:] & valid[:, -2:-1])], 1)
    vy = np.concatenate([valid[1:] & valid[:-1], (valid[-1:] & valid[-2:-1])], 0)
    if edge_normals:
        (dx, vx), (dy, vy) = _one_sided(vc, valid, 1), _one_sided(vc, valid, 0)
        n = np.cross(dx, dy)
        nn = np.linalg.norm(n, axis=-1, keepdims=True)
        n = n / np.where(nn == 0, 1, nn)
    use = valid & vx & vy & (nn[..., 0] > 0)
    alpha = np.clip(np.exp(-(vc**2).sum(-1) / (2 * SIGMA**2)), 1e-20, 1.01)
    vw = vc @ T[:3, :3].T + T[:3, 3]
    nw = n @ T[:3, :3].T
    return vw.reshape(-1, 3), nw.reshape(-1, 3), alpha.reshape(-1), use.reshape(-1)


def _reference_fusion(frames, edge_normals: bool = False, noise_at_1m: float = 0.0):
    """gradSLAM's PointFusion written out per point; with ``noise_at_1m`` the distance gate at a pixel of depth
    zq is sqrt(min(DIST^2 + (3 * noise_at_1m * zq^2)^2, 0.16^2)) (the default 3 sigmas, 16 x 1 cm block cap)."""
    pts, nrm, col, conf = np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
    for f in frames:
        intr, T = f.intrinsics, f.T_world_cam
        h, w = f.height, f.width
        vw, nw, alpha, use = _maps(f.depth_m.astype(np.float64), intr, T, edge_normals)
        rgb = f.rgb.reshape(-1, 3) / 255.0
        matched = np.full(h * w, -1)
        if len(pts):
            pc = (pts - T[:3, 3]) @ T[:3, :3]
            z = pc[:, 2]
            zs = np.where(z > 0, z, 1)
            uu = pc[:, 0] / zs * intr.fx + intr.cx
            vv = pc[:, 1] / zs * intr.fy + intr.cy
            ok = (z > 0) & (uu > -1e-3) & (uu < w - 0.999) & (vv > -1e-3) & (vv < h - 0.999)
            q = np.clip(np.round(vv), 0, h - 1).astype(int) * w + np.clip(np.round(uu), 0, w - 1).astype(int)
            ok &= use[q]
            d2 = ((pts - vw[q]) ** 2).sum(1)
            dot = (nrm * nw[q]).sum(1)
            zq = ((vw[q] - T[:3, 3]) @ T[:3, 2]) if noise_at_1m else 0.0
            gate2 = np.minimum(DIST**2 + (3 * noise_at_1m * zq**2) ** 2, 0.16**2)
            ok &= (d2 < gate2) & (dot > math.cos(math.radians(ANGLE)))
            best = {}
            for i in np.nonzero(ok)[0]:  # highest confidence, then smallest squared distance
                k = (-conf[i], d2[i])
                if q[i] not in best or k < best[q[i]][0]:
                    best[q[i]] = (k, i)
            for pix, (_, i) in best.items():
                matched[pix] = i
        for pix in np.nonzero(matched >= 0)[0]:
            i, a = matched[pix], alpha[pix]
            c = conf[i] + a
            pts[i] += a / c * (vw[pix] - pts[i])
            n = nrm[i] + a / c * (nw[pix] - nrm[i])
            nrm[i] = n / np.linalg.norm(n)
            col[i] += a / c * (rgb[pix] - col[i])
            conf[i] = c
        new = np.nonzero(use & (matched < 0))[0]
        pts, nrm = np.concatenate([pts, vw[new]]), np.concatenate([nrm, nw[new]])
        col, conf = np.concatenate([col, rgb[new]]), np.concatenate([conf, alpha[new]])
    return pts, nrm, col, conf


@pytest.fixture(scope="module")
def real_frames(gradslam_dir):
    d = {n: np.load(gradslam_dir / f"{n}.npy") for n in ("colors", "depths", "intrinsics", "poses")}
    intr = Intrinsics.from_K(d["intrinsics"][0, 0], 160, 120)
    seq = [
        Frame(
            d["colors"][0, s].astype(np.uint8),
            d["depths"][0, s, ..., 0],
            intr,
            d["poses"][0, s].astype(np.float64),
            index=s,
        )
        for s in range(3)
    ]
    return seq + seq  # the second pass revisits the same views


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("edge_normals", [False, True])
@pytest.mark.parametrize("noise_at_1m", [0.0, 0.0015, 0.02])
def test_pointfusion_matches_bruteforce_reference(real_frames, backend, edge_normals, noise_at_1m):
    """0.0: gradSLAM's fixed gate; 0.0015: the default depth-dependent gate; 0.02: a gate at its cap at 1.5 m."""
    cfg = FusionConfig(
        edge_normals=edge_normals,
        depth_noise_at_1m_m=noise_at_1m,
        confidence_mode="gradslam",
        merge_duplicates=False,
        min_depth_m=0.0,
        max_depth_m=10.0,
        prune_after_frames=1000,
        backend=backend,
    )
    m = PointMap(cfg, device="cpu")
    reports = [m.integrate(f) for f in real_frames]
    assert all(r.accepted for r in reports)
    assert sum(r.n_matched for r in reports[1:]) > 10_000  # association really happens
    pts, nrm, col, conf = _reference_fusion(real_frames, edge_normals, noise_at_1m)
    got = m.to_numpy()
    assert abs(len(got["points_xyz"]) - len(pts)) <= 2e-4 * len(pts), (len(got["points_xyz"]), len(pts))
    d, j = cKDTree(got["points_xyz"]).query(pts)
    close = d < 1e-4
    assert close.mean() > 0.999
    np.testing.assert_allclose(got["normals"][j[close]], nrm[close], atol=2e-3)
    np.testing.assert_allclose(got["colors"][j[close]], col[close], atol=2e-3)
    np.testing.assert_allclose(got["confidence"][j[close]], conf[close], rtol=2e-3)


def test_frustum_culling_changes_nothing(real_frames):
    """The culled candidate set gives the same map as association against every point (block size 1 voxel
    vs 16 voxels: very different candidate sets, identical result)."""
    base = dict(
        confidence_mode="gradslam",
        merge_duplicates=False,
        min_depth_m=0.0,
        prune_after_frames=1000,
        depth_noise_at_1m_m=0.0,  # a fixed gate: the 1-voxel blocks would cap a depth-dependent one at 5 cm
    )
    maps = []
    for bv, vox in ((16, 0.01), (1, 0.05)):
        m = PointMap(FusionConfig(block_voxels=bv, voxel_size_m=vox, **base), device="cpu")
        for f in real_frames:
            m.integrate(f)
        maps.append(m.to_numpy())
    a, b = maps
    assert len(a["points_xyz"]) == len(b["points_xyz"])
    d, _ = cKDTree(a["points_xyz"]).query(b["points_xyz"])
    assert np.max(d) < 1e-5
