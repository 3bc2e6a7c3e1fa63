"""Query grounding on rooms of known geometry: relevancy -> threshold -> DBSCAN -> boxes -> SceneObjects."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from lang3d_ros.config_base import ConfigError, from_mapping, to_mapping
from lang3d_ros.geometry.boxes import Box3D, iou_3d
from lang3d_ros.grounding.cluster import dbscan_labels, inlier_mask, robust_boxes, voxel_representatives
from lang3d_ros.grounding.config import ClusterConfig, GroundingConfig
from lang3d_ros.grounding.ground import ground_query, ground_query_levels, relevancy_threshold
from lang3d_ros.grounding.synthetic_room import make_room


def simulated_relevancy(scene, target: int, rng: np.random.Generator, n_flying: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Relevancy high on the target's points, lower on one distractor object, background ~0.45, plus
    isolated high-relevancy points anywhere and flying pixels around the target. Returns (points, relevancy)."""
    pts = scene.points.astype(np.float64)
    r = rng.normal(0.45, 0.04, len(pts))
    on = scene.instance_ids == target
    r[on] = rng.normal(0.68, 0.04, on.sum())
    distractor = (target + 1) % len(scene.boxes)
    if distractor != target:
        d = scene.instance_ids == distractor
        r[d] = rng.normal(0.58, 0.04, d.sum())
    spurious = rng.choice(len(pts), size=60, replace=False)
    r[spurious] = 0.8  # isolated points: DBSCAN noise
    box = scene.boxes[target]
    direction = rng.normal(size=(n_flying, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    flying = box.center + direction * rng.uniform(0.6, 1.2, (n_flying, 1)) * np.linalg.norm(box.size)
    pts = np.concatenate([pts, flying])
    r = np.concatenate([r, np.full(n_flying, 0.7)])
    return pts, np.clip(r, 0.0, 1.0)


def test_single_object_queries_recover_gt_boxes():
    rng = np.random.default_rng(7)
    ious, ious_aabb = [], []
    for seed in range(4):
        scene = make_room(seed, n_objects=4, noise_m=0.005)
        for target in range(4):
            pts, rel = simulated_relevancy(scene, target, rng)
            objs = ground_query(pts, rel, query="thing", colors=None)
            gt = scene.boxes[target]
            ious.append(iou_3d(objs[0].box, gt) if objs else 0.0)
            ious_aabb.append(iou_3d(objs[0].aabb, gt.aabb()) if objs else 0.0)
    ious = np.array(ious)
    assert np.mean(ious >= 0.5) >= 0.9, ious
    assert np.mean(np.array(ious_aabb) >= 0.5) >= 0.9, ious_aabb
    assert np.median(ious) > 0.8


def test_query_result_fields_pose_colour_feature_and_order():
    scene = make_room(3, n_objects=3)
    rng = np.random.default_rng(0)
    pts, rel = simulated_relevancy(scene, 0, rng, n_flying=0)
    feats = torch.zeros(len(pts), 4)
    feats[:, 0] = 1.0
    objs = ground_query(pts, rel, query="red mug", colors=scene.colors, features=feats, level="part")
    best = objs[0]
    gt = scene.boxes[0]
    assert best.label == best.query == "red mug" and best.level == "part"
    assert np.linalg.norm(best.center - gt.center) < 0.05
    assert best.box.is_gravity_aligned() and best.aabb.is_axis_aligned
    # yaw is modulo 90 degrees for a box; the quaternion encodes the box's own yaw
    q = best.orientation_xyzw
    assert np.allclose(Rotation.from_quat(q).as_matrix(), best.box.R_world_box, atol=1e-9)
    members = best.point_indices
    assert set(np.unique(scene.instance_ids[members[members < len(scene.points)]])) == {0}
    expected_colour = scene.colors[scene.instance_ids == 0][0] / 255.0
    assert np.allclose(best.color_rgb, expected_colour)
    assert np.allclose(best.feature, [1, 0, 0, 0])
    assert best.n_points == len(members) >= 20
    assert all(a.score >= b.score for a, b in zip(objs, objs[1:]))
    assert [o.instance_id for o in objs] == list(range(len(objs)))
    d = best.to_dict()
    assert d["label"] == "red mug" and "aabb" in d


def test_distractor_ranks_below_target_and_top_k_min_score():
    scene = make_room(1, n_objects=3)
    pts = scene.points.astype(np.float64)
    rel = np.full(len(pts), 0.4)
    rel[scene.instance_ids == 0] = 0.8
    rel[scene.instance_ids == 1] = 0.7
    objs = ground_query(pts, rel, "q", config=GroundingConfig(relative_threshold=0.5))
    assert len(objs) == 2
    assert iou_3d(objs[0].box, scene.boxes[0]) > 0.8 and iou_3d(objs[1].box, scene.boxes[1]) > 0.8
    assert objs[0].score == pytest.approx(0.8) and objs[1].score == pytest.approx(0.7)
    assert len(ground_query(pts, rel, "q", config=GroundingConfig(relative_threshold=0.5, top_k=1))) == 1
    assert len(ground_query(pts, rel, "q", config=GroundingConfig(relative_threshold=0.5, min_score=0.75))) == 1


def test_nothing_relevant_gives_empty_list():
    scene = make_room(2, n_objects=2)
    rel = np.full(len(scene.points), 0.45)
    assert ground_query(scene.points, rel, "unicorn") == []
    assert ground_query(np.zeros((0, 3)), np.zeros(0), "x") == []
    assert relevancy_threshold(np.array([0.3, 0.9]), GroundingConfig()) == pytest.approx(0.72)


def test_levels_choose_the_most_relevant_level():
    scene = make_room(4, n_objects=2)
    n = len(scene.points)
    rl = np.full((3, n), 0.4)
    rl[2, scene.instance_ids == 1] = 0.75
    rl[0, scene.instance_ids == 0] = 0.6
    objs = ground_query_levels(scene.points, rl, "sofa")
    assert objs[0].level == "whole" and iou_3d(objs[0].box, scene.boxes[1]) > 0.8
    with pytest.raises(ValueError, match="shape"):
        ground_query_levels(scene.points, rl[:2], "sofa")


@pytest.mark.parametrize(
    "points, rel, kwargs, match",
    [
        (np.zeros((5, 2)), np.zeros(5), {}, r"\(N, 3\)"),
        (np.zeros((5, 3)), np.zeros(4), {}, "relevancy must have shape"),
        (np.zeros((5, 3)), np.array([0, 0, np.nan, 0, 0]), {}, "non-finite"),
        (np.full((5, 3), np.inf), np.zeros(5), {}, "non-finite"),
        (np.zeros((5, 3)), np.zeros(5), {"colors": np.zeros((4, 3))}, "colors"),
        (np.zeros((5, 3)), np.zeros(5), {"colors": np.full((5, 3), 2.0)}, r"\[0, 1\]"),
        (np.zeros((5, 3)), np.zeros(5), {"features": np.zeros((4, 8))}, "features"),
        (np.zeros((5, 3)), np.zeros(5), {"level": "room"}, "level"),
        (np.zeros((5, 3)), np.zeros(5), {"config": GroundingConfig(top_k=0)}, "top_k"),
    ],
)
def test_bad_input_raises_value_error(points, rel, kwargs, match):
    rel_before = np.array(rel, copy=True)
    with pytest.raises(ValueError, match=match):
        ground_query(points, rel, "q", **kwargs)
    np.testing.assert_array_equal(rel, rel_before)


def test_config_from_mapping_nested_and_rejects_bad_values():
    cfg = from_mapping(GroundingConfig, {"absolute_threshold": 0.55, "cluster": {"eps_m": 0.1, "min_samples": 3}})
    assert cfg.cluster.eps_m == 0.1 and cfg.cluster.min_samples == 3 and cfg.absolute_threshold == 0.55
    assert from_mapping(GroundingConfig, to_mapping(cfg)) == cfg
    with pytest.raises(ConfigError, match="eps_m"):
        from_mapping(GroundingConfig, {"cluster": {"eps_m": -1.0}})
    with pytest.raises(ConfigError, match="unknown"):
        from_mapping(GroundingConfig, {"epsilon": 0.1})


def test_dbscan_subsampled_assigns_every_point_by_nearest_cluster():
    rng = np.random.default_rng(0)
    a = rng.uniform([0, 0, 0], [1, 1, 0.2], (30000, 3))
    b = rng.uniform([2, 0, 0], [3, 1, 0.2], (30000, 3))
    lonely = np.array([[10.0, 10.0, 10.0]])
    pts = np.concatenate([a, b, lonely])
    labels = dbscan_labels(pts, ClusterConfig(eps_m=0.08, min_samples=5, max_points=5000))
    assert labels[-1] == -1
    la, lb = labels[: len(a)], labels[len(a) : -1]
    assert np.all(la == la[0]) and np.all(lb == lb[0]) and la[0] != lb[0] and min(la[0], lb[0]) >= 0
    # deterministic
    np.testing.assert_array_equal(labels, dbscan_labels(pts, ClusterConfig(eps_m=0.08, min_samples=5, max_points=5000)))


def test_voxel_representatives_one_per_voxel():
    pts = np.array([[0.01, 0.01, 0.0], [0.015, 0.01, 0.0], [0.5, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    idx = voxel_representatives(pts, 0.1)
    assert list(idx) == [0, 2, 3]
    with pytest.raises(ValueError):
        voxel_representatives(pts, 0.0)


def test_robust_boxes_ignore_a_few_far_outliers():
    rng = np.random.default_rng(1)
    R = Rotation.from_euler("z", 0.4).as_matrix()
    gt = Box3D(np.array([1.0, 2.0, 0.5]), np.array([0.8, 0.4, 1.0]), R)
    local = rng.uniform(-0.5, 0.5, (5000, 3)) * gt.size
    pts = gt.center + local @ R.T
    outliers = gt.center + rng.normal(0, 3.0, (20, 3))
    all_pts = np.concatenate([pts, outliers])
    box, aabb = robust_boxes(all_pts, percentile=1.0)
    assert iou_3d(box, gt) > 0.85
    assert abs(np.mod(box.yaw - 0.4 + np.pi / 4, np.pi / 2) - np.pi / 4) < 0.05
    assert iou_3d(aabb, gt.aabb()) > 0.85
    naive = Box3D.gravity_aligned_of(all_pts)
    assert iou_3d(naive, gt) < 0.2  # the outliers would have ruined the box
    assert inlier_mask(all_pts, 0.0).all()
