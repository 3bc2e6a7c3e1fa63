"""Evaluation building blocks without ROS: query generation and files, z-buffer rendering, the LERF protocol,
scoring rules and recompute(raw) -> results, the report."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory
from lang3d_ros.evaluation.lerf_protocol import (
    mask_boxes,
    measure_levels,
    score_view_query,
    segmentation_mask,
    smooth_kernel_px,
    smooth_relevancy,
)
from lang3d_ros.evaluation.metrics import RAW_FORMAT, RAW_FORMAT_VERSION, differences, recompute
from lang3d_ros.evaluation.queries import EvalQuery, QuerySet, generate_queries, load_queries
from lang3d_ros.evaluation.render import gather, gt_instance_map, point_index_image
from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.geometry.camera import Intrinsics


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    from lang3d_ros.datasets.synthetic import load_ground_truth

    scene = generate_scene(5, n_objects=12)
    poses = make_trajectory(scene, "orbit", 6, seed=5)
    path = tmp_path_factory.mktemp("gt") / "ground_truth.json"
    scene.save_ground_truth(path, poses, np.arange(6) * 33_000_000, DEFAULT_INTRINSICS.scaled(160, 120))
    return load_ground_truth(path), scene


# ----------------------------------------------------------------------------- queries
def test_generated_queries_have_unique_answers(truth, tmp_path):
    from lang3d_ros.datasets.synthetic import LABELS
    from lang3d_ros.evaluation.metrics import count_phrasing
    from lang3d_ros.evaluation.queries import COUNT_PHRASINGS, GROUND_KINDS

    gt, _ = truth
    qs = generate_queries(gt)
    objs = {o.instance_id: o for o in gt.objects}
    n_label = {lab: sum(o.label == lab for o in gt.objects) for lab in LABELS}
    kinds = {q.kind for q in qs.queries if q.service == "ground"}
    assert set(GROUND_KINDS) <= kinds
    for q in qs.queries:
        o = objs[q.target_ids[0]] if q.target_ids else None
        if q.kind == "label" and q.service == "ground":
            assert n_label[o.label] == 1 and o.support_id == 0 and q.text == f"the {o.label}"
        elif q.kind == "resting":
            assert n_label[o.label] == 1 and o.support_id in objs and q.text == f"the {o.label}"
        elif q.kind == "attribute":
            assert n_label[o.label] >= 2 and q.text.endswith(f"the {o.color_name} {o.label}")
            assert sum(x.label == o.label and x.color_name == o.color_name for x in gt.objects) == 1
        elif q.kind == "relation":
            s = objs[o.support_id]
            assert f"{o.label} on the {s.label}" in q.text
            assert (
                sum(
                    x.label == o.label and x.support_id in objs and objs[x.support_id].label == s.label
                    for x in gt.objects
                )
                == 1
            )
        elif q.kind == "count":
            lab = next(
                lab for lab in sorted(LABELS, key=len, reverse=True) if f" {lab}s" in q.text or f" {lab}es" in q.text
            )
            assert q.expected_count == n_label[lab]
            assert count_phrasing(q.text) in {t.replace("{p}", "X") for t in COUNT_PHRASINGS}
        if q.service == "navigate":
            assert o.support_id == 0 and q.text.startswith("take me to the ")
    counts = [q for q in qs.queries if q.kind == "count"]
    assert {q.expected_count for q in counts} >= {0, 1} and max(q.expected_count for q in counts) >= 2
    assert len({count_phrasing(q.text) for q in counts}) == len(COUNT_PHRASINGS)  # several phrasings
    assert [q.id for q in qs.queries] == sorted({q.id for q in qs.queries}, key=[q.id for q in qs.queries].index)
    small = generate_queries(gt, max_ground=4, max_navigate=1, max_ask=4)  # a small budget still covers every kind
    assert {q.kind for q in small.queries if q.service == "ground"} == set(GROUND_KINDS)
    # the start pose is where the camera stood: no object footprint holds it
    from lang3d_ros.navigation.goal import distance_to_footprint

    xy = np.array([qs.start_xy_yaw[:2]])
    assert all(distance_to_footprint(xy, o.obb)[0] > 0.0 for o in gt.objects if o.support_id == 0)
    for suffix in (".json", ".yaml"):
        back = load_queries(qs.save(tmp_path / f"q{suffix}"))
        assert back.to_dict() == qs.to_dict()


def test_start_pose_leaves_a_camera_position_over_a_table(truth):
    """The camera is carried 1.4 m high and passes over tables; the robot's start must be on free floor (the
    scorer's robot radius from every floor footprint and the walls), or every Navigate answer is unreachable."""
    from lang3d_ros.evaluation.metrics import DEFAULT_SETTINGS
    from lang3d_ros.evaluation.queries import start_pose_from_truth
    from lang3d_ros.navigation.goal import distance_to_footprint

    gt, _ = truth
    r = DEFAULT_SETTINGS["robot_radius_m"]
    half = np.asarray(gt.room_size_m[:2]) / 2
    floor = [o.obb for o in gt.objects if o.obb.min_xyz[2] < DEFAULT_SETTINGS["obstacle_max_height_m"]]
    host = max(floor, key=lambda b: b.volume)

    def is_free(xy) -> bool:
        xy = np.asarray([xy], float)
        return bool(np.all(np.abs(xy) <= half - r) and all(distance_to_footprint(xy, b)[0] >= r for b in floor))

    assert not is_free(host.center[:2])
    # the last camera stands over the largest floor object: the start walks back to the last free camera position
    over = copy.copy(gt)
    over.T_world_cams = np.concatenate([gt.T_world_cams, gt.T_world_cams[-1:].copy()])
    over.T_world_cams[-1, :2, 3] = host.center[:2]
    x, y, yaw = start_pose_from_truth(over)
    assert is_free((x, y))
    assert np.allclose((x, y), [T[:2, 3] for T in gt.T_world_cams if is_free(T[:2, 3])][-1])
    assert yaw == pytest.approx(math.atan2(-y, -x))
    # no free camera position at all: the free floor point nearest to the last one (2 cm grid)
    over.T_world_cams = over.T_world_cams[-1:]
    x, y, _ = start_pose_from_truth(over)
    assert is_free((x, y))
    for step in (0.05, 0.1):  # nothing free on a ring clearly closer
        ring = np.linalg.norm([x, y] - host.center[:2]) - step
        ang = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        pts = host.center[:2] + ring * np.stack([np.cos(ang), np.sin(ang)], 1)
        assert not any(is_free(p) for p in pts)


