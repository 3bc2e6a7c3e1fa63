"""Vertex / normal maps and PointFusion confidence against gradSLAM's reference maps (real RGB-D data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.fusion.vertex import (
    confidence_map,
    edge_normal_map,
    normal_map,
    normal_valid_mask,
    valid_depth_mask,
    vertex_map,
)
from lang3d_ros.geometry.camera import Intrinsics

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def ref(gradslam_dir):
    names = ["depths", "intrinsics", "poses", "vertex_map", "normal_map", "global_vertex_map", "global_normal_map"]
    return {n: np.load(gradslam_dir / f"{n}.npy") for n in names}


def _frames(ref):
    for b in range(ref["depths"].shape[0]):
        intr = Intrinsics.from_K(ref["intrinsics"][b, 0], 160, 120)
        for s in range(ref["depths"].shape[1]):
            yield b, s, intr


def test_reference_has_negative_fy(ref):
    assert ref["intrinsics"][0, 0, 1, 1] < 0  # the signed fy is what gradSLAM used


@pytest.mark.parametrize("device", DEVICES)
def test_vertex_and_normal_maps_match_gradslam(ref, device):
    for b, s, intr in _frames(ref):
        depth = torch.from_numpy(ref["depths"][b, s, ..., 0]).to(device)
        valid = ref["depths"][b, s, ..., 0] > 0
        v = vertex_map(depth, intr)
        n = normal_map(v)
        np.testing.assert_allclose(v.cpu().numpy()[valid], ref["vertex_map"][b, s][valid], atol=1e-5)
        assert np.all(v.cpu().numpy()[~valid] == 0)
        # all pixels, including those next to holes where gradSLAM's cross product degenerates to zero
        np.testing.assert_allclose(n.cpu().numpy(), ref["normal_map"][b, s], atol=1e-4)
        # world frame: R v + t and R n
        T = ref["poses"][b, s].astype(np.float64)
        vw = v.cpu().numpy().astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        np.testing.assert_allclose(vw[valid], ref["global_vertex_map"][b, s][valid], atol=1e-5)
        nw = n.cpu().numpy().astype(np.float64) @ T[:3, :3].T
        np.testing.assert_allclose(nw[valid], ref["global_normal_map"][b, s][valid], atol=1e-4)


def test_edge_normals_are_gradslams_where_it_has_them_and_fill_silhouettes(ref):
    """On gradSLAM's real frames: every pixel gradSLAM's rule keeps is kept with gradSLAM's normal; a pixel whose
    right or lower neighbour has no depth is kept with the normal of its left / upper neighbour's difference."""
    added = 0
    for b, s, intr in _frames(ref):
        depth = torch.from_numpy(ref["depths"][b, s, ..., 0])
        valid = valid_depth_mask(depth)
        v = vertex_map(depth, intr)
        n, usable = edge_normal_map(v, valid)
        base = normal_valid_mask(valid) & (normal_map(v) != 0).any(-1)
        assert bool((usable | ~base).all())
        np.testing.assert_allclose(n[base].numpy(), ref["normal_map"][b, s][base.numpy()], atol=1e-4)
        extra = (usable & ~base).nonzero()
        added += len(extra)
        for i, j in extra[:50].tolist():  # left / upper differences where the right / lower neighbour is a hole
            a = v[i, j + 1] - v[i, j] if j + 1 < v.shape[1] and valid[i, j + 1] else v[i, j] - v[i, j - 1]
            c = v[i + 1, j] - v[i, j] if i + 1 < v.shape[0] and valid[i + 1, j] else v[i, j] - v[i - 1, j]
            want = torch.linalg.cross(a, c)
            torch.testing.assert_close(n[i, j], want / want.norm(), atol=1e-4, rtol=0)
    assert added > 1000


def test_bad_depth_values_are_invalid_pixels(ref):
    intr = Intrinsics.from_K(ref["intrinsics"][0, 0], 160, 120)
    d = ref["depths"][0, 0, ..., 0].copy()
    d[10, 10], d[20, 20], d[30, 30], d[40, 40] = np.nan, np.inf, -1.0, -np.inf
    dt = torch.from_numpy(d)
    v = vertex_map(dt, intr).numpy()
    assert np.all(np.isfinite(v))
    for r in (10, 20, 30, 40):
        assert np.all(v[r, r] == 0)
    valid = valid_depth_mask(dt)
    assert not valid[10, 10] and not valid[20, 20] and not valid[30, 30] and not valid[40, 40]
    nv = normal_valid_mask(valid)
    assert not nv[10, 9] and not nv[9, 10] and nv[60, 60] == valid[60:62, 60:62].all()


def test_signed_fy_flips_y():
    depth = torch.full((6, 8), 2.0)
    up = vertex_map(depth, Intrinsics(100.0, 100.0, 3.5, 2.5, 8, 6))
    down = vertex_map(depth, Intrinsics(100.0, -100.0, 3.5, 2.5, 8, 6))
    np.testing.assert_allclose(up[..., 1].numpy(), -down[..., 1].numpy())
    np.testing.assert_allclose(up[..., 0].numpy(), down[..., 0].numpy())
    # a fronto-parallel plane: gradSLAM's unoriented normal is +z for fy > 0 and -z for fy < 0
    assert torch.allclose(normal_map(up)[2, 3], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(normal_map(down)[2, 3], torch.tensor([0.0, 0.0, -1.0]))


def test_confidence_modes(ref):
    intr = Intrinsics.from_K(ref["intrinsics"][0, 0], 160, 120)
    v = vertex_map(torch.from_numpy(ref["depths"][0, 0, ..., 0]), intr)
    g = confidence_map(v, intr, 0.6, "gradslam").numpy()
    r2 = (ref["vertex_map"][0, 0].astype(np.float64) ** 2).sum(-1)
    np.testing.assert_allclose(g, np.clip(np.exp(-r2 / 0.72), 1e-20, 1.01), rtol=1e-5)
    rad = confidence_map(v, intr, 0.6, "radial").numpy()
    assert rad.max() <= 1.0 and rad.max() > 0.999  # principal point ~ image centre
    corner = np.exp(-(79.875**2 + 59.875**2) / (100.0**2) / 0.72)  # half diagonal of 160x120 is 100 px
    assert rad[0, 0] == pytest.approx(corner, rel=1e-5)
    with pytest.raises(ValueError):
        confidence_map(v, intr, 0.6, "other")
