"""The query fast paths against their references, on a map fused from a synthetic scene through the real stack
(ground-truth-label semantics through MiniLM): LanguageMap.ground (mapping/segment_index.py: stacked features,
canonical phrases folded in, partition top-k, objects from the snapshot) against the per-level reference
(grounding/ground.py + SceneObjects built from the live table); objects() rebuilt incrementally against a build
from scratch; a query while the mapping worker holds the map lock."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from conftest import synthetic_config

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.config import GroundingConfig
from lang3d_ros.grounding.ground import choose_level, segment_relevancy, select_segments
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.mapping.segment_index import select_top

K = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)


@pytest.fixture(scope="module")
def built():
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene = generate_scene(seed=31, n_objects=10)
    cfg = synthetic_config(mapping={"keyframes": {"min_translation_m": 0.25}})
    stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
    frames = list(render_frames(scene, make_trajectory(scene, "orbit", n_frames=24, seed=3), K, seed=3))
    for f in frames[:16]:
        assert stack.pipeline.process_now(f) == ""
    return scene, stack, frames[16:]


def _reference_answerable(lmap) -> np.ndarray:
    """Enough points, and min_observations matches or (answer_unrevisited) a match in every keyframe that had it
    in view by a mask mostly on new points, touching no confirmed segment of its level with the same feature."""
    t, icfg, in_view = lmap.instances.table, lmap.config.instances, lmap.instances.in_view
    chances = np.array([max(in_view.get(int(i), 0), int(n)) for i, n in zip(t.ids, t.n_observations)], np.int64)
    confirmed = t.n_observations >= icfg.min_observations
    if icfg.answer_unrevisited:
        fresh = t.new_fraction >= icfg.unrevisited_min_new_fraction
        early = (t.n_observations >= 1) & (chances == t.n_observations) & fresh & ~confirmed
        known = [k for k in range(len(t)) if confirmed[k] and t.n_points[k] >= icfg.min_points]
        m = icfg.box_margin_m
        for r in np.flatnonzero(early):  # a first-seen side of a confirmed object (touching, same feature) waits
            f = t.unit_features(np.array([r]))[0]
            if not any(
                t.level[k] == t.level[r]
                and np.all(t.aabb_min[r] - m <= t.aabb_max[k] + m)
                and np.all(t.aabb_min[k] - m <= t.aabb_max[r] + m)
                and float(f @ t.unit_features(np.array([k]))[0]) >= icfg.match_min_cosine
                for k in known
            ):
                confirmed[r] = True
    return (t.n_points >= icfg.min_points) & confirmed


def _reference_ground(lmap, text: str, max_results: int = 0, min_score: float = 0.0, level: str = ""):
    """The per-level path LanguageMap.ground had before the index: (ids, scores, level index, rows)."""
    t = lmap.instances.table
    q = lmap.encode_query(text)
    rels, rows_by_level = [], []
    answerable = _reference_answerable(lmap)
    for lvl in range(len(LEVELS)):
        rows = np.flatnonzero((t.level == lvl) & answerable)
        f = t.unit_features(rows)
        rels.append(segment_relevancy(f, q, lmap.canonical, canonical_cos=f @ lmap.canonical.T))
        rows_by_level.append(rows)
    lvl = choose_level([float(r.max()) if len(r) else -1.0 for r in rels], level)
    keep = select_segments(rels[lvl], t.n_points[rows_by_level[lvl]], lmap.config.grounding, max_results, min_score)
    rows = rows_by_level[lvl][keep]
    return t.ids[rows].tolist(), rels[lvl][keep].tolist(), lvl, rows


def _queries(scene):
    labels = sorted(set(scene.labels))
    colours = [f"{c} {lab}" for c, lab in zip(["red", "black", "white", "brown", "blue"], labels)]
    return labels + colours + ["floor", "wall", "something to sit on", "a thing", "kitchen appliance"]


def test_ground_matches_the_per_level_reference_bit_for_bit(built):
    scene, stack, _ = built
    lmap = stack.language_map
    assert lmap.num_segments > 10
    n_answers = 0
    for text in _queries(scene):
        for kw in (
            {},
            {"max_results": 1},
            {"max_results": 50, "min_score": 0.0},
            {"level": "part"},
            {"level": "subpart"},
        ):
            ids, scores, lvl, rows = _reference_ground(lmap, text, **kw)
            got = lmap.ground(text, **kw)
            assert [o.instance_id for o in got] == ids, (text, kw)
            assert [o.score for o in got] == scores, (text, kw)  # identical floats, not close ones
            n_answers += len(got)
            for o, row in zip(got, rows):
                ref = lmap._scene_object(int(row), score=o.score, query=text)
                assert o.level == LEVELS[lvl] == ref.level and o.label == ref.label == text
                np.testing.assert_array_equal(o.box.center, ref.box.center)
                np.testing.assert_array_equal(o.box.size, ref.box.size)
                np.testing.assert_array_equal(o.box.R_world_box, ref.box.R_world_box)
                np.testing.assert_array_equal(o.aabb.center, ref.aabb.center)
                np.testing.assert_array_equal(o.aabb.size, ref.aabb.size)
                np.testing.assert_array_equal(o.feature, ref.feature)
                np.testing.assert_array_equal(o.color_rgb, ref.color_rgb)
                assert (o.n_points, o.support_id, o.n_observations, o.first_seen_ns, o.last_seen_ns) == (
                    ref.n_points,
                    ref.support_id,
                    ref.n_observations,
                    ref.first_seen_ns,
                    ref.last_seen_ns,
                )
    assert n_answers > 20


def test_partition_top_k_selects_what_the_full_sort_selects():
    rng = np.random.default_rng(0)
    cfg = GroundingConfig()
    for trial in range(300):
        s = int(rng.integers(1, 400))
        # coarse values: many exact ties in relevancy, and in size among them
        rel = (rng.integers(0, 12, s) / 12.0 * 0.5 + 0.5).astype(np.float32)
        n_points = rng.integers(1, 6, s).astype(np.int32)
        k = int(rng.integers(0, 12))
        min_score = float(rng.choice([0.0, 0.6, 0.9]))
        conf = dataclasses.replace(cfg, relative_threshold=float(rng.choice([0.0, 0.5, 0.8])))
        want = select_segments(rel, n_points, conf, k, min_score)
        np.testing.assert_array_equal(select_top(rel, n_points, conf, k, min_score), want, err_msg=str(trial))


def _scratch_objects(lmap):
    lmap._objects_rows = None
    lmap._objects_cache = None
    return lmap.objects()


def _same_objects(a, b):
    assert [o.instance_id for o in a] == [o.instance_id for o in b]
    for x, y in zip(a, b):
        assert (x.label, x.n_points, x.support_id, x.n_observations, x.last_seen_ns) == (
            y.label,
            y.n_points,
            y.support_id,
            y.n_observations,
            y.last_seen_ns,
        )
        np.testing.assert_array_equal(x.box.center, y.box.center)
        np.testing.assert_array_equal(x.box.size, y.box.size)
        np.testing.assert_array_equal(x.color_rgb, y.color_rgb)
        assert x.score == pytest.approx(y.score, abs=1e-12)
        assert x.label_scores.keys() == y.label_scores.keys()
        for k in x.label_scores:
            assert x.label_scores[k] == pytest.approx(y.label_scores[k], abs=1e-12)


def test_objects_rebuilt_incrementally_equal_a_build_from_scratch(built):
    scene, stack, more = built
    lmap = stack.language_map
    before = lmap.objects()
    assert len(before) >= 3
    for f in more:  # keyframes change some rows, add and merge others
        assert stack.pipeline.process_now(f) == ""
        incremental = lmap.objects()
        _same_objects(incremental, _scratch_objects(lmap))
    # one row changed by hand: that object is rebuilt, every other one is the previous build's own object
    t = lmap.instances.table
    prev = lmap.objects()
    row = int(t.row_of(np.array([prev[0].instance_id]))[0])
    t.color_rgb[row] = [0.1, 0.2, 0.3]
    lmap.instances.version += 1
    now = lmap.objects()
    assert now[0] is not prev[0] and np.allclose(now[0].color_rgb, [0.1, 0.2, 0.3])
    assert all(a is b for a, b in zip(now[1:], prev[1:]))
    _same_objects(now, _scratch_objects(lmap))
    # another vocabulary relabels every row
    vocab = tuple(sorted(set(scene.labels))[:3])
    assert {o.label for o in lmap.objects(vocabulary=vocab)} <= set(vocab)


def test_queries_answer_while_the_mapping_worker_holds_the_lock(built):
    from lang3d_ros.mapping.queries import QueryEngine

    scene, stack, _ = built
    lmap = stack.language_map
    engine = QueryEngine(stack.config, lmap)
    text = sorted(set(scene.labels))[0]
    want = [o.instance_id for o in lmap.ground(text)]
    objs = lmap.objects()
    grid = engine.occupancy_grid()
    answered: list = []

    def queries():
        answered.append([o.instance_id for o in lmap.ground(text)])
        answered.append(lmap.objects())
        answered.append(engine.occupancy_grid())

    with lmap.lock:  # as during a keyframe: the table changes, the snapshots of the last keyframe answer
        lmap.instances.version += 1
        lmap.version += 1
        worker = threading.Thread(target=queries)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive() and answered[0] == want
        assert answered[1] is objs and answered[2] is grid
    now = lmap.objects()  # the lock is free: rebuilt for the new table state (same content here)
    assert now is not objs and [o.instance_id for o in now] == [o.instance_id for o in objs]
    assert engine.occupancy_grid() is not grid


def test_no_answerable_segment_gives_empty_answers_not_errors(built):
    """Early in mapping (every segment seen fewer than min_observations times) objects() and ground are empty."""
    _, stack, _ = built
    lmap = stack.language_map
    before = [o.instance_id for o in lmap.objects()]
    icfg = lmap.config.instances
    old = icfg.min_observations, icfg.answer_unrevisited
    try:
        icfg.min_observations, icfg.answer_unrevisited = 10**6, False
        lmap.instances.version += 1
        assert lmap.objects() == [] and lmap.ground("chair") == []
    finally:
        icfg.min_observations, icfg.answer_unrevisited = old
        lmap.instances.version += 1
    assert [o.instance_id for o in lmap.objects()] == before


def test_relevancy_by_level_gathers_what_the_reference_gathers(built):
    scene, stack, _ = built
    lmap = stack.language_map
    for text in _queries(scene)[:6]:
        rel, xyz, colors = lmap.relevancy_by_level(text)
        assert rel.shape == (len(LEVELS), lmap.num_points) == (len(LEVELS), len(xyz)) and colors.shape == xyz.shape
        t = lmap.instances.table
        q = lmap.encode_query(text)
        answerable = _reference_answerable(lmap)
        for lvl in range(len(LEVELS)):  # reference: per-segment relevancy, then a masked gather per point
            rows = np.flatnonzero((t.level == lvl) & answerable)
            f = t.unit_features(rows)
            seg_rel = segment_relevancy(f, q, lmap.canonical, canonical_cos=f @ lmap.canonical.T)
            lut = np.zeros(t.next_id + 1, np.float32)
            lut[t.ids[rows]] = seg_rel
            lab = lmap.points.labels(lvl).numpy()
            want = np.zeros(len(lab), np.float32)
            ok = (lab >= 0) & (lab < t.next_id)
            want[ok] = lut[lab[ok]]
            np.testing.assert_array_equal(rel[lvl], want)
        assert rel.max() > 0.5 and (rel == 0).any()  # some points score, unlabelled or unanswerable ones do not


def test_an_unrevisited_segment_answers_only_when_its_points_were_new():
    """Four segments matched once with enough points: in view once (seen only lately) from a mask on new points,
    in view twice (a later keyframe looked and did not match it), a confirmed one matched twice, and one in view
    once from a mask that lay on points of known segments (split off or confused over a known object). With
    instances.answer_unrevisited the first answers too, never the contradicted one nor the one on known points."""
    from lang3d_ros.instances.config import InstanceConfig
    from lang3d_ros.instances.mapper import InstanceMapper

    m = InstanceMapper(InstanceConfig(answer_unrevisited=False), feature_dim=4)
    new_frac = np.array([1.0, 1.0, 1.0, 0.3], np.float32)
    ids = m.table.append(0, np.eye(4, dtype=np.float32), np.ones(4, np.float32), 0, 1, new_fraction=new_frac)
    m.table.n_points[:] = 50
    m.table.n_observations[:] = [1, 1, 2, 1]
    m.in_view = {int(ids[0]): 1, int(ids[1]): 2, int(ids[2]): 3, int(ids[3]): 1}
    assert m.answerable().tolist() == [False, False, True, False]
    m.config.answer_unrevisited = True
    assert m.in_view_counts().tolist() == [1, 2, 3, 1] and m.answerable().tolist() == [True, False, True, False]
    m.config.unrevisited_min_new_fraction = 0.0  # any unrevisited segment
    assert m.answerable().tolist() == [True, False, True, True]
    m.config.unrevisited_min_new_fraction = 0.8
    m.table.n_points[0] = m.config.min_points - 1  # points still count
    assert m.answerable().tolist() == [False, False, True, False]


def test_a_first_seen_side_of_a_known_object_waits_for_the_merge():
    """Unrevisited segments on new points: one touching a confirmed segment of the same level with the same feature
    (a new side of that object) does not answer; one touching it with another feature (a mug on the table), or the
    same feature far away (a second table), does."""
    from lang3d_ros.instances.config import InstanceConfig
    from lang3d_ros.instances.mapper import InstanceMapper

    m = InstanceMapper(InstanceConfig(answer_unrevisited=True), feature_dim=4)
    f = np.eye(4, dtype=np.float32)[[0, 0, 1, 0]]
    ids = m.table.append(0, f, np.ones(4, np.float32), 0, 1, new_fraction=np.ones(4, np.float32))
    m.table.n_points[:] = 50
    m.table.n_observations[:] = [3, 1, 1, 1]
    lo = np.array([[0, 0, 0], [1.02, 0, 0], [0.2, 0.2, 0.75], [4.0, 0, 0]], np.float32)
    m.table.aabb_min[:], m.table.aabb_max[:] = lo, lo + np.array([1.0, 0.8, 0.75], np.float32)
    m.table.aabb_max[2] = lo[2] + 0.1
    m.in_view = {int(i): int(n) for i, n in zip(ids, m.table.n_observations)}
    assert m.answerable().tolist() == [True, False, True, True]
    m.table.aabb_min[1, 0] += 0.2  # 0.22 m away: beyond the margins, another object
    m.table.aabb_max[1, 0] += 0.2
    assert m.answerable().tolist() == [True, True, True, True]