def test_objects_in_full_view_needs_the_whole_box_inside_one_image(truth):
    """An object is in full view when one recorded camera had all 8 corners of its box in the image: a camera 3 m
    in front of it does; one 0.3 m away (the box overflows the image) or looking away does not."""
    from lang3d_ros.datasets.synthetic import look_at
    from lang3d_ros.evaluation.queries import objects_in_full_view

    gt, _ = truth
    o = max(gt.objects, key=lambda x: x.obb.volume)
    c = o.obb.center

    def with_cams(*eyes_targets):
        t = copy.copy(gt)
        t.T_world_cams = np.stack([look_at(e, tg) for e, tg in eyes_targets])
        return objects_in_full_view(t)

    far = c + np.array([3.0, 0.0, 1.0])
    assert o.instance_id in with_cams((far, c))
    assert o.instance_id not in with_cams((c + np.array([0.3, 0.0, 0.2]), c))  # too close: corners outside
    assert o.instance_id not in with_cams((far, far + np.array([1.0, 0.0, 0.0])))  # looking away
    nothing = copy.copy(gt)
    nothing.T_world_cams = gt.T_world_cams[:0]
    assert objects_in_full_view(nothing) == []


def test_seen_fraction_counts_occlusion_and_the_field_of_view(truth):
    """The largest object (a bed) seen from 3.5 m towards the room's centre: most of its silhouette (what rests on
    it hides some); the same camera
    turned away: nothing; pressed against it (the image holds a small part of the silhouette): little; the camera
    behind a wall (the room's own mesh in between, everything occluded): nothing. The best camera wins."""
    from lang3d_ros.datasets.synthetic import look_at
    from lang3d_ros.evaluation.visibility import seen_fractions

    gt, scene = truth
    o = max(gt.objects, key=lambda x: x.obb.volume)
    c = np.asarray(o.obb.center, dtype=np.float64)
    K = gt.intrinsics
    inward = -c[:2] / np.linalg.norm(c[:2])
    near = c + np.array([*(3.5 * inward), 1.0])
    half = np.asarray(gt.room_size_m[:2]) / 2
    assert np.all(np.abs(near[:2]) < half)  # inside the room

    def seen(*eyes_targets):
        return seen_fractions(scene, np.stack([look_at(e, tg) for e, tg in eyes_targets]), K)[o.instance_id]

    front = seen((near, c))
    assert 0.8 < front < 1.0
    assert seen((near, near + np.array([*inward, 0.0]))) == 0.0  # looking away
    pressed = c + (near - c) * 0.15
    assert seen((pressed, c)) < 0.6
    assert seen((pressed, c), (near, c)) == pytest.approx(front)  # the best camera
    outside = c + np.array([*(-(np.max(half) + 3.0) * inward), 1.0])  # beyond the wall behind the object
    assert seen((outside, c)) == 0.0
    frac = seen_fractions(scene, np.stack([look_at(near, c)]), K)
    assert set(frac) == {x.instance_id for x in gt.objects} and all(0.0 <= v <= 1.0 for v in frac.values())


