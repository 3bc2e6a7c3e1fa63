"""Sensor intake under injected faults (issue 15): future and stale stamps, clock jumps back, pose jumps of 10 km
and 1000 km, a relocalised pose source, intrinsics changes. Mapping continues, every colour image is counted once,
reasons are named, and the log says each reason once per period."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.mapping.config import SyncConfig
from lang3d_ros.mapping.ratelog import ReasonLog
from lang3d_ros.mapping.sync import HELD_LATE_POSE, FrameAssembler

K = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
RGB = np.zeros((48, 64, 3), np.uint8)
DEPTH = np.ones((48, 64), np.float32)
DAY_NS = 86400 * 10**9
T0_NS = 1_700_000_000 * 10**9  # a wall-clock epoch, as a live robot stamps
PERIOD_NS = 33_333_333  # 30 Hz


def _pose(t_s: float) -> np.ndarray:
    """Ground-truth trajectory: 0.5 m/s along x, yaw 0.3 rad/s."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", 0.3 * t_s).as_matrix()
    T[:3, 3] = [0.5 * t_s, 0.2, 1.0]
    return T


class Stream:
    """Publishes a camera (colour + depth) and a pose source at 30 Hz like a driver and a SLAM node would, draining
    the assembler after every message as the mapper node does (``now`` = the stamp just received)."""

    def __init__(self, config: SyncConfig | None = None, seed: int = 0):
        self.asm = FrameAssembler(config or SyncConfig())
        self.asm.add_intrinsics(K)
        self.frames = []
        self.rng = np.random.default_rng(seed)

    def drain(self, now_ns: int) -> None:
        self.frames += self.asm.pop_frames(now_ns)

    def pose(self, stamp_ns: int, T: np.ndarray) -> str:
        reason = self.asm.add_pose(stamp_ns, T)
        self.drain(stamp_ns)
        return reason

    def image(self, stamp_ns: int) -> None:
        self.asm.add_color(stamp_ns, RGB)
        self.asm.add_depth(stamp_ns + int(self.rng.integers(0, 3_000_000)), DEPTH)
        self.drain(stamp_ns)

    def tick(self, i: int, clock_offset_ns: int = 0, t0_ns: int = T0_NS) -> int:
        """Frame i: the pose 5 ms after the image stamp (so the image waits for it), then the image."""
        t = t0_ns + i * PERIOD_NS + clock_offset_ns
        self.image(t)
        self.pose(t + 5_000_000, _pose((i * PERIOD_NS + 5_000_000) * 1e-9))
        return t

    def adds_up(self) -> dict:
        st = self.asm.status()
        assert st["colour_received"] == (
            st["frames_assembled"] + st["frames_dropped"] + st["frames_rejected"] + st["frames_pending"]
        ), st
        assert st["frames_dropped"] == sum(st["drop_reasons"].values())
        assert st["frames_rejected"] == sum(st["reject_reasons"].values())
        return st


def _start(stream: Stream, n: int = 10) -> None:
    stream.pose(T0_NS - 28_333_333, _pose(-28_333_333 * 1e-9))  # the previous pose sample
    for i in range(n):
        stream.tick(i)


def test_clean_stream_assembles_every_frame():
    s = Stream()
    _start(s, 60)
    st = s.adds_up()
    assert st["frames_assembled"] == 60 and st["frames_dropped"] == st["frames_rejected"] == 0
    for f in s.frames:
        np.testing.assert_allclose(f.T_world_cam[:3, 3], _pose((f.stamp_ns - T0_NS) * 1e-9)[:3, 3], atol=1e-3)


@pytest.mark.parametrize("offset_ns", [DAY_NS, 60 * 10**9, 3 * 10**9])
def test_one_pose_stamped_in_the_future_is_rejected_and_intake_continues(offset_ns):
    s = Stream()
    _start(s, 10)
    t = T0_NS + 10 * PERIOD_NS
    assert s.pose(t + offset_ns, _pose(10 * PERIOD_NS * 1e-9)) == "future stamp"
    for i in range(10, 70):
        s.tick(i)
    st = s.adds_up()
    assert st["poses_rejected"] == {"future stamp": 1}
    assert st["frames_assembled"] >= 69 and st["frames_pending"] <= 1  # the last one waits for its next pose
    assert st["frames_dropped"] == 0


