"""Frame assembly from separate streams and keyframe selection, on streams with known timing and motion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.mapping.config import KeyframeConfig, SyncConfig
from lang3d_ros.mapping.keyframes import KeyframeSelector, view_overlap
from lang3d_ros.mapping.sync import FrameAssembler, interpolate_pose

K = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)


def _pose(t_s: float) -> np.ndarray:
    """Ground-truth trajectory: moves along x at 1 m/s, yaws at 0.5 rad/s."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", 0.5 * t_s).as_matrix()
    T[:3, 3] = [t_s, 0.2, 1.0]
    return T


def test_interpolate_pose_matches_trajectory_and_refuses_gaps():
    stamps = np.array([0, 100_000_000, 200_000_000, 900_000_000], dtype=np.int64)
    poses = np.stack([_pose(t * 1e-9) for t in stamps])
    T = interpolate_pose(stamps, poses, 150_000_000, max_gap_ns=150_000_000)
    np.testing.assert_allclose(T, _pose(0.15), atol=1e-9)
    assert interpolate_pose(stamps, poses, 500_000_000, max_gap_ns=150_000_000) is None  # gap too wide
    assert interpolate_pose(stamps, poses, 950_000_000, max_gap_ns=10**9) is None  # after the last sample
    np.testing.assert_allclose(interpolate_pose(stamps, poses, 200_000_000, 1), poses[2])


def test_assembler_pairs_by_approximate_time_and_interpolates_pose():
    asm = FrameAssembler(SyncConfig(slop_s=0.01, pose_max_gap_s=0.1, pose_wait_s=0.3))
    asm.add_intrinsics(K)
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.ones((48, 64), np.float32)
    for i in range(10):  # poses at 50 Hz
        asm.add_pose(i * 20_000_000, _pose(i * 0.02))
    frames = []
    for i, t in enumerate([33_000_000, 66_000_000, 99_000_000]):
        asm.add_color(t, rgb + i)
        asm.add_depth(t + 4_000_000, depth * (i + 1))  # 4 ms later: within slop
        frames += asm.pop_frames(now_ns=t)
    assert [f.stamp_ns for f in frames] == [33_000_000, 66_000_000, 99_000_000]
    for f in frames:
        np.testing.assert_allclose(f.T_world_cam, _pose(f.stamp_ns * 1e-9), atol=1e-9)
    assert frames[2].rgb[0, 0, 0] == 2 and frames[2].depth_m[0, 0] == 3.0
    # a colour image whose depth is 50 ms away is dropped, and so is its depth
    asm.add_color(150_000_000, rgb)
    asm.add_depth(200_000_000, depth)
    asm.add_color(250_000_000, rgb)
    assert asm.stats.dropped.get("colour without depth", 0) >= 1


def test_assembler_waits_for_pose_then_drops_with_reason():
    asm = FrameAssembler(SyncConfig(slop_s=0.01, pose_max_gap_s=0.1, pose_wait_s=0.2))
    asm.add_intrinsics(K)
    asm.add_pose(0, _pose(0.0))
    asm.add_color(50_000_000, np.zeros((48, 64, 3), np.uint8))
    asm.add_depth(50_000_000, np.ones((48, 64), np.float32))
    assert asm.pop_frames(now_ns=60_000_000) == []  # waiting for a later pose
    asm.add_pose(100_000_000, _pose(0.1))
    (frame,) = asm.pop_frames(now_ns=100_000_000)
    np.testing.assert_allclose(frame.T_world_cam, _pose(0.05), atol=1e-9)
    asm.add_color(500_000_000, np.zeros((48, 64, 3), np.uint8))
    asm.add_depth(500_000_000, np.ones((48, 64), np.float32))
    assert asm.pop_frames(now_ns=900_000_000) == []
    assert asm.stats.dropped == {"no pose for the image stamp": 1}


def test_assembler_rejects_bad_poses_without_storing_them():
    asm = FrameAssembler(SyncConfig())
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="not rigid"):
        asm.add_pose(0, bad)
    nan = np.eye(4)
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        asm.add_pose(0, nan)
    assert asm._pose_t == []


def test_assembler_applies_the_camera_mount():
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_matrix()  # REP 103 optical
    T_base_cam[:3, 3] = [0.1, 0.0, 1.2]
    asm = FrameAssembler(SyncConfig(), T_pose_cam=T_base_cam)
    asm.add_intrinsics(K)
    asm.add_pose(0, _pose(0.0))
    asm.add_color(0, np.zeros((48, 64, 3), np.uint8))
    asm.add_depth(0, np.ones((48, 64), np.float32))
    (frame,) = asm.pop_frames(now_ns=0)
    np.testing.assert_allclose(frame.T_world_cam, _pose(0.0) @ T_base_cam, atol=1e-12)


def _plane_frame(T_world_cam, stamp_ns=0, depth=2.0):
    return Frame(np.zeros((48, 64, 3), np.uint8), np.full((48, 64), depth, np.float32), K, T_world_cam, stamp_ns)


def test_view_overlap_and_keyframe_reasons():
    T0 = np.eye(4)
    f0 = _plane_frame(T0)
    assert view_overlap(f0, f0) == pytest.approx(1.0)
    T_side = np.eye(4)
    T_side[0, 3] = 1.0  # 1 m sideways in front of a plane 2 m away: half the view is new
    ov = view_overlap(_plane_frame(T_side), f0, stride_px=4)
    assert 0.2 < ov < 0.8
    sel = KeyframeSelector(
        KeyframeConfig(min_translation_m=0.3, min_rotation_deg=15, max_overlap=0.6, max_interval_s=5)
    )
    assert sel.reason(f0) == "first frame"
    sel.accept(f0)
    small = np.eye(4)
    small[0, 3] = 0.05
    assert sel.reason(_plane_frame(small, 10**8)) == ""
    far = np.eye(4)
    far[0, 3] = 0.4
    assert sel.reason(_plane_frame(far, 10**8)) == "moved"
    turned = np.eye(4)
    turned[:3, :3] = Rotation.from_euler("y", 20, degrees=True).as_matrix()
    assert sel.reason(_plane_frame(turned, 10**8)) == "turned"
    assert sel.reason(_plane_frame(small, 6 * 10**9)) == "time"
    near_plane = _plane_frame(small, 10**8, depth=0.2)  # the view changed completely (depth inconsistent)
    assert sel.reason(near_plane) == "new view"
    sel.reset()  # after a time jump back: the next frame starts keyframe selection again
    assert sel.reason(_plane_frame(small, 10**8)) == "first frame"