def test_count_answers_are_read_as_numbers():
    from lang3d_ros.evaluation.metrics import answered_count, score_count

    assert answered_count("There are 3 chairs.") == 3 and answered_count("I see no vase in the map.") == 0
    assert answered_count("There are two mugs") == 2 and answered_count("There is a mug.") == 1
    assert answered_count("There is one mug, not a cup") == 1 and answered_count("The map has nothing.") is None
    entry = {"expected_count": 0, "response": {"success": True, "answer": "There are 0 vases."}}
    assert score_count(entry) and not score_count(dict(entry, expected_count=1))
    assert not score_count({"expected_count": 0, "response": {"success": False, "answer": "no"}})


def test_bad_queries_files_are_refused(tmp_path):
    p = tmp_path / "q.json"
    p.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a lang3d_ros.eval_queries"):
        load_queries(p)
    good = QuerySet([EvalQuery("a", "ground", "label", "the sofa", [1])]).to_dict()
    for bad, msg in [
        ({"service": "fly"}, "service"),
        ({"kind": "count"}, "expected_count"),
        ({"target_ids": []}, "target_ids"),
    ]:
        d = copy.deepcopy(good)
        d["queries"][0].update(bad)
        p.write_text(json.dumps(d))
        with pytest.raises(ValueError, match=msg):
            load_queries(p)
    d = copy.deepcopy(good)
    d["queries"].append(dict(d["queries"][0]))
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="unique"):
        load_queries(p)


# ----------------------------------------------------------------------------- rendering
def test_zbuffer_keeps_the_nearest_point_and_closes_gaps():
    K = Intrinsics(fx=100.0, fy=100.0, cx=39.5, cy=29.5, width=80, height=60)
    g = np.stack(np.meshgrid(np.arange(-1.0, 1.0, 0.03), np.arange(-1.0, 1.0, 0.03)), -1).reshape(-1, 2)
    far = np.column_stack([g, np.full(len(g), 3.0)])
    near = np.column_stack(
        [
            g[(np.abs(g[:, 0]) < 0.3) & (np.abs(g[:, 1]) < 0.3)],
            np.full(((np.abs(g[:, 0]) < 0.3) & (np.abs(g[:, 1]) < 0.3)).sum(), 2.0),
        ]
    )
    pts = np.vstack([far, near]).astype(np.float32)
    idx = point_index_image(pts, np.eye(4), K, point_size_m=0.03)
    assert (idx[:, 8:70] >= 0).mean() > 0.95  # the far plane spans u 6..73; its 1-px spaced points leave no gaps
    assert (idx[:, :5] < 0).all()  # beyond the plane: no point
    label = np.r_[np.zeros(len(far)), np.ones(len(near))]
    img = gather(label, idx, fill=-1.0)
    assert img[29, 39] == 1.0 and img[5, 12] == 0.0  # the centre sees the nearer square, the rim the far plane
    assert 0.18 < (img == 1.0).mean() < 0.23  # a 0.6 m square at 2 m: 30x30 px (+1 px splat rim) of 80x60
    # behind the camera: nothing
    assert (point_index_image(pts * np.array([1, 1, -1], np.float32), np.eye(4), K) < 0).all()


def test_gt_instance_map_matches_rendering(truth):
    gt, scene = truth
    inst = gt_instance_map(scene, gt.T_world_cams[0], gt.intrinsics)
    assert inst.shape == (120, 160) and (inst == 0).any() and (inst > 0).any()


