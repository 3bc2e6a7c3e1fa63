"""Navigation on the procedural scenes of lang3d_ros.datasets.synthetic (points sampled on
their meshes, only the surfaces a camera inside the room can see)."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
from scipy import ndimage
from test_navigation import check_result

from lang3d_ros.datasets.synthetic import generate_scene
from lang3d_ros.navigation.goal import plan_to_object
from lang3d_ros.navigation.grid import build_occupancy_grid, traversable_mask

SPACING_M = 0.03


def sampled_scene(seed: int, n_objects: int):
    scene = generate_scene(seed, n_objects=n_objects)
    o3d.utility.random.seed(seed)
    pts, ids = [], []
    for inst, mesh in scene.meshes():
        n = max(200, int(mesh.get_surface_area() / SPACING_M**2))
        p = np.asarray(mesh.sample_points_uniformly(n).points)
        pts.append(p)
        ids.append(np.full(len(p), inst))
    pts, ids = np.concatenate(pts), np.concatenate(ids)
    lo, hi = scene.room_min_xyz - 1e-3, scene.room_max_xyz + 1e-3
    seen = np.all((pts >= lo) & (pts <= hi), axis=1)  # drop the floor slab's underside and the walls' outsides
    return scene, pts[seen], ids[seen]


@pytest.fixture(scope="module")
def scenes():
    return [sampled_scene(seed, 8) for seed in (0, 1)]


def test_navigation_to_floor_objects_of_generator_scenes(scenes):
    successes, total = 0, 0
    for scene, pts, _ in scenes:
        grid = build_occupancy_grid(pts)
        assert grid.floor_z_m == pytest.approx(0.0, abs=0.02)
        trav = traversable_mask(grid, 0.3)
        clearance = ndimage.distance_transform_edt(trav)
        start = grid.ij_to_xy([np.unravel_index(np.argmax(clearance), clearance.shape)])[0]
        for obj in scene.objects:
            if obj.support_id != 0:
                continue
            total += 1
            res = plan_to_object(grid, obj.obb, start, traversable=trav)
            if res.success:
                successes += 1
                check_result(res, obj.obb, grid, pts)
            else:
                assert res.reason
    assert total >= 4 and successes / total >= 0.8, (successes, total)
