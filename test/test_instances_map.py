"""Instances through the real stack: PointMap label votes + LanguageMap (ground, objects, relevancy, map files),
ground-truth-label semantics through the real MiniLM text encoder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_config
from test_instances import K, orbit_poses, touching_scene

from lang3d_ros.datasets.synthetic.render import render_frames
from lang3d_ros.geometry.boxes import iou_3d
from lang3d_ros.mapstore import read_map, write_map


def _stack(scene):
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    return build_stack(synthetic_config(), **ground_truth_tables(scene), start=False)


def _replay(stack, scene, poses):
    for f in render_frames(scene, poses, K, noise=None, seed=0):
        assert stack.pipeline.process_now(f) == ""


@pytest.fixture(scope="module")
def mapped():
    scene = touching_scene()
    stack = _stack(scene)
    poses = orbit_poses(8)
    _replay(stack, scene, poses)
    first = stack.language_map.objects()
    for _ in range(9):
        _replay(stack, scene, poses)
    return scene, stack, first


def _by_truth(objs, scene):
    """ground-truth instance id -> the objects whose box overlaps its box by IoU >= 0.5."""
    return {g.instance_id: [o for o in objs if iou_3d(o.aabb, g.aabb) >= 0.5] for g in scene.objects}


def test_objects_survive_ten_revisits_with_stable_ids_labels_colour_and_support(mapped):
    scene, stack, first = mapped
    objs = stack.language_map.objects()
    match, match_first = _by_truth(objs, scene), _by_truth(first, scene)
    assert len(objs) == len(scene.objects) and all(len(v) == 1 for v in match.values()), match
    assert {k: v[0].instance_id for k, v in match.items()} == {k: v[0].instance_id for k, v in match_first.items()}
    for g in scene.objects:
        o = match[g.instance_id][0]
        assert o.label == g.label and o.level == "whole" and o.n_observations >= 40
    red, blue = match[1][0].color_rgb, match[2][0].color_rgb
    assert red[0] > 2 * red[2] and blue[2] > 2 * blue[0]
    assert match[4][0].support_id == match[3][0].instance_id  # the book rests on the bed
    assert match[1][0].support_id == -1  # the floor is not an instance of the ground-truth backend


def test_ground_ranks_instances_and_relevancy_gathers_through_labels(mapped):
    scene, stack, _ = mapped
    lmap = stack.language_map
    chairs = lmap.ground("chair", max_results=5)
    truth = [g for g in scene.objects if g.label == "chair"]
    assert len(chairs) == 2 and {c.instance_id for c in chairs} <= {o.instance_id for o in lmap.objects()}
    assert sorted(max(iou_3d(c.aabb, g.aabb) for c in chairs) for g in truth)[0] >= 0.5
    book = lmap.ground("book", max_results=1)
    assert len(book) == 1 and iou_3d(book[0].aabb, scene.objects[3].aabb) >= 0.25
    assert lmap.ground("book", max_results=1, level="subpart")[0].level == "subpart"
    rel, xyz, colors = lmap.relevancy_by_level("book")
    assert rel.shape == (3, lmap.num_points) and xyz.shape == (lmap.num_points, 3) and colors.shape == xyz.shape
    on_book = scene.objects[3].aabb.contains(xyz, margin_m=0.01)
    assert rel[2, on_book].mean() > rel[2, ~on_book].mean() + 0.1
    with pytest.raises(ValueError):
        lmap.ground("book", level="nope")


def test_memory_counts_points_and_the_segment_table(mapped):
    _, stack, _ = mapped
    lmap = stack.language_map
    table_bytes = lmap.instances.table.nbytes
    assert table_bytes > 0 and lmap.instances.table.feature.dtype == np.float16
    expected = lmap.num_points * lmap.points.bytes_per_point + lmap.instances.nbytes
    assert lmap.memory_mb() * 2**20 == pytest.approx(expected)


def test_map_file_round_trip_and_bad_files(mapped, tmp_path):
    scene, stack, _ = mapped
    lmap = stack.language_map
    path = tmp_path / "m.l3dmap"
    lmap.save(path)
    meta = read_map(path).metadata
    assert meta["text_encoder"] == type(lmap.text_encoder).__name__ and meta["feature_dim"] == lmap.feature_dim
    assert meta["gt_text_encoder"] == "minilm" and meta["num_segments"] == lmap.num_segments
    other = _stack(scene).language_map
    other.load(path)
    a = {o.instance_id: (o.label, o.support_id, o.n_points) for o in lmap.objects()}
    b = {o.instance_id: (o.label, o.support_id, o.n_points) for o in other.objects()}
    assert a == b
    assert [o.instance_id for o in other.ground("chair")] == [o.instance_id for o in lmap.ground("chair")]
    bundle = lmap.to_bundle()
    n_before, objs_before = other.num_points, b
    for name, value in (
        ("instances.table.feature", lambda a: a[:, :5]),
        ("instances.table.aabb_min", lambda a: np.full_like(a, np.inf)),
        ("instances.table.next_id", lambda a: np.zeros_like(a)),
    ):
        bad = read_map(path)
        bad.arrays[name] = value(bundle.arrays[name])
        write_map(tmp_path / "bad.l3dmap", bad)
        with pytest.raises(ValueError):
            other.load(tmp_path / "bad.l3dmap")
        assert other.num_points == n_before
        assert {o.instance_id: (o.label, o.support_id, o.n_points) for o in other.objects()} == objs_before