def test_poses_running_ahead_of_a_paused_camera_are_kept():
    s = Stream()
    _start(s, 10)
    for i in range(10, 10 + 30 * 20):  # the camera pauses 20 s, the pose source goes on
        t = T0_NS + i * PERIOD_NS
        assert s.pose(t + 5_000_000, _pose((i * PERIOD_NS + 5_000_000) * 1e-9)) == ""
    for i in range(610, 640):
        s.tick(i)
    st = s.adds_up()
    assert st["poses_rejected"] == {} and st["frames_assembled"] >= 39


def test_a_stale_pose_and_a_lone_late_image_are_rejected_individually():
    s = Stream()
    _start(s, 10)
    assert s.pose(T0_NS - DAY_NS, np.eye(4)) == HELD_LATE_POSE  # counted as stale at the next image
    s.asm.add_color(T0_NS - 60 * 10**9, RGB)  # one late colour image, then the stream goes on
    for i in range(10, 40):
        s.tick(i)
    st = s.adds_up()
    assert st["poses_rejected"] == {"stale stamp": 1}
    assert st["reject_reasons"] == {"stale stamp": 1} and st["clock_resets"] == 0
    assert st["frames_assembled"] >= 39


def test_a_late_pair_from_a_stalled_driver_is_rejected_without_a_reset():
    s = Stream()
    _start(s, 100)
    s.image(T0_NS + 10 * PERIOD_NS)  # colour + depth of frame 10, delivered 3 s late
    for i in range(100, 130):
        s.tick(i)
    st = s.adds_up()
    assert st["clock_resets"] == 0 and st["reject_reasons"] == {"stale stamp": 1}
    assert st["depth_dropped"] == {"stale stamp": 1} and st["frames_assembled"] >= 129


@pytest.mark.parametrize("back_s", [60, 5])
def test_clock_jump_back_resets_the_synchronizer_and_mapping_continues(back_s, caplog):
    s = Stream()
    _start(s, 30)
    before = s.asm.stats.frames
    with caplog.at_level(logging.WARNING, logger="lang3d_ros.mapping.sync"):
        for i in range(30, 90):  # every stream jumps back by back_s (a bag loop / simulator reset)
            s.tick(i, clock_offset_ns=-back_s * 10**9)
    st = s.adds_up()
    assert st["clock_resets"] == 1
    assert st["frames_assembled"] - before >= 57  # at most a few frames around the jump are lost, counted
    assert sum(1 for r in caplog.records if "synchronizer reset" in r.getMessage()) == 1
    stamps = [f.stamp_ns for f in s.frames[before:]]
    assert stamps == sorted(stamps) and stamps[0] < T0_NS


def test_a_stray_image_stamped_in_the_future_costs_one_reset():
    s = Stream()
    _start(s, 20)
    s.asm.add_color(T0_NS + DAY_NS, RGB)
    for i in range(20, 60):
        s.tick(i)
    st = s.adds_up()
    assert st["clock_resets"] == 1 and st["frames_assembled"] >= 55


@pytest.mark.parametrize("jump_m", [10e3, 1000e3])
def test_pose_jumps_are_rejected_with_their_reason_and_never_reach_a_frame(jump_m):
    s = Stream()
    _start(s, 20)
    for i in range(20, 25):  # five frames whose poses are jump_m away
        t = T0_NS + i * PERIOD_NS
        s.image(t)
        T = _pose((i * PERIOD_NS + 5_000_000) * 1e-9)
        T[0, 3] += jump_m
        assert s.pose(t + 5_000_000, T) == "pose jump"
    for i in range(25, 80):
        s.tick(i)
    st = s.adds_up()
    assert st["poses_rejected"] == {"pose jump": 5}
    assert st["frames_assembled"] >= 70  # frames in the gap are interpolated or dropped "no pose" (counted)
    assert set(st["drop_reasons"]) <= {"no pose for the image stamp"}
    for f in s.frames:
        truth = _pose((f.stamp_ns - T0_NS) * 1e-9)
        assert np.linalg.norm(f.T_world_cam[:3, 3] - truth[:3, 3]) < 0.05