# ----------------------------------------------------------------------------- LERF protocol
def test_lerf_localization_and_segmentation():
    H, W = 60, 80
    gt = np.zeros((H, W), bool)
    gt[20:40, 30:50] = True
    rel = np.full((H, W), 0.2)
    rel[20:40, 30:50] = 0.9
    wrong = np.full((H, W), 0.2)
    wrong[0:15, 0:15] = 0.95
    levels = [m.to_dict() for m in measure_levels(np.stack([wrong * 0.5, rel, wrong]), gt)]
    hit, iou, lvl = score_view_query(levels, mask_boxes(gt))
    assert lvl == 2 and not hit and iou == 0.0  # the level with the highest smoothed max answers, right or wrong
    levels = [m.to_dict() for m in measure_levels(np.stack([wrong * 0.5, rel]), gt)]
    hit, iou, lvl = score_view_query(levels, mask_boxes(gt))
    assert lvl == 1 and hit and iou > 0.8
    sm = smooth_relevancy(rel, 29)
    assert (
        sm.shape == rel.shape
        and sm.max() <= 0.9 + 1e-9
        and segmentation_mask(sm)[30, 40]
        and not segmentation_mask(sm)[5, 5]
    )
    assert mask_boxes(gt).tolist() == [[30, 20, 49, 39]]


def test_lerf_kernel_scales_with_image_width_and_localization_is_a_pure_mean():
    assert [smooth_kernel_px(w) for w in (986, 160, 640, 80, 1, 1972)] == [29, 5, 19, 3, 1, 59]
    H, W = 120, 160
    rel = np.zeros((H, W))
    rel[5, 5] = 1.0  # one bright pixel: the half-and-half mix keeps half of it, a pure mean averages it away
    rel[60:80, 100:130] = 0.5
    gt = np.zeros((H, W), bool)
    gt[60:80, 100:130] = True
    lv = measure_levels(rel[None], gt)[0]
    assert lv.kernel_px == 5 and lv.seg_score > 0.5 + 1e-6  # the segmentation map peaks at the spike
    assert score_view_query([lv.to_dict()], mask_boxes(gt))[0]  # localization's pure mean peaks on the object
    assert not score_view_query([measure_levels(rel[None], gt, kernel_px=1)[0].to_dict()], mask_boxes(gt))[0]
    with pytest.raises(ValueError, match="odd"):
        measure_levels(rel[None], gt, kernel_px=4)


# ----------------------------------------------------------------------------- scoring
def _box(center, size, yaw=0.0):
    c, s = math.cos(yaw), math.sin(yaw)
    return Box3D(np.asarray(center, float), np.asarray(size, float), np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]))


def _obj(box, label="sofa"):
    return {
        "instance_id": 0,
        "label": label,
        "query": label,
        "score": 0.9,
        "level": "whole",
        "num_points": 10,
        "box": box.to_dict(),
    }


