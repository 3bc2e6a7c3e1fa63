"""The relevancy render a planner requests ("where in this image is the mug", RenderRelevancy): on a synthetic room,
from the fused points' splats and from language Gaussians served from a map file, the best pixel of "the X" lies in
X's ground-truth image box, its 3D point in X's ground-truth box, and the instances are Ground's; bad requests get
their error codes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import synthetic_config

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.gaussians.relevancy_render import best_pixel, render_query_view

SEED = 37  # not one of the seeds measured in docs/BENCHMARKS.md
VIEWS = (2, 6, 10, 14)


def coded_gaussians_from_points(language_map):
    """The untrained field of a map's points (one coded disc per point, opacity 0.9), on the CPU."""
    from lang3d_ros.gaussians.instances import gaussians_from_point_map

    return gaussians_from_point_map(language_map, device="cpu")


def write_map_with_gaussians(language_map, model, path) -> None:
    """The map file of ``language_map`` with ``model`` as its language Gaussians (the trainer's blob)."""
    from lang3d_ros.gaussians.ply import save_gaussians
    from lang3d_ros.mapstore import write_map

    ply = path.with_suffix(".ply")
    save_gaussians(ply, model, metadata={"frame_id": language_map.config.frames.map_frame})
    bundle = language_map.to_bundle()
    bundle.blobs["gaussians.ply"] = ply.read_bytes()
    write_map(path, bundle)


def synthetic_room(seed: int, n_frames: int = 16):
    """(scene, config, stack, poses, K): a synthetic room fused from an orbit at 160x120 (ground-truth semantics)."""
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene = generate_scene(seed=seed, n_objects=6)
    cfg = synthetic_config(mapping={"keyframes": {"min_translation_m": 0.25}}, llm={"mode": "parser_only"})
    stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
    K = DEFAULT_INTRINSICS.scaled(160, 120)
    poses = make_trajectory(scene, "orbit", n_frames=n_frames, seed=seed)
    for f in render_frames(scene, poses, K, seed=seed):
        stack.pipeline.process_now(f)
    return scene, cfg, stack, poses, K


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    from lang3d_ros.mapping.language_map import LanguageMap

    scene, cfg, stack, poses, K = synthetic_room(SEED)
    path = tmp_path_factory.mktemp("maps") / "room.l3dmap"
    write_map_with_gaussians(stack.language_map, coded_gaussians_from_points(stack.language_map), path)
    served = LanguageMap(
        dataclasses.replace(cfg, grounding=dataclasses.replace(cfg.grounding, field="gaussians")),
        stack.language_map.text_encoder,
        device="cpu",
    )
    served.load(path)
    return {"scene": scene, "points": stack.language_map, "gaussians": served, "poses": poses, "K": K}


def _visible_unique_objects(scene, T, K, min_pixels: int = 30):
    """(object, GT mask) of the uniquely labelled objects covering >= min_pixels of the view."""
    from lang3d_ros.evaluation.render import gt_instance_map

    inst = gt_instance_map(scene, T, K)
    labels = [o.label for o in scene.objects]
    out = []
    for o in scene.objects:
        mask = inst == o.instance_id
        if labels.count(o.label) == 1 and o.label not in ("floor", "wall") and mask.sum() >= min_pixels:
            out.append((o, mask))
    return out


@pytest.mark.parametrize("field", ["points", "gaussians"])
def test_best_pixel_of_the_x_lies_in_its_ground_truth_box(room, field):
    from lang3d_ros.evaluation.lerf_protocol import box_contains, mask_boxes

    lmap, K = room[field], room["K"]
    hits, big_hits, big, tried = 0, 0, 0, 0
    for vi in VIEWS:
        T = room["poses"][vi]
        for obj, gt in _visible_unique_objects(room["scene"], T, K):
            query = f"the {obj.label}"
            view = render_query_view(lmap, query, T, K)
            assert view.answered_by == field and view.level == "whole"
            assert view.relevancy.shape == (K.height, K.width) and view.relevancy.dtype == np.float32
            assert 0.0 <= view.relevancy.min() and view.relevancy.max() <= 1.0
            top = lmap.ground(query)[0]
            assert view.target_in_view and view.instance_ids[0] == top.instance_id, (query, view.instance_ids)
            assert view.instance_scores[0] == pytest.approx(top.score) and view.instance_pixels[0] > 0
            u, v = view.best_uv
            inside = box_contains(mask_boxes(gt), u, v)
            # the 3D point of the best pixel is inside the object's ground-truth box, give or take 5 cm (the sensor
            # noise model's depth error at 3-4 m, and a neighbouring point's splat on a surface seen at a grazing angle)
            p = view.best_point_world
            lo = obj.aabb.center - obj.aabb.size / 2 - 0.05
            hi = obj.aabb.center + obj.aabb.size / 2 + 0.05
            in_box_3d = p is not None and bool(np.all(p >= lo) and np.all(p <= hi))
            tried += 1
            hits += inside and in_box_3d
            if gt.mean() >= 0.01:  # objects covering >= 1 % of the image: always
                big += 1
                big_hits += inside and in_box_3d
                assert inside and in_box_3d, (field, vi, query, (u, v), mask_boxes(gt), p, lo, hi)
    assert tried >= 6 and big >= 2
    # the points' splats are the fused points themselves; the untrained Gaussians (one disc per point) bleed over
    # the edges of thin objects (a book on a table), so a few of the smallest may miss
    assert hits / tried >= (1.0 if field == "points" else 0.8), (field, hits, tried)