def test_pose_turns_beyond_the_rate_limit_are_rejected():
    s = Stream()
    _start(s, 5)
    t = T0_NS + 5 * PERIOD_NS
    T = _pose(5 * PERIOD_NS * 1e-9) @ np.diag([-1.0, -1.0, 1.0, 1.0])  # 180 degrees in 33 ms
    assert s.pose(t, T) == "pose turn"
    assert s.asm.status()["poses_rejected"] == {"pose turn": 1}


def test_a_jump_that_persists_is_followed_after_the_configured_time():
    """A relocalised pose source (100 m correction that stays): rejected for pose_follow_jump_s, then followed.
    (A small correction is accepted sooner by the speed allowance: 0.5 m + 10 m/s x the time since the last
    accepted sample.)"""
    s = Stream(SyncConfig(pose_follow_jump_s=1.0))
    _start(s, 10)
    shift = np.eye(4)
    shift[1, 3] = 100.0
    for i in range(10, 100):
        t = T0_NS + i * PERIOD_NS
        s.image(t)
        s.pose(t + 5_000_000, shift @ _pose((i * PERIOD_NS + 5_000_000) * 1e-9))
    st = s.adds_up()
    assert st["pose_jumps_followed"] == 1
    assert 25 <= st["poses_rejected"]["pose jump"] <= 35  # about one second of samples
    late = [f for f in s.frames if f.stamp_ns > T0_NS + 50 * PERIOD_NS]
    assert len(late) >= 45 and all(abs(f.T_world_cam[1, 3] - 100.2) < 0.05 for f in late)


def test_intrinsics_change_is_counted_and_later_frames_use_it(caplog):
    s = Stream()
    _start(s, 5)
    K2 = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
    with caplog.at_level(logging.WARNING, logger="lang3d_ros.mapping.sync"):
        for i in range(5, 15):
            s.asm.add_intrinsics(K2)  # camera_info at the image rate: one change, one warning
            s.tick(i)
    st = s.adds_up()
    assert st["intrinsics_changes"] == 1
    assert sum("intrinsics changed" in r.getMessage() for r in caplog.records) == 1
    assert s.frames[-1].intrinsics == K2 and s.frames[0].intrinsics == K


def test_frames_that_never_get_a_pose_are_all_counted():
    s = Stream(SyncConfig(buffer_size=5))
    s.asm.add_pose(T0_NS - 10**8, _pose(-0.1))
    for i in range(40):  # the pose source died
        s.image(T0_NS + i * PERIOD_NS)
    st = s.adds_up()
    assert st["frames_assembled"] == 0 and st["frames_dropped"] >= 30
    assert set(st["drop_reasons"]) <= {"no pose for the image stamp", "buffer full"}


def test_bad_sync_config_is_refused():
    with pytest.raises(ValueError, match="max_stamp_lag_s"):
        FrameAssembler(SyncConfig(max_stamp_lag_s=float("nan")))
    with pytest.raises(ValueError, match="clock_jump_confirm"):
        FrameAssembler(SyncConfig(clock_jump_confirm=0))


def test_reason_log_says_each_reason_once_per_period(caplog):
    now = [0.0]
    say = ReasonLog(logging.getLogger("test.reasonlog"), period_s=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.reasonlog"):
        for i in range(100):  # 10 s of a fault at 10 Hz, two reasons
            now[0] = i * 0.1
            say("frame rejected (no depth)", f"frame {i}")
            if i % 2:
                say("pose rejected (future stamp)", f"pose {i}")
    lines = [r.getMessage() for r in caplog.records]
    assert sum("no depth" in m for m in lines) == 2 and sum("future stamp" in m for m in lines) == 2
    assert any("(49 more since the last report)" in m for m in lines)