def make_raw() -> dict:
    sofa, table = _box([1.0, 0.0, 0.4], [1.8, 0.8, 0.8]), _box([-1.5, 1.0, 0.38], [1.2, 0.8, 0.76])
    gt_objs = [
        {"instance_id": 1, "label": "sofa", "color_name": "red", "support_id": 0, "obb": sofa.to_dict()},
        {"instance_id": 2, "label": "table", "color_name": "brown", "support_id": 0, "obb": table.to_dict()},
    ]
    goal = {"x": 1.0, "y": -1.0, "yaw": math.pi / 2, "frame_id": "map"}  # 0.6 m in front of the sofa, facing it
    q = lambda i, svc, kind, text, tid, resp, ms=50.0, err=None: {
        "id": i,
        "service": svc,
        "kind": kind,
        "text": text,
        "target_ids": tid,
        "expected_count": None,
        "standoff_m": None,
        "request": {},
        "response": resp,
        "latency_ms": ms if resp else None,
        "error": err,
    }
    queries = [
        q(
            "g0",
            "ground",
            "label",
            "the sofa",
            [1],
            {"success": True, "message": "", "answered_by": "relevancy", "latency_ms": 20.0, "objects": [_obj(sofa)]},
        ),
        q(
            "g1",
            "ground",
            "label",
            "the table",
            [2],
            {
                "success": True,
                "message": "",
                "answered_by": "relevancy",
                "latency_ms": 20.0,
                "objects": [_obj(_box([-1.5, 1.3, 0.38], [1.2, 0.8, 0.76]), "table")],
            },
        ),
        q(
            "g2",
            "ground",
            "relation",
            "the table near the sofa",
            [2],
            None,
            err="timeout: /lang3d/ground did not answer in 30 s",
        ),
        q(
            "n0",
            "navigate",
            "label",
            "take me to the sofa",
            [1],
            {
                "success": True,
                "message": "ok",
                "target": _obj(sofa),
                "goal": goal,
                "path": [[-1.0, -1.5], [1.0, -1.0]],
                "path_length_m": 2.06,
            },
        ),
        q(
            "n1",
            "navigate",
            "label",
            "take me to the table",
            [2],
            {
                "success": True,
                "message": "ok",
                "target": _obj(table, "table"),
                "goal": {"x": -1.5, "y": 1.0, "yaw": 0.0, "frame_id": "map"},
                "path": [[-1.0, -1.5], [-1.5, 1.0]],
                "path_length_m": 2.5,
            },
        ),
        dict(
            q(
                "a0",
                "ask",
                "count",
                "how many sofas are there?",
                [],
                {"success": True, "message": "", "answer": "There is 1 sofa.", "answered_by": "parser", "objects": []},
            ),
            expected_count=1,
        ),
    ]
    queries[3]["standoff_m"] = queries[4]["standoff_m"] = 0.6
    return {
        "format": RAW_FORMAT,
        "format_version": RAW_FORMAT_VERSION,
        "run": {"bag": "b", "ground_truth": "g", "rate": 1.0},
        "settings": {},
        "ground_truth": {"room": {"min_xyz": [-3, -2.5, 0], "max_xyz": [3, 2.5, 2.6]}, "objects": gt_objs},
        "start_xy_yaw": [-1.0, -1.5, 0.0],
        "standoff_m": 0.6,
        "queries": queries,
        "status_calls": [{"latency_ms": 3.0, "status": {}}, {"latency_ms": 5.0, "status": {}}],
        "mapping": {
            "final_status": {
                "frames_received": 10,
                "frames_fused": 8,
                "frames_dropped": 2,
                "frames_rejected": 0,
                "keyframes": 4,
                "num_points": 1000,
                "num_gaussians": 0,
                "training_state": "disabled",
            },
            "errors": [],
            "wait_s": 1.0,
        },
        "memory": {"mapper_vmhwm_mb": 512.0},
        "save_map": {"latency_ms": 40.0},
        "views": [
            {
                "view": 0,
                "queries": [
                    {
                        "label": "sofa",
                        "gt_boxes_xyxy": [[10, 10, 20, 20]],
                        "levels": [
                            {"score": 0.6, "argmax_uv": [15, 15], "intersection_px": 80, "union_px": 100},
                            {"score": 0.4, "argmax_uv": [50, 50], "intersection_px": 0, "union_px": 200},
                        ],
                        "error": None,
                    },
                    {
                        "label": "table",
                        "gt_boxes_xyxy": [[30, 30, 40, 40]],
                        "levels": [{"score": 0.7, "argmax_uv": [5, 5], "intersection_px": 10, "union_px": 100}],
                        "error": None,
                    },
                ],
            }
        ],
    }


def test_recompute_scores_every_part():
    raw = make_raw()
    r = recompute(raw)
    g = r["grounding"]
    assert g["n"] == 3 and g["acc@0.25"] == pytest.approx(2 / 3) and g["acc@0.5"] == pytest.approx(1 / 3)
    assert g["misses"] == ["g2"] and any(e["id"] == "g2" and "timeout" in e["error"] for e in r["errors"])
    assert r["relational"]["n"] == 1 and r["relational"]["acc@0.25"] == 0.0
    nav = {q["id"]: q for q in r["navigation"]["per_query"]}
    assert nav["n0"]["valid"] and nav["n0"]["standoff_error_m"] < 1e-6 and nav["n0"]["facing_error_deg"] < 1e-6
    assert not nav["n1"]["collision_free"] and not nav["n1"]["valid"]  # a goal inside the table
    assert r["navigation"]["validity"] == 0.5
    assert r["ask"]["counts"]["accuracy"] == 1.0
    assert (
        r["lerf"]["n"] == 2 and r["lerf"]["localization_accuracy"] == 0.5 and r["lerf"]["miou"] == pytest.approx(0.45)
    )
    assert r["latency_ms"]["ground"]["n"] == 2 and r["latency_ms"]["get_map_status"]["p50"] == pytest.approx(4.0)
    assert r["frames"]["frames_dropped"] == 2 and r["memory"]["mapper_peak_mb"] == 512.0
    assert g["acc@0.25_in_full_view"] is None and r["summary"]["ground_in_full_view_acc@0.25"] is None  # old records
    raw["ground_truth"]["in_full_view"] = [1]  # the table (g1, g2) was never wholly in view: the sofa query alone
    g = recompute(raw)["grounding"]
    assert g["n_in_full_view"] == 1 and g["acc@0.25_in_full_view"] == 1.0
    assert [q["target_in_full_view"] for q in g["per_query"]] == [True, False, False]


