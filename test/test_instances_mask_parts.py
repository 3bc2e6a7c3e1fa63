"""A mask keeps its largest 3D part (instances.mapper.largest_3d_part): an under-segmented mask over two objects
far apart in depth labels one of them, whatever the order of masks and points."""

from __future__ import annotations

import numpy as np

from lang3d_ros.instances.mapper import largest_3d_part


def _blob(rng, n, centre, sd=0.05):
    return rng.normal(0.0, sd, (n, 3)) + np.asarray(centre, dtype=np.float64)


def test_each_mask_keeps_its_largest_part_and_masks_never_link():
    rng = np.random.default_rng(3)
    monitor, shelf = _blob(rng, 120, [0, 0, 1]), _blob(rng, 80, [3, 0, 1])  # one mask over both
    chair_a, chair_b = _blob(rng, 60, [1, 2, 0.5]), _blob(rng, 70, [1.1, 2, 0.5])  # two masks that touch in 3D
    wall = np.full((10, 3), np.nan)  # pixels without a point
    xyz = np.concatenate([monitor, shelf, chair_a, chair_b, wall])
    seg = np.array([4] * 120 + [4] * 80 + [0] * 60 + [1] * 70 + [2] * 10)
    perm = rng.permutation(len(seg))  # pixel order does not matter
    out = np.empty_like(seg)
    out[perm] = largest_3d_part(seg[perm], xyz[perm], 0.25)
    assert (out[:120] == 4).all() and (out[120:200] == -1).all()  # the shelf part of the merged mask goes
    assert (out[200:260] == 0).all() and (out[260:330] == 1).all()  # touching masks keep all their pixels
    assert (out[330:] == 2).all()  # no point: untouched
    assert (largest_3d_part(seg, xyz, 0.0) == seg).all()  # 0: off
    seg2 = seg.copy()
    seg2[:120] = -1  # a larger shelf part now: that part stays
    seg2[120:200] = 4
    seg2[:40] = 4
    out2 = largest_3d_part(seg2, xyz, 0.25)
    assert (out2[120:200] == 4).all() and (out2[:40] == -1).all()


def test_a_part_joined_by_a_chain_of_points_stays_whole():
    """Points 20 cm apart along a 2 m sofa back are one part at a 0.25 m link; a gap of 0.6 m splits it."""
    line = np.stack([np.arange(0, 2.0, 0.2), np.zeros(10), np.full(10, 0.8)], 1)
    seg = np.zeros(10, np.int64)
    assert (largest_3d_part(seg, line, 0.25) == 0).all()
    gap = line.copy()
    gap[7:, 0] += 0.6
    out = largest_3d_part(seg, gap, 0.25)
    assert (out[:7] == 0).all() and (out[7:] == -1).all()
