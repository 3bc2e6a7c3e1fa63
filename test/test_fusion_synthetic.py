"""Acceptance: fusing a procedural synthetic scene's noisy frames puts points on the ground-truth surfaces,
with the right colours and per-instance segment labels, and memory stays flat when the room is revisited."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from lang3d_ros.datasets.synthetic import (
    DEFAULT_INTRINSICS,
    RenderNoise,
    generate_scene,
    make_trajectory,
    render_frames,
)
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import PointMap

INTR = DEFAULT_INTRINSICS.scaled(160, 120)
MAX_DEPTH_M = 3.5
NOISE = RenderNoise()  # depth sigma 1.5 mm * z^2, dropouts, edge dropouts, rgb sigma 2


def _instance_labels(frame):
    """(3, H*W) int32: the ground-truth instance id per pixel at every level."""
    seg = frame.instance_map.astype(np.int32).reshape(-1)
    return np.stack([seg, seg, seg])


@pytest.fixture(scope="module")
def scene_run():
    scene = generate_scene(3, n_objects=6)
    T = make_trajectory(scene, "orbit", 16)
    noisy = list(render_frames(scene, T, INTR, NOISE, seed=1))
    clean = list(render_frames(scene, T, INTR, None, seed=1))
    m = PointMap(FusionConfig(max_depth_m=MAX_DEPTH_M), device="cpu")
    for f in noisy:
        rep = m.integrate(f, want_pixel_slots=True)
        assert rep.accepted
        m.vote_labels(rep.pixel_slot, rep.pixel_alpha, _instance_labels(f))
    return scene, T, clean, m


def test_points_lie_on_ground_truth_surfaces(scene_run):
    scene, T, _, m = scene_run
    pts = m.points_xyz.numpy()
    assert len(pts) > 5000
    d = scene.distance_to_surfaces(pts)
    range_m = np.linalg.norm(pts[:, None, :] - T[None, :, :3, 3], axis=-1).min(1)  # <= depth of any view
    tol = 0.01 + 2 * NOISE.depth_sigma_at_1m_m * range_m**2
    assert np.median(d) < 0.01
    assert np.mean(d < tol) > 0.95, np.quantile(d, [0.5, 0.9, 0.95, 0.99])


def test_colours_and_instance_labels_are_right(scene_run):
    scene, T, clean, m = scene_run
    pts = m.points_xyz.numpy()
    # expected colour: mean noise-free pixel colour over the views whose depth agrees with the point
    acc, cnt = np.zeros((len(pts), 3)), np.zeros(len(pts))
    for f in clean:
        pc = (pts - f.T_world_cam[:3, 3]) @ f.T_world_cam[:3, :3]
        z = pc[:, 2]
        u = np.round(pc[:, 0] / np.maximum(z, 1e-6) * INTR.fx + INTR.cx).astype(int)
        v = np.round(pc[:, 1] / np.maximum(z, 1e-6) * INTR.fy + INTR.cy).astype(int)
        ok = (z > 0) & (u >= 0) & (u < INTR.width) & (v >= 0) & (v < INTR.height)
        ok[ok] &= np.abs(f.depth_m[v[ok], u[ok]] - z[ok]) < 0.03
        acc[ok] += f.rgb[v[ok], u[ok]] / 255.0
        cnt[ok] += 1
    seen = cnt > 0
    assert seen.mean() > 0.9
    err = np.abs(m.colors.numpy()[seen] - acc[seen] / cnt[seen, None]).max(1)
    assert np.mean(err < 0.08) > 0.95, np.quantile(err, [0.5, 0.95])
    # label: the instance owning the nearest ground-truth surface
    rs, gid_to_inst = scene.raycasting_scene()
    closest = rs.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
    inst = gid_to_inst[closest["geometry_ids"].numpy().astype(np.int64)]
    for level in range(3):
        assert np.all(m.label_weight(level).numpy() > 0)
        assert np.mean(m.labels(level).numpy() == inst) > 0.95


def test_memory_flat_under_ten_revisits():
    scene = generate_scene(5, n_objects=4)
    T = make_trajectory(scene, "orbit", 8)
    passes_frames = [list(render_frames(scene, T, INTR, NOISE, seed=s)) for s in (1, 2)]
    m = PointMap(FusionConfig(max_depth_m=MAX_DEPTH_M, prune_after_frames=4), device="cpu")
    sizes = []
    for p in range(10):
        for f in passes_frames[p % 2]:  # fresh sensor noise on alternate passes
            assert m.integrate(f).accepted
        sizes.append(m.num_points)
    # the second pass brings a new noise realisation (a few % new points, pruned once a later pass sees through
    # them); after the first two passes no growth at all
    assert max(sizes) <= 1.10 * sizes[0], sizes
    assert max(sizes[2:]) <= 1.03 * max(sizes[:2]), sizes
    assert sizes[-1] > 0.8 * sizes[0], sizes
