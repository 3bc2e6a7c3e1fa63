"""The mapping loop fed through the FrameAssembler with injected faults (future pose stamp, 10 km and 1000 km pose
jumps, a 60 s clock jump back): mapping continues, the map stays where the scene is, and every frame is counted
exactly once (received = fused + dropped + rejected)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import synthetic_config

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.mapping.pipeline import combine_intake_status
from lang3d_ros.mapping.sync import FrameAssembler

DAY_NS = 86400 * 10**9
K = Intrinsics(65.6, 65.6, 39.5, 29.5, 80, 60)


@pytest.fixture(scope="module")
def scene_frames():
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames

    scene = generate_scene(seed=21, n_objects=5)
    frames = list(render_frames(scene, make_trajectory(scene, "orbit", n_frames=40, seed=2), K, noise=None, seed=2))
    return scene, frames


def _stack(scene, start: bool = True, **mapping):
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    return build_stack(
        synthetic_config(mapping={"train_gaussians": False, **mapping}), **ground_truth_tables(scene), start=start
    )


def _adds_up(pipeline_status: dict) -> None:
    st = pipeline_status
    assert st["frames_received"] == st["frames_fused"] + st["frames_dropped"] + st["frames_rejected"], st
    assert st["frames_pending"] == 0
    assert st["frames_dropped"] == sum(st["drop_reasons"].values())
    assert st["frames_rejected"] == sum(st["reject_reasons"].values())


def test_faults_injected_into_the_streams_do_not_stop_or_corrupt_mapping(scene_frames):
    scene, frames = scene_frames
    stack = _stack(scene)
    asm = FrameAssembler(stack.config.mapping.sync)
    asm.add_intrinsics(K)

    truth = {f.stamp_ns: f.instance_map for f in frames}  # the ground-truth semantics reads per-pixel ids

    def drain(now_ns):
        for f in asm.pop_frames(now_ns):
            f.instance_map = truth.get(f.stamp_ns, truth.get(f.stamp_ns + 60 * 10**9))
            stack.pipeline.process_now(f)

    def publish(f, stamp_ns, jump_m=0.0):
        T = f.T_world_cam.copy()
        T[0, 3] += jump_m
        asm.add_pose(stamp_ns, T)  # a node forwards every pose and drains with its stamp
        drain(stamp_ns)
        asm.add_color(stamp_ns, f.rgb)
        drain(stamp_ns)
        asm.add_depth(stamp_ns, f.depth_m)
        drain(stamp_ns)

    for i, f in enumerate(frames):  # first pass: a day-ahead pose after frame 9, a 10 km jump on frames 10-14
        publish(f, f.stamp_ns, jump_m=10e3 if 10 <= i < 15 else 0.0)
        if i == 9:
            asm.add_pose(f.stamp_ns + DAY_NS, f.T_world_cam)
            drain(f.stamp_ns + DAY_NS)
    for i, f in enumerate(frames):  # second pass 60 s earlier (simulator reset), a 1000 km jump on frames 20-24
        publish(f, f.stamp_ns - 60 * 10**9, jump_m=1000e3 if 20 <= i < 25 else 0.0)
    drain(frames[-1].stamp_ns - 60 * 10**9 + 10**9)

    a = asm.status()
    assert a["colour_received"] == a["frames_assembled"] + a["frames_dropped"] + a["frames_rejected"]
    assert a["frames_pending"] == 0 and a["clock_resets"] == 1
    assert a["poses_rejected"] == {"future stamp": 1, "pose jump": 10}
    st = stack.pipeline.status()
    _adds_up(st)
    assert st["frames_received"] == a["frames_assembled"] >= 70
    assert st["frames_fused"] >= 70 and st["selector_resets"] == 1
    node = combine_intake_status(st, a, {"unsupported image encoding": 2})  # what a mapper node publishes
    assert (
        node["frames_received"]
        == 2 * len(frames) + 2
        == (node["frames_fused"] + node["frames_dropped"] + node["frames_rejected"] + node["frames_pending"])
    )
    assert node["frames_pending"] == 0 and node["reject_reasons"]["unsupported image encoding"] == 2
    assert node["poses_rejected"] == a["poses_rejected"] and node["clock_resets"] == 1
    xyz = stack.language_map.points.points_xyz.cpu().numpy()
    assert len(xyz) > 1000 and np.abs(xyz).max() < 50.0  # nothing fused 10 km or 1000 km away


def test_frames_not_fused_by_choice_are_counted(scene_frames):
    scene, frames = scene_frames
    stack = _stack(scene, fuse_every_frame=False)
    for f in frames:
        stack.pipeline.process_now(f)
    st = stack.pipeline.status()
    _adds_up(st)
    assert st["drop_reasons"] == {"not a keyframe (mapping.fuse_every_frame is false)": st["frames_dropped"]}
    assert 0 < st["frames_dropped"] < len(frames) and st["frames_fused"] == st["keyframes"]


def test_threaded_intake_counts_every_frame_under_pressure(scene_frames):
    scene, frames = scene_frames
    stack = _stack(scene, frame_queue_size=1, keyframe_queue_size=1)
    stack.pipeline.start()
    try:
        bad = dataclasses.replace(frames[3], depth_m=frames[3].depth_m[:10])
        for batch in (frames, [bad], frames[::-1]):
            for f in batch:
                stack.pipeline.submit(f)  # as fast as possible: the queue overflows
            assert stack.pipeline.wait_idle(120)
    finally:
        stack.pipeline.stop()
    st = stack.pipeline.status()
    _adds_up(st)
    assert st["frames_received"] == 2 * len(frames) + 1 and st["frames_rejected"] >= 1
    assert set(st["drop_reasons"]) <= {"fusion queue full"}


def test_an_intrinsics_change_between_frames_is_counted_and_the_frames_used(scene_frames):
    scene, frames = scene_frames
    stack = _stack(scene)
    K2 = Intrinsics(70.0, 70.0, 39.5, 29.5, 80, 60)
    for i, f in enumerate(frames[:12]):
        g = dataclasses.replace(f, intrinsics=K2) if i >= 6 else f
        assert stack.pipeline.process_now(g) == ""
    st = stack.pipeline.status()
    assert st["intrinsics_changes"] == 1 and st["frames_fused"] == 12


def test_frames_discarded_at_stop_are_counted(scene_frames):
    scene, frames = scene_frames
    stack = _stack(scene, start=False, frame_queue_size=1)
    assert stack.pipeline.process_now(frames[0]) == ""
    assert stack.pipeline.submit(frames[1]) and not stack.pipeline.submit(frames[2])  # no worker takes them
    stack.pipeline.stop()
    st = stack.pipeline.status()
    _adds_up(st)
    assert st["drop_reasons"] == {"fusion queue full": 1, "pipeline stopped": 1}