def test_observed_subsets_leave_out_targets_the_recording_never_showed():
    """With ``seen_fraction`` in the record, Ground, counts and navigation are also scored over the targets seen
    by at least ``min_seen_fraction``; a count question counts as observed only when it names every instance it
    counts and all were observed. Older records give None."""
    raw = make_raw()
    r = recompute(raw)
    assert r["grounding"]["acc@0.25_observed"] is None and r["summary"]["count_accuracy_observed"] is None
    raw["ground_truth"]["seen_fraction"] = {"1": 0.9, "2": 0.3}  # the table was never seen by half
    r = recompute(raw)
    g, c, nav = r["grounding"], r["ask"]["counts"], r["navigation"]
    assert g["n_observed"] == 1 and g["acc@0.25_observed"] == 1.0  # the sofa query alone
    assert [q["target_observed"] for q in g["per_query"]] == [True, False, False]
    # of the two table queries, one answered with an object, one with none ("not found": right about the unseen)
    assert g["n_unobserved"] == 2 and g["unobserved_not_found"] == 0.5
    assert r["summary"]["ground_unobserved_n"] == 2 and r["summary"]["ground_unobserved_not_found"] == 0.5
    assert nav["n_observed"] == 1 and nav["validity_observed"] == 1.0  # n1 (the table) is left out
    assert c["n_observed"] == 0 and math.isnan(c["accuracy_observed"])  # the count names no instances
    raw["queries"][-1]["target_ids"] = [1]
    c = recompute(raw)["ask"]["counts"]
    assert c["n_observed"] == 1 and c["accuracy_observed"] == 1.0
    from lang3d_ros.cli.eval import summary_line

    line = summary_line("clean", recompute(raw))
    assert "on observed targets: Ground 100.0% (n=1), counts 100.0% (n=1)" in line
    assert "targets never observed: Ground answered 'not found' 50.0% (n=2)" in line
    assert "observed" not in summary_line("old", recompute(make_raw()))
    raw["settings"]["min_seen_fraction"] = 0.95  # nothing was seen that well
    s = recompute(raw)["summary"]
    assert s["ground_observed_n"] == 0 and s["count_n_observed"] == 0 and s["navigation_n_observed"] == 0


def test_a_correct_unreachable_answer_is_valid_and_a_wrong_one_is_not():
    """A box penned in by furniture with a gap narrower than the robot (0.5 m for a 0.3 m radius): "unreachable"
    is the right answer; with a 0.9 m gap the same answer is a miss. The target must have been found."""
    from lang3d_ros.evaluation.metrics import DEFAULT_SETTINGS, gt_reachable, score_navigation

    def scene(gap_m: float) -> dict:
        raw = make_raw()
        target = _box([1.5, 1.2, 0.2], [0.3, 0.3, 0.4])
        x0, x1 = 0.5, 2.5  # a pen of 0.1 m thick cabinets around the box, the gap in its south side at x = 1.5
        walls = [
            _box([x0, 1.2, 0.4], [0.1, 2.0, 0.8]),
            _box([x1, 1.2, 0.4], [0.1, 2.0, 0.8]),
            _box([1.5, 2.2, 0.4], [2.1, 0.1, 0.8]),
        ]
        south = [(x0 - 0.05, 1.5 - gap_m / 2), (1.5 + gap_m / 2, x1 + 0.05)]
        walls += [_box([(a + b) / 2, 0.2, 0.4], [b - a, 0.1, 0.8]) for a, b in south]
        objs = [{"instance_id": 7, "label": "box", "color_name": "white", "support_id": 0, "obb": target.to_dict()}]
        objs += [
            {"instance_id": 20 + k, "label": "cabinet", "color_name": "white", "support_id": 0, "obb": w.to_dict()}
            for k, w in enumerate(walls)
        ]
        raw["ground_truth"]["objects"] = objs
        raw["start_xy_yaw"] = [-1.5, -1.5, 0.0]
        return raw

    entry = {
        "id": "n9",
        "text": "take me to the box",
        "target_ids": [7],
        "standoff_m": 0.6,
        "response": {
            "success": False,
            "message": "target found (box) but unreachable",
            "error_code": 5,
            "target": _obj(_box([1.5, 1.2, 0.2], [0.3, 0.3, 0.4]), "box"),
        },
    }
    s = dict(DEFAULT_SETTINGS)
    closed, open_ = scene(0.5), scene(0.9)
    assert gt_reachable(closed, [7], 0.6, s) is False and gt_reachable(open_, [7], 0.6, s) is True
    gt_closed = {7: Box3D.from_dict(closed["ground_truth"]["objects"][0]["obb"])}
    assert score_navigation(entry, closed, gt_closed, s)["valid"]
    assert not score_navigation(entry, open_, gt_closed, s)["valid"]
    # a gap 4-6 cm wider than the robot: the GT has a route, but only for a disc under r + 5 cm (one map cell)
    marginal = scene(0.65)
    assert gt_reachable(marginal, [7], 0.6, s) is True
    row = score_navigation(entry, marginal, gt_closed, s)
    assert row["gt_reachable"] and row["gt_marginal"] and row["valid"]
    assert not score_navigation(entry, marginal, gt_closed, dict(s, reachability_margin_m=0.0))["valid"]
    assert score_navigation(entry, open_, gt_closed, s)["gt_marginal"] is False
    # an unreachable answer about the wrong object, or another failure, is never valid
    wrong = copy.deepcopy(entry)
    wrong["response"]["target"] = _obj(_box([-2.0, -2.0, 0.2], [0.3, 0.3, 0.4]), "box")
    assert not score_navigation(wrong, closed, gt_closed, s)["valid"]
    other = copy.deepcopy(entry)
    other["response"].update(error_code=4, message="no box in the map")
    assert not score_navigation(other, closed, gt_closed, s)["valid"]


