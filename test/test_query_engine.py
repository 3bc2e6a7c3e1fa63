"""Grounding, navigation and questions answered on a map built from a synthetic scene (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_config

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.geometry.boxes import iou_3d
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.llm import AnsweredBy
from lang3d_ros.mapping.queries import QueryEngine, navigation_target_phrase


@pytest.fixture(scope="module")
def engine_and_scene():
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene = generate_scene(seed=5, n_objects=8)
    cfg = synthetic_config(
        mapping={"keyframes": {"min_translation_m": 0.25}}, extraction={"vocabulary": sorted(set(scene.labels))}
    )
    stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
    K = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)
    for f in render_frames(scene, make_trajectory(scene, "orbit", n_frames=20, seed=1), K, seed=1):
        assert stack.pipeline.process_now(f) == ""
    return QueryEngine(cfg, stack.language_map), scene


def test_navigation_phrase_extraction():
    assert navigation_target_phrase("Take me to the chair by the window.") == "the chair by the window"
    assert navigation_target_phrase("please go over to the red sofa") == "the red sofa"
    assert navigation_target_phrase("the lamp") == "the lamp"
    with pytest.raises(ValueError):
        navigation_target_phrase("  ")


def test_plain_query_goes_through_relevancy(engine_and_scene):
    engine, scene = engine_and_scene
    floor_objs = [o for o in scene.objects if o.support_id == 0 and np.prod(o.aabb.size) > 0.05]
    assert floor_objs
    target = floor_objs[0]
    res = engine.ground(target.label, max_results=3)
    assert res.answered_by == "relevancy" and res.objects and res.latency_ms > 0
    best = max(
        iou_3d(o.aabb or o.box.aabb(), g.aabb) for o in res.objects for g in scene.objects if g.label == target.label
    )
    assert best >= 0.25


def test_objects_and_questions_come_from_the_map(engine_and_scene):
    engine, scene = engine_and_scene
    objs = engine.map.objects()
    assert objs and all(o.label for o in objs)
    labels = {o.label for o in objs}
    gt_labels = set(scene.labels)
    assert len(labels & gt_labels) >= 0.5 * len(gt_labels), (labels, gt_labels)
    for label in sorted(labels & gt_labels):  # every count is the ground truth's, and names what it counted
        n = sum(g == label for g in scene.labels)
        ans = engine.ask(f"how many {label}s are there?")
        assert ans.path == AnsweredBy.PARSER and f" {n} " in ans.text, (label, n, ans.text)
        assert len(ans.objects) == n and all(o.label == label for o in ans.objects)


def test_navigation_goal_is_free_reachable_and_at_standoff(engine_and_scene):
    engine, scene = engine_and_scene
    big = max((o for o in scene.objects if o.support_id == 0), key=lambda o: np.prod(o.aabb.size))
    start = (float(scene.room_min_xyz[0] + 0.4), float(scene.room_min_xyz[1] + 0.4), 0.0)
    res = engine.navigate(f"take me to the {big.label}", standoff_m=0.7, start_xy_yaw=start)
    assert res.success, res.message  # the largest floor object of this room is reachable from its corner
    assert res.target is not None and res.target.label == big.label
    nav = res.navigation
    assert abs(nav.standoff_m - 0.7) <= 0.2
    assert res.message.startswith(f"goal {nav.standoff_m:.2f} m from the {big.label}")  # the achieved standoff
    assert ("asked 0.70 m" in res.message) == (abs(nav.standoff_m - 0.7) > 0.025)
    gx, gy, gyaw = nav.goal_pose
    c = res.target.box.center
    assert abs(np.angle(np.exp(1j * (np.arctan2(c[1] - gy, c[0] - gx) - gyaw)))) < np.radians(15)
    assert len(nav.path) >= 1 and np.hypot(*(np.asarray(nav.path[0][:2]) - start[:2])) < 0.5
    # the standoff is measured from the target segment's own points: the goal is at it from the true object
    from lang3d_ros.navigation.goal import distance_to_footprint

    assert res.extra["standoff_from"] == "points"
    foot = engine.target_footprint_xy(res.target)
    assert foot is not None and distance_to_footprint(foot, big.obb).max() <= 0.1
    assert abs(float(distance_to_footprint(np.array([gx, gy]), big.obb)[0]) - 0.7) <= 0.1


def test_one_parse_per_request_and_one_route(engine_and_scene, monkeypatch):
    import lang3d_ros.llm.understand as und

    engine, scene = engine_and_scene
    calls = []
    real = und.parse
    monkeypatch.setattr(und, "parse", lambda n: calls.append(n) or real(n))
    label = sorted({o.label for o in engine.map.objects()} & set(scene.labels))[0]
    res = engine.ground(f"could you please show me the {label}")  # lead-in and politeness removed
    assert res.answered_by == AnsweredBy.RELEVANCY and res.objects and len(calls) == 1
    assert res.objects[0].query == label or label in res.message
    calls.clear()
    res = engine.ground(f"the largest {label}")  # a superlative is reasoned on the map's objects
    assert res.answered_by == AnsweredBy.PARSER and res.objects[0].label == label and len(calls) == 1
    calls.clear()
    engine.navigate(f"I need you to go to the {label}")
    assert len(calls) == 1


def test_absent_object_is_not_found_with_the_closest_labels(engine_and_scene):
    engine, scene = engine_and_scene
    for call in (
        lambda: engine.ground("find the piano"),
        lambda: engine.navigate("take me to the piano"),
        lambda: engine.ask("where is the piano?"),
    ):
        with pytest.raises(Lang3DError, match="nothing called 'piano'.*closest labels in it are") as exc:
            call()
        assert exc.value.code == ErrorCode.NOT_FOUND
        named = str(exc.value).split("are ", 1)[1].split(", ")
        assert named and set(named) <= {o.label for o in engine.map.objects()}


def test_empty_map_and_bad_queries_are_refused():
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.semantics.backends import build_text_encoder

    cfg = synthetic_config()
    engine = QueryEngine(cfg, LanguageMap(cfg, build_text_encoder(cfg.semantics), device="cpu"))
    for call in (lambda: engine.ground("mug"), lambda: engine.ask("what is here?"), lambda: engine.navigate("go home")):
        with pytest.raises(Lang3DError, match="empty") as exc:
            call()
        assert exc.value.code == ErrorCode.NO_MAP
    for bad in ("", "   ", "x" * 5000, None, "mug\x00"):
        with pytest.raises(Lang3DError) as exc:
            engine.ground(bad)
        assert exc.value.code == ErrorCode.BAD_REQUEST