def test_ground_from_the_served_gaussians_gives_the_points_ids_and_boxes(room):
    """A map file's Gaussians answer Ground with the instance table's ids, order and boxes (every segment is carried
    by this field; a trained one may carry fewer, see test_mapping_gaussians.py)."""
    labels = [o.label for o in room["scene"].objects]
    unique = sorted({lab for lab in labels if labels.count(lab) == 1})
    assert len(unique) >= 3 and room["gaussians"].answering_gaussians() is not None
    for lab in unique:
        by_points, by_gaussians = room["points"].ground(lab), room["gaussians"].ground(lab)
        assert by_points and [o.instance_id for o in by_gaussians] == [o.instance_id for o in by_points], lab
        for a, b in zip(by_points, by_gaussians):
            assert np.allclose(a.box.center, b.box.center) and np.allclose(a.box.size, b.box.size), lab
            assert a.score == pytest.approx(b.score) and a.level == b.level


def test_the_view_answers_consistently_and_says_when_the_target_is_out_of_view(room):
    lmap, K, T = room["gaussians"], room["K"], room["poses"][VIEWS[0]]
    obj, _ = max(_visible_unique_objects(room["scene"], T, K), key=lambda x: x[1].sum())
    view = render_query_view(lmap, obj.label, T, K)
    by_points = render_query_view(room["points"], obj.label, T, K)
    assert view.instance_ids == by_points.instance_ids  # both fields answer with the instance table's ids
    assert np.array_equal(view.mask, view.relevancy >= view.mask_threshold - 1e-6)
    assert view.mask[view.best_uv[1], view.best_uv[0]] and view.best_score >= view.mask_threshold
    g = lmap.config.grounding
    assert view.mask_threshold == pytest.approx(
        max(g.absolute_threshold, g.relative_threshold * view.instance_scores[0], g.min_score)
    )
    loose = render_query_view(lmap, obj.label, T, K, mask_threshold=0.05)
    assert loose.mask_threshold == pytest.approx(0.05) and loose.mask.sum() > view.mask.sum()
    # the same camera turned to face the other way: the target is not in view, nothing is claimed
    away = T.copy()
    away[:3, :3] = T[:3, :3] @ np.diag([-1.0, 1.0, -1.0])
    other = render_query_view(lmap, obj.label, away, K)
    assert not other.target_in_view and other.instance_ids == [] and other.instance_pixels == []


def test_bad_requests_and_missing_fields_have_their_codes(room, monkeypatch):
    from lang3d_ros.geometry.camera import Intrinsics
    from lang3d_ros.mapping.language_map import LanguageMap

    lmap, K, T = room["gaussians"], room["K"], room["poses"][VIEWS[0]]

    def code(fn, *a, **kw):
        with pytest.raises(Lang3DError) as err:
            fn(*a, **kw)
        return err.value.code

    label = room["scene"].objects[0].label
    for bad_K in (Intrinsics(100.0, 100.0, 50.0, 50.0, 5000, 10), Intrinsics(1e3, 1e3, 2e3, 2e3, 4000, 4000)):
        assert code(render_query_view, lmap, label, T, bad_K) == ErrorCode.BAD_REQUEST
    skew = T.copy()
    skew[:3, :3] *= 2.0
    assert code(render_query_view, lmap, label, skew, K) == ErrorCode.BAD_REQUEST
    assert code(render_query_view, lmap, label, np.full((4, 4), np.nan), K) == ErrorCode.BAD_REQUEST
    assert code(render_query_view, lmap, label, T, K, level="huge") == ErrorCode.BAD_REQUEST
    assert code(render_query_view, lmap, label, T, K, mask_threshold=2.0) == ErrorCode.BAD_REQUEST
    with pytest.raises(ValueError):
        render_query_view(lmap, "", T, K)
    points = room["points"]
    empty = LanguageMap(points.config, points.text_encoder, device="cpu")
    assert code(render_query_view, empty, label, T, K) == ErrorCode.NO_MAP
    # grounding.field gaussians on a map without trained Gaussians: the model is unavailable, said so
    monkeypatch.setattr(points.config.grounding, "field", "gaussians")
    assert code(render_query_view, points, label, T, K) == ErrorCode.MODEL_UNAVAILABLE
    monkeypatch.setattr(points.config.grounding, "field", "auto")
    assert render_query_view(points, label, T, K).answered_by == "points"  # auto falls back to the points
    monkeypatch.setattr(points, "ground", lambda *a, **kw: [])
    assert code(render_query_view, points, label, T, K) == ErrorCode.NOT_FOUND


def test_best_pixel_is_inside_the_candidates_away_from_their_edges():
    from lang3d_ros.evaluation.lerf_protocol import smooth_kernel_px

    value = np.zeros((100, 400), np.float32)
    cand = np.zeros(value.shape, bool)
    cand[30:70, 0:40] = True  # touches the image border on the left
    cand[0:5, 300:305] = True  # a speck of higher value counts less than a solid region
    value[cand] = 1.0
    value[0:5, 300:305] = 1.5
    half = smooth_kernel_px(400) // 2
    u, v = best_pixel(value, cand)
    assert half >= 4 and 30 + half <= v < 70 - half and half <= u < 40 - half
    value[cand] = 0.5
    u, v = best_pixel(value, np.zeros_like(cand))  # no candidates: the whole image
    assert 30 + half <= v < 70 - half and half <= u < 40 - half
