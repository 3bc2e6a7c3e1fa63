"""The ROS-free mapping loop on a synthetic scene with ground-truth-label semantics (real MiniLM text encoder)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_config

from lang3d_ros.config import load_config
from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.boxes import iou_3d
from lang3d_ros.geometry.camera import Intrinsics


@pytest.fixture(scope="module")
def scene_frames():
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames

    scene = generate_scene(seed=3, n_objects=8)
    K = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)
    poses = make_trajectory(scene, "orbit", n_frames=24, seed=0)
    return scene, list(render_frames(scene, poses, K, noise=None, seed=0))


def _config():
    return synthetic_config(
        mapping={"frame_queue_size": 2, "keyframe_queue_size": 4, "keyframes": {"min_translation_m": 0.3}}
    )


def test_pipeline_maps_a_scene_and_grounds_its_objects(scene_frames):
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene, frames = scene_frames
    stack = build_stack(_config(), **ground_truth_tables(scene), start=True)
    try:
        for f in frames:
            while not stack.pipeline.submit(f):  # replay as fast as the workers take frames
                stack.pipeline.wait_idle(5)
        assert stack.pipeline.wait_idle(120)
        st = stack.pipeline.status()
        assert st["frames_fused"] + st["frames_dropped"] >= len(frames) - st["frames_rejected"]
        assert st["frames_rejected"] == 0 and st["keyframes"] >= 3 and st["num_points"] > 1000
        # every large object that the cameras saw well is grounded by its label with a box that overlaps the truth
        hits, tried = 0, 0
        big = [o for o in scene.objects if np.prod(o.aabb.size) > 0.05]
        for obj in big:
            tried += 1
            try:
                found = stack.language_map.ground(obj.label, max_results=3)
            except ValueError:
                continue
            same = [o for o in scene.objects if o.label == obj.label]
            best = max((iou_3d(f.aabb or f.box.aabb(), g.aabb) for f in found for g in same), default=0.0)
            hits += best >= 0.25
        assert tried >= 2 and hits / tried >= 0.75, (hits, tried)
    finally:
        stack.pipeline.stop()


def test_bad_frames_are_rejected_with_reasons_and_change_nothing(scene_frames):
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene, frames = scene_frames
    stack = build_stack(_config(), **ground_truth_tables(scene), start=False)
    good = frames[0]
    assert stack.pipeline.process_now(good) == ""
    n0, v0 = stack.language_map.num_points, stack.language_map.version
    bad_pose = good.T_world_cam.copy()
    bad_pose[0, 0] = 3.0
    bad = [
        Frame(good.rgb, good.depth_m, good.intrinsics, bad_pose, good.stamp_ns + 1, 1),
        Frame(good.rgb[:10], good.depth_m, good.intrinsics, good.T_world_cam, good.stamp_ns + 2, 2),
        Frame(good.rgb, np.full_like(good.depth_m, np.nan), good.intrinsics, good.T_world_cam, good.stamp_ns + 3, 3),
        Frame(good.rgb.astype(np.float32), good.depth_m, good.intrinsics, good.T_world_cam, good.stamp_ns + 4, 4),
    ]
    reasons = [stack.pipeline.process_now(f) for f in bad]
    assert all(reasons), reasons
    assert "rigid" in reasons[0] and "size" in reasons[1] or "differ" in reasons[1]
    assert stack.language_map.num_points == n0 and stack.language_map.version == v0
    assert stack.pipeline.status()["frames_rejected"] == 4
    with pytest.raises(ValueError, match="empty"):
        stack.language_map.ground("   ")
    with pytest.raises(ValueError, match="at most"):
        stack.language_map.ground("x" * 10_000)
    with pytest.raises(ValueError, match="UTF-8"):
        from lang3d_ros.llm.frontend import check_query

        check_query(b"\xff\xfe mug")
    with pytest.raises(ValueError, match="level"):
        stack.language_map.ground("mug", level="gigantic")


def test_config_yaml_overrides_and_rejects_unknown_keys(tmp_path):
    from lang3d_ros.config_base import ConfigError

    p = tmp_path / "c.yaml"
    p.write_text(
        "/**:\n  ros__parameters:\n    fusion:\n      voxel_size_m: 0.05\n    mapping:\n      keyframes:\n        "
        "min_rotation_deg: 5\n"
    )
    cfg = load_config(p)
    assert cfg.fusion.voxel_size_m == 0.05 and cfg.mapping.keyframes.min_rotation_deg == 5.0
    p.write_text("/**:\n  ros__parameters:\n    fusion:\n      voxel_size: 0.05\n")
    with pytest.raises(ConfigError, match="fusion: unknown key"):
        load_config(p)
    p.write_text("/**:\n  ros__parameters:\n    fusion:\n      voxel_size_m: fast\n")
    with pytest.raises(ConfigError, match="fusion.voxel_size_m"):
        load_config(p)


def test_status_leaves_the_pipeline_lock_free_while_it_waits_for_the_map():
    """status() reads the map's size, which waits for the map lock (held by a keyframe for its whole fusion); it
    must not hold the pipeline lock meanwhile: submit() needs that lock, and a sensor callback waited on it for
    up to a keyframe's fusion (0.4-0.6 s measured in a replay)."""
    import threading

    from lang3d_ros.config import Lang3DConfig
    from lang3d_ros.mapping.pipeline import MappingPipeline

    waiting, release = threading.Event(), threading.Event()

    class BusyMap:  # memory_mb blocks the way LanguageMap.memory_mb does while a keyframe holds the map lock
        source, num_points = "live", 0

        def memory_mb(self):
            waiting.set()
            release.wait(30.0)
            return 0.0

    pipeline = MappingPipeline(Lang3DConfig(), BusyMap(), semantics_backend=None)
    reader = threading.Thread(target=pipeline.status)
    reader.start()
    try:
        assert waiting.wait(30.0)
        free = pipeline._lock.acquire(blocking=False)
        if free:
            pipeline._lock.release()
        assert free, "status() holds the pipeline lock while it waits for the map"
    finally:
        release.set()
        reader.join(30.0)