def test_recompute_survives_json_and_detects_tampering():
    raw = make_raw()
    results = recompute(raw)
    again = recompute(json.loads(json.dumps(raw)))
    assert differences(again, json.loads(json.dumps(results))) == []
    tampered = json.loads(json.dumps(results))
    tampered["grounding"]["acc@0.25"] = 0.99
    assert any("acc@0.25" in d for d in differences(again, tampered))
    # a path through the sofa is not connected on the GT scene
    bad = make_raw()
    bad["queries"][3]["response"]["path"] = [[1.0, 1.0], [1.0, -1.0]]
    bad["start_xy_yaw"] = [1.0, 1.0, 0.0]
    assert not recompute(bad)["navigation"]["per_query"][0]["path_connected"]
    with pytest.raises(ValueError):
        recompute({"format": "x"})


def test_summary_and_side_by_side_report(tmp_path):
    from lang3d_ros.cli.eval import mask_noise_variants
    from lang3d_ros.evaluation.report import write_comparison

    raw = make_raw()
    clean = recompute(raw)
    s = clean["summary"]
    assert (
        s["ground_acc@0.25"] == pytest.approx(2 / 3) and s["ground_label_acc@0.25"] == 1.0 and s["ground_label_n"] == 2
    )
    assert s["ground_relation_n"] == 1 and s["ground_relation_acc@0.25"] == 0.0 and s["ground_resting_n"] == 0
    assert s["count_accuracy"] == 1.0 and s["navigation_validity"] == 0.5 and s["lerf_localization"] == 0.5
    assert s["navigation_validity_target_found"] == 0.5 and s["navigation_n_target_found"] == 2
    assert clean["ask"]["counts"]["by_expected"] == {"1": {"n": 1, "accuracy": 1.0}}
    assert clean["ask"]["counts"]["by_phrasing"] == {"how many X are there?": {"n": 1, "accuracy": 1.0}}
    noisy_raw = make_raw()
    noisy_raw["run"]["params"] = {"semantics": {"mask_noise": {"enabled": True, "seed": 4}}}
    noisy_raw["queries"][0]["response"]["objects"] = []  # the sofa is missed
    noisy = recompute(noisy_raw)
    assert noisy["summary"]["ground_label_acc@0.25"] == 0.5
    for name in ("clean", "noisy"):
        (tmp_path / name).mkdir()
    md = write_comparison(tmp_path, {"clean": (raw, clean), "noisy": (noisy_raw, noisy)}).read_text()
    row = next(line for line in md.splitlines() if "label (floor objects" in line)
    assert "100.0% (n=2)" in row and "50.0% (n=2)" in row
    assert (
        "mask noise on (seed 4)" in md
        and "the sofa (label" in md
        and (tmp_path / "comparison.png").stat().st_size > 1000
    )
    assert "<table>" in (tmp_path / "report.html").read_text()
    assert mask_noise_variants("both", 4) == {
        "clean": {},
        "noisy": {"semantics": {"mask_noise": {"enabled": True, "seed": 4}}},
    }
    assert list(mask_noise_variants("off", 0)) == ["clean"] and list(mask_noise_variants("on", 0)) == ["noisy"]
    with pytest.raises(ValueError):
        mask_noise_variants("sometimes", 0)


