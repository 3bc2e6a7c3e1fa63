"""largest_3d_part with the keyframe's voxels shared by its levels (instances.mapper.PixelVoxels) against the
per-level function it replaced (instances.stats_reference.largest_3d_part_reference): identical ids on random
points and masks, on a synthetic scene's keyframes (its instance maps, and masks merged over several objects), on
parts of equal size (the tie-break), without points, and with the part search off."""

from __future__ import annotations

import numpy as np
import pytest

from lang3d_ros.instances.mapper import PixelVoxels, largest_3d_part
from lang3d_ros.instances.stats_reference import largest_3d_part_reference


def _check_levels(segs: list[np.ndarray], xyz: np.ndarray, link_m: float) -> int:
    """The levels of one keyframe through one PixelVoxels, each compared with the reference; -> pixels cut."""
    voxels = PixelVoxels(xyz, link_m)
    cut = 0
    for seg in segs:
        want = largest_3d_part_reference(seg, xyz, link_m)
        got = largest_3d_part(seg, xyz, link_m, voxels)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        cut += int(((seg >= 0) & (got < 0)).sum())
    return cut


@pytest.mark.parametrize("seed", range(5))
def test_random_points_and_masks(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    centres = rng.uniform(-3, 3, (12, 3))
    xyz = centres[rng.integers(0, 12, n)] + rng.normal(0, rng.uniform(0.05, 0.6), (n, 3))
    xyz[rng.random(n) < 0.1] = np.nan
    segs = [rng.integers(-1, k, n).astype(np.int32) for k in (3, 12, 40)]
    segs[1] = np.where(rng.random(n) < 0.5, segs[1], -1).astype(np.int32)
    cut = sum(_check_levels(segs, xyz, link) for link in (0.25, 0.1, 0.6))
    assert cut > 0  # masks were cut: the comparison covers the cutting
    assert _check_levels(segs, xyz, 0.0) == 0  # off


def test_equal_parts_and_empty_inputs():
    """Two parts of the same size in one mask (the first in (x, y, z) voxel order stays), a mask whose pixels have
    no point, no mask at all, no point at all."""
    a = np.array([[0.0, 0.0, 1.0], [0.05, 0.0, 1.0], [2.0, 0.0, 1.0], [2.05, 0.0, 1.0]])
    b = a[::-1].copy()  # the same parts listed the other way round
    for xyz in (a, b):
        seg = np.zeros(4, np.int32)
        assert _check_levels([seg], xyz, 0.25) == 2
        assert (largest_3d_part(seg, xyz, 0.25)[xyz[:, 0] < 1] == 0).all()
    nan = np.full((4, 3), np.nan)
    assert _check_levels([np.zeros(4, np.int32), np.full(4, -1, np.int32)], nan, 0.25) == 0
    assert _check_levels([np.full(4, -1, np.int32)], a, 0.25) == 0
    with pytest.raises(ValueError):
        largest_3d_part(np.zeros(4, np.int32), a, 0.25, PixelVoxels(b, 0.25))


def test_synthetic_keyframes():
    """A generated room's keyframes (320 x 240): each object's mask, and masks merged over every third object
    (under-segmentation far apart in depth), through one PixelVoxels per keyframe."""
    from lang3d_ros.datasets.synthetic.render import render_frames
    from lang3d_ros.datasets.synthetic.scene import generate_scene
    from lang3d_ros.datasets.synthetic.trajectory import make_trajectory
    from lang3d_ros.geometry.camera import Intrinsics
    from lang3d_ros.instances.mapper import pixel_points

    scene = generate_scene(3, n_objects=12)
    K = Intrinsics(240.0, 240.0, 159.5, 119.5, 320, 240)
    cut = 0
    for f in render_frames(scene, make_trajectory(scene, "orbit", 4, seed=1), K, noise=None, seed=0):
        xyz = pixel_points(f)
        inst = np.asarray(f.instance_map).reshape(-1).astype(np.int32)
        merged = np.where(inst >= 0, inst % 3, -1).astype(np.int32)
        whole = np.where(inst >= 0, 0, -1).astype(np.int32)
        cut += _check_levels([inst, merged, whole], xyz, 0.25)
    assert cut > 0