def test_keyframes_in_order_give_the_map_a_sequential_run_gives():
    """With mapping.keyframes_in_order the two workers' interleaving no longer matters: frames submitted to the
    running pipeline (with a semantics backend slow enough that, out of order, later frames are fused before the
    keyframe's masks) give the same points and the same segment table as processing them one by one."""
    import time

    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene = generate_scene(seed=4, n_objects=6)
    K = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)
    frames = list(render_frames(scene, make_trajectory(scene, "orbit", n_frames=10, seed=1), K, noise=None, seed=1))
    cfg = synthetic_config(
        mapping={
            "frame_queue_size": 32,
            "keyframe_queue_size": 8,
            "keyframes_in_order": True,
            "keyframes": {"min_translation_m": 0.3},
        }
    )
    ref = build_stack(cfg, **ground_truth_tables(scene), start=False)
    for f in frames:
        assert ref.pipeline.process_now(f) == ""
    live = build_stack(cfg, **ground_truth_tables(scene), start=False)
    slow = live.pipeline.semantics
    process = slow.process

    def delayed(frame):  # a keyframe's semantics take longer than the frames behind it
        time.sleep(0.3)
        return process(frame)

    slow.process = delayed
    live.pipeline.start()
    try:
        for f in frames:
            assert live.pipeline.submit(f)
        assert live.pipeline.wait_idle(120)
    finally:
        live.pipeline.stop()
    a, b = ref.language_map, live.language_map
    assert a.num_points == b.num_points and a.instances.keyframes == b.instances.keyframes >= 3
    np.testing.assert_array_equal(np.asarray(a.points.points_xyz), np.asarray(b.points.points_xyz))
    ta, tb = a.instances.table, b.instances.table
    np.testing.assert_array_equal(ta.ids, tb.ids)
    np.testing.assert_array_equal(ta.n_observations, tb.n_observations)
    np.testing.assert_array_equal(ta.n_points, tb.n_points)