def test_report_shows_the_recomputed_numbers(tmp_path):
    from lang3d_ros.evaluation.report import write_report

    raw = make_raw()
    results = recompute(raw)
    np.savez_compressed(tmp_path / "heatmaps.npz", v0_sofa=np.random.default_rng(0).random((12, 16)))
    md = write_report(
        tmp_path, raw, results, map_xyz=np.random.default_rng(0).random((500, 3)), notes=["a note"]
    ).read_text()
    assert "66.7% / 33.3% (n=3)" in md and "timeout" in md and "a note" in md
    for png in ("topdown.png", "latency.png", "heatmaps.png"):
        assert (tmp_path / png).stat().st_size > 1000 and png in md
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "66.7% / 33.3% (n=3)" in html and 'src="topdown.png"' in html


def test_the_mapper_intake_summary_reaches_results_and_report(tmp_path):
    """The mapper logs what became of every image when it stops; the eval keeps its last such line (raw
    mapping.intake_summary), results carry it, and the report's summary shows it. No line: None, no row."""
    from lang3d_ros.evaluation.report import markdown
    from lang3d_ros.evaluation.runner import intake_summary_line

    logs = tmp_path / "logs"
    logs.mkdir()
    assert intake_summary_line(logs) is None
    (logs / "proc-0.log").write_text(
        "[INFO] [1.0] [lang3d_mapper]: intake: 10 colour images: 10 fused, 0 dropped, 0 rejected, 0 pending\n"
        "[INFO] [2.0] [lang3d_mapper]: intake: 48 colour images: 40 fused, 8 dropped (no pose for the image "
        "stamp: 8), 0 rejected, 0 pending; 48 depth images, 48 poses\nother line\n"
    )
    line = intake_summary_line(logs)
    assert line.startswith("intake: 48 colour images: 40 fused, 8 dropped (no pose")
    raw = make_raw()
    assert recompute(raw)["intake_summary"] is None
    raw["mapping"]["intake_summary"] = line
    r = recompute(raw)
    assert r["intake_summary"] == line
    assert "8 dropped (no pose for the image stamp: 8)" in markdown(raw, r, {})


def test_navigation_checks_use_the_objects_floor_hull_not_its_box():
    """A round stool diagonal to the sofa's goal: the goal is 0.26 m from the stool's box corner but 0.34 m from the
    stool itself (robot radius 0.3). Scored against its mesh hull (``footprint_xy``) the goal is clear; a record
    without hulls falls back to boxes, as before."""
    from lang3d_ros.evaluation.metrics import distance_to_polygon

    raw = make_raw()
    d = 0.54 / math.sqrt(2)
    centre = np.array([1.0 + d, -1.0 - d])
    stool = _box([centre[0], centre[1], 0.3], [0.4, 0.4, 0.6])
    raw["ground_truth"]["objects"].append(
        {"instance_id": 3, "label": "stool", "color_name": "black", "support_id": 0, "obb": stool.to_dict()}
    )
    boxed = {q["id"]: q for q in recompute(raw)["navigation"]["per_query"]}
    assert not boxed["n0"]["collision_free"] and not boxed["n0"]["valid"]
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    raw["ground_truth"]["footprint_xy"] = {"3": (centre + 0.2 * np.stack([np.cos(ang), np.sin(ang)], 1)).tolist()}
    hulled = {q["id"]: q for q in recompute(raw)["navigation"]["per_query"]}
    assert hulled["n0"]["collision_free"] and hulled["n0"]["valid"]
    assert not hulled["n1"]["collision_free"]  # the goal inside the table (a box: no hull given) still collides

    # the polygon distance against shapely's, inside points 0
    from shapely.geometry import Point, Polygon

    rng = np.random.default_rng(0)
    poly = np.array(raw["ground_truth"]["footprint_xy"]["3"])
    pts = centre + rng.uniform(-0.6, 0.6, size=(300, 2))
    want = [Polygon(poly).distance(Point(p)) for p in pts]
    np.testing.assert_allclose(distance_to_polygon(pts, poly), want, atol=1e-9)


def test_ground_truth_record_holds_floor_hulls_of_the_meshes():
    from lang3d_ros.evaluation.runner import footprints_xy

    scene = generate_scene(3, n_objects=6)
    hulls = footprints_xy(scene)
    assert set(hulls) == {str(o.instance_id) for o in scene.objects}
    for o in scene.objects:
        h = np.asarray(hulls[str(o.instance_id)])
        corners = o.obb.corners()[:, :2]
        lo, hi = corners.min(0) - 2e-3, corners.max(0) + 2e-3
        assert len(h) >= 3 and np.all((h >= lo) & (h <= hi))  # inside the object's box footprint
        e = np.roll(h, -1, axis=0) - h
        assert np.all(e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0] > -1e-9)  # ccw
