"""Instance codes on Gaussians: assignment from labelled points, relevancy through codes, instance answers, relevancy
images for a camera pose, online growth from new keyframes, and the grounding.field choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.gaussians.config import GaussianConfig, resolve_field
from lang3d_ros.gaussians.instances import (
    answer_from_gaussians,
    codes_from_points,
    gather_segment_relevancy,
    render_relevancy,
    segment_scores_from_gaussians,
)
from lang3d_ros.gaussians.model import GaussianModel
from lang3d_ros.geometry.camera import Intrinsics

CFG = GaussianConfig(device="cpu", backend="torch")


def _two_blobs(rng, n=400):
    """Two point blobs 1 m apart on the x axis, 2 m in front of a camera at the origin looking +z."""
    a = rng.normal([-0.5, 0.0, 2.0], 0.08, (n, 3))
    b = rng.normal([0.5, 0.0, 2.0], 0.08, (n, 3))
    return np.concatenate([a, b]).astype(np.float32)


def test_codes_from_points_vote_by_distance_and_weight_and_stop_at_max_distance():
    rng = np.random.default_rng(3)
    pts = _two_blobs(rng)
    labels = np.stack([np.repeat([7, 9], 400), np.repeat([7, 9], 400), np.repeat([1, 1], 400)], axis=1)
    labels[::50, 0] = -1  # unlabelled points do not vote
    means = np.array([[-0.5, 0, 2.0], [0.5, 0, 2.0], [3.0, 0, 2.0]])
    codes = codes_from_points(means, pts, labels, k=4, max_distance_m=0.3)
    assert codes.dtype == np.int32 and codes.shape == (3, 3)
    assert codes[:2].tolist() == [[7, 7, 1], [9, 9, 1]] and codes[2].tolist() == [-1, -1, -1]
    # weights: three near points of segment 5 with weight 0 lose to one farther point of segment 6
    near = np.array([[0, 0, 0.01], [0, 0.01, 0], [0.01, 0, 0], [0.05, 0.0, 0.0]])
    w = np.array([0.0, 0.0, 0.0, 1.0])
    assert codes_from_points(np.zeros((1, 3)), near, np.array([5, 5, 5, 6]), w, k=4).tolist() == [[6]]
    assert codes_from_points(np.zeros((1, 3)), near, np.array([5, 5, 5, 6]), None, k=4).tolist() == [[5]]
    with pytest.raises(ValueError, match="labels"):
        codes_from_points(means, pts, labels[:10])
    with pytest.raises(ValueError, match="k >= 1"):
        codes_from_points(means, pts, labels, k=0)


def test_gather_segment_relevancy_maps_codes_and_zeroes_unknown_ones():
    codes = np.array([[3, 3, 10], [4, -1, 10], [99, 4, 11]])
    ids = np.array([11, 4, 3, 10])
    rel = gather_segment_relevancy(codes, ids, np.array([0.1, 0.2, 0.3, 0.4]))
    assert rel.shape == (3, 3) and rel.dtype == np.float32
    assert np.allclose(rel, [[0.3, 0.2, 0.0], [0.3, 0.0, 0.2], [0.4, 0.4, 0.1]])
    per_level = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], np.float32) / 20
    rel = gather_segment_relevancy(torch.as_tensor(codes, dtype=torch.int32), ids, per_level)
    assert np.allclose(rel[1], [7 / 20, 0.0, 6 / 20]) and np.allclose(rel[2], [12 / 20, 12 / 20, 9 / 20])
    with pytest.raises(ValueError, match="segment_relevancy"):
        gather_segment_relevancy(codes, ids, np.zeros(3))


def _blob_model(rng):
    pts = _two_blobs(rng)
    model = GaussianModel.from_points(
        pts, np.full(pts.shape, 0.5), config=GaussianConfig(init_opacity=0.9), device="cpu"
    )
    model.codes[:, 2] = torch.as_tensor(np.repeat([7, 9], 400), dtype=torch.int32)
    return model, pts


def test_answers_from_gaussians_use_the_segment_ids_and_box_their_gaussians():
    model, pts = _blob_model(np.random.default_rng(4))
    ids, scores = np.array([7, 9, 12]), np.array([0.4, 0.9, 0.95])  # 12: no Gaussian carries it
    ans = answer_from_gaussians(model, 2, ids, scores, top_k=3)
    assert [a.segment_id for a in ans] == [9, 7] and [a.score for a in ans] == pytest.approx([0.9, 0.4])
    assert ans[0].num_gaussians == 400 and ans[0].level == 2
    lo, hi = np.percentile(pts[400:], 2, axis=0), np.percentile(pts[400:], 98, axis=0)
    assert np.allclose(ans[0].box_min_xyz, lo, atol=1e-5) and np.allclose(ans[0].box_max_xyz, hi, atol=1e-5)
    assert [a.segment_id for a in answer_from_gaussians(model, 2, ids, scores, min_score=0.5)] == [9]
    assert answer_from_gaussians(model, 0, ids, scores) == []  # no codes on level 0
    # the latents path: a segment's score is the opacity-weighted mean of its Gaussians' relevancy
    rel = np.where(np.arange(800) < 400, 0.2, 0.6)
    assert np.allclose(segment_scores_from_gaussians(model, 2, ids, rel), [0.2, 0.6, 0.0])


def test_render_relevancy_lights_the_relevant_segment_where_it_projects():
    model, _ = _blob_model(np.random.default_rng(5))
    K = Intrinsics(80.0, 80.0, 39.5, 29.5, 80, 60)
    rel = gather_segment_relevancy(model.codes, np.array([7, 9]), np.array([0.0, 1.0]))[2]
    img = render_relevancy(model, rel, np.eye(4), K, CFG)
    assert img.shape == (60, 80) and img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    # blob 9 at x = +0.5 m, z = 2 m projects to u = 39.5 + 80 * 0.25 = 59.5; blob 7 to u = 19.5
    assert img[25:35, 55:65].mean() > 0.5 and img[25:35, 15:25].max() < 0.05
    flipped = render_relevancy(model, rel, np.diag([-1.0, -1.0, 1.0, 1.0]), K, CFG)  # camera turned 180 deg about z
    assert flipped[25:35, 15:25].mean() > 0.5
    with pytest.raises(ValueError, match="gaussian_relevancy"):
        render_relevancy(model, rel[:10], np.eye(4), K, CFG)
    with pytest.raises(ValueError, match="T_world_cam"):
        render_relevancy(model, rel, np.eye(3), K, CFG)


def test_resolve_field():
    assert resolve_field("auto", False) == "points" and resolve_field("auto", True) == "gaussians"
    assert resolve_field("points", True) == "points" and resolve_field("gaussians", True) == "gaussians"
    with pytest.raises(ValueError, match="train_gaussians"):
        resolve_field("gaussians", False)
    with pytest.raises(ValueError, match="points, gaussians or auto"):
        resolve_field("mesh", True)


@pytest.mark.slow
def test_gaussians_answer_with_the_points_instance_ids_and_boxes_on_a_synthetic_room():
    """A trained synthetic room (seed 23, not the demo's): Gaussians coded from the labelled points answer every
    unique label with the same segment id as the points' answer (best segment at the best level) and a box that
    overlaps the points' box; the relevancy image through codes lights the answered object's pixels."""
    from lang3d_ros.gaussians.synthetic_eval import SyntheticSceneSettings, segment_table, train_synthetic_scene

    scene = train_synthetic_scene(
        23,
        SyntheticSceneSettings(
            frames=12, width_px=160, height_px=120, rgb_iters=40, lang_iters=0, autoencoder_steps=20
        ),
    )
    table = segment_table(scene)
    model = scene.model
    model.codes = torch.from_numpy(codes_from_points(model.means.detach().numpy(), table.points_xyz, table.labels))
    coded = (model.codes >= 0).any(dim=1)
    assert 0.2 < float(coded.float().mean()) < 0.9  # objects are coded; floor and walls carry no segment
    present = {int(i) for i in np.unique(table.labels[:, 0]) if i >= 0}
    assert present <= {int(i) for i in model.codes[:, 0].unique()}  # every segment with points has Gaussians
    sem = scene.semantics
    canonical = torch.nn.functional.normalize(
        sem.text_encoder.encode_text(["object", "things", "stuff", "texture"]), dim=-1
    )
    values = list(sem.instance_labels.values())
    unique = sorted({lab for lab in values if values.count(lab) == 1})
    assert len(unique) >= 4
    big = 0
    for lab in unique:
        rel = table.relevancy(lab, sem.text_encoder, canonical)  # (L, S)
        lvl = int(np.argmax(rel.max(axis=1)))
        pid = next(int(table.ids[i]) for i in np.argsort(-rel[lvl]) if (table.labels[:, lvl] == table.ids[i]).any())
        pts = table.points_xyz[table.labels[:, lvl] == pid]
        ans = answer_from_gaussians(model, lvl, table.ids, rel[lvl], top_k=1)
        assert ans and ans[0].segment_id == pid, lab
        lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
        inter = np.prod(np.clip(np.minimum(hi, ans[0].box_max_xyz) - np.maximum(lo, ans[0].box_min_xyz), 0, None))
        iou = inter / (np.prod(hi - lo) + np.prod(ans[0].box_max_xyz - ans[0].box_min_xyz) - inter)
        if ans[0].num_gaussians >= 30:  # the centres of a handful of coarse Gaussians do not span a small object
            assert iou > 0.5, (lab, iou)
            big += 1
    assert big >= 3
    # the rendered relevancy image of one answer covers that object's pixels in a held-out view more than the rest
    f = next(f for f in scene.held_frames if (f.instance_map == pid).sum() > 50)
    rel = gather_segment_relevancy(model.codes, table.ids, np.where(table.ids == pid, 1.0, 0.0))[lvl]
    img = render_relevancy(model, rel, f.T_world_cam, f.intrinsics, scene.config.gaussians)
    on = f.instance_map == pid
    assert img[on].mean() > 0.5 and img[~on].mean() < 0.1


def test_segments_carried_and_the_point_map_label_source():
    import threading
    from types import SimpleNamespace

    from lang3d_ros.gaussians.instances import point_map_label_source, segments_carried

    model, _ = _blob_model(np.random.default_rng(6))
    with torch.no_grad():
        model.params["opacity_logits"][400:] = -10.0  # blob 9 transparent: not carried
    assert segments_carried(model, 2, np.array([9, 7, 3])).tolist() == [False, True, False]
    assert segments_carried(model, 2, np.array([7]), min_gaussians=401).tolist() == [False]
    assert segments_carried(model, 0, np.array([7])).tolist() == [False]
    pm = SimpleNamespace(
        points_xyz=torch.zeros(4, 3),
        label_weight=lambda lvl: torch.full((4,), 0.5),
        labels=lambda lvl: torch.tensor([lvl, -1, 5, 6], dtype=torch.int32),
    )
    xyz, labels, weights = point_map_label_source(SimpleNamespace(lock=threading.RLock(), points=pm))()
    assert xyz.shape == (4, 3) and labels.dtype == np.int32 and labels[:, 0].tolist() == [0, -1, 5, 6]
    assert labels[0].tolist() == [0, 1, 2] and weights.shape == (4, 3)
