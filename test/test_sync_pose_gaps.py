"""A realistic robot's best-effort streams with gaps of lost messages: no pose sample may be rejected.

FrameAssembler refuses a pose farther from the accepted sample nearest in time than pose_max_jump_m +
pose_max_speed_m_s * dt (and likewise for turns), and a pose stamped more than max_pose_lead_s after the newest
image and pose. A robot at <= 2 m/s and <= 1.5 rad/s whose messages are lost in bursts (a loaded host, Wi-Fi) must
never trip either; frames are lost only where their own images or the poses around them are missing. The limits are
not loosened for the tests' 16 m/s orbits (those poses are rejected after a gap, as they should be)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.mapping.config import SyncConfig
from lang3d_ros.mapping.sync import REJECT_POSE_JUMP, FrameAssembler

T0_NS = 1_700_000_000 * 10**9
INTR = Intrinsics(fx=50.0, fy=50.0, cx=7.5, cy=5.5, width=16, height=12)


def _heading(t_s, turn_rad_s: float):
    """Heading (rad) at t_s: every 4 s, 2 s straight then 2 s turning at turn_rad_s."""
    k, r = np.divmod(np.asarray(t_s, dtype=np.float64), 4.0)
    return turn_rad_s * (2.0 * k + np.maximum(0.0, r - 2.0))


def robot_pose(t_s: float, speed_m_s: float = 2.0, turn_rad_s: float = 1.5) -> np.ndarray:
    """T_world_cam of a robot driving at speed_m_s along its heading (position integrated in 5 ms steps), the
    camera (optical frame: z forward) looking along the heading, 1.2 m up."""
    steps = np.arange(0.0, t_s, 0.005)
    h = _heading(steps, turn_rad_s)
    xy = speed_m_s * 0.005 * np.array([np.cos(h).sum(), np.sin(h).sum()])
    T = np.eye(4)
    optical = Rotation.from_euler("xyz", [-np.pi / 2, 0.0, -np.pi / 2])
    T[:3, :3] = (Rotation.from_euler("z", float(_heading(t_s, turn_rad_s))) * optical).as_matrix()
    T[:3, 3] = [xy[0], xy[1], 1.2]
    return T


def _stream(duration_s: float, fps: float, pose_hz: float, losses, seed: int):
    """Messages (arrival order by stamp + latency) with the lost ones removed. losses: list of (stream, t0_s, t1_s)
    with stream in {"colour", "depth", "pose", "all"}."""
    rng = np.random.default_rng(seed)
    msgs = []
    for kind, hz, latency_s in (("colour", fps, 0.030), ("depth", fps, 0.032), ("pose", pose_hz, 0.005)):
        for k in range(int(duration_s * hz)):
            t_s = k / hz + rng.normal(0.0, 0.001)
            if any(s in (kind, "all") and a <= t_s < b for s, a, b in losses):
                continue
            msgs.append((t_s + latency_s + rng.uniform(0.0, 0.01), kind, t_s))
    msgs.sort()
    return msgs


def _feed(msgs, config: SyncConfig, arrival_times: bool = True) -> tuple[FrameAssembler, list, int]:
    """Feed as a node does (arrival times from the same clock when arrival_times); returns the assembler, the
    frames and how many frames could be assembled: colour and depth delivered and poses delivered on both sides
    of the stamp at most pose_max_gap_s apart."""
    asm = FrameAssembler(config)
    asm.add_intrinsics(INTR)
    rgb, depth = np.zeros((12, 16, 3), np.uint8), np.ones((12, 16), np.float32)
    frames = []
    for arrival_s, kind, t_s in msgs:
        stamp = T0_NS + int(round(t_s * 1e9))
        rx = int(round(arrival_s * 1e9)) if arrival_times else None
        if kind == "colour":
            asm.add_color(stamp, rgb, rx)
        elif kind == "depth":
            asm.add_depth(stamp, depth, rx)
        else:
            asm.add_pose(stamp, robot_pose(t_s), rx)
        frames += asm.pop_frames(stamp)
    pose_t = np.array(sorted(t for _, k, t in msgs if k == "pose"))
    depth_t = np.array(sorted(t for _, k, t in msgs if k == "depth"))
    possible = 0
    for t in (t for _, k, t in msgs if k == "colour"):
        i = np.searchsorted(pose_t, t)
        bracket = 0 < i < len(pose_t) and pose_t[i] - pose_t[i - 1] <= config.pose_max_gap_s
        possible += bool(bracket and np.min(np.abs(depth_t - t)) <= config.slop_s)
    return asm, frames, possible


@pytest.mark.parametrize(
    "losses",
    [
        [("pose", 1.0, 1.4), ("pose", 3.0, 4.5)],  # pose bursts lost
        [("colour", 1.0, 2.0), ("depth", 1.5, 3.5)],  # image bursts lost
        [("all", 1.0, 1.5), ("all", 2.5, 4.4)],  # everything lost (a stalled link), under max_pose_lead_s
        [("all", 1.0, 4.0)],  # everything lost for 3 s, more than max_pose_lead_s
        [("pose", 0.5, 5.5), ("colour", 2.0, 2.5)],  # 5 s without poses at 2 m/s: 10 m, turned 4.5 rad
    ],
    ids=["poses", "images", "all-short", "all-3s", "poses-5s"],
)
def test_a_2_m_s_robot_keeps_every_pose_after_gaps_of_lost_messages(losses):
    msgs = _stream(8.0, fps=15.0, pose_hz=30.0, losses=losses, seed=3)
    asm, frames, possible = _feed(msgs, SyncConfig())
    st = asm.status()
    assert st["poses_rejected"] == {} and st["pose_jumps_followed"] == 0, st
    # every frame whose images and pose samples were delivered is assembled (the last may wait), at the robot's pose
    assert st["frames_assembled"] >= possible - 1 and st["frames_assembled"] >= 0.3 * st["colour_received"], st
    for f in frames:
        T = robot_pose((f.stamp_ns - T0_NS) * 1e-9)
        assert np.linalg.norm(f.T_world_cam[:3, 3] - T[:3, 3]) < 0.05


def test_without_arrival_times_a_gap_in_every_stream_longer_than_the_lead_costs_a_pose():
    """What the arrival times fix: judged by stamps alone, the first pose after 3 s of silence looks 3 s ahead."""
    msgs = _stream(8.0, fps=15.0, pose_hz=30.0, losses=[("all", 1.0, 4.0)], seed=3)
    asm, _frames, _possible = _feed(msgs, SyncConfig(), arrival_times=False)
    assert asm.status()["poses_rejected"] == {"future stamp": 1}


def test_a_pose_stamped_ahead_of_a_stream_that_keeps_arriving_is_still_refused():
    asm = FrameAssembler(SyncConfig())
    asm.add_intrinsics(INTR)
    rgb, depth = np.zeros((12, 16, 3), np.uint8), np.ones((12, 16), np.float32)
    for k in range(30):  # 1 s of a 30 Hz stream, arriving as stamped
        t_ns = T0_NS + k * 33_333_333
        asm.add_color(t_ns, rgb, k * 33_333_333)
        asm.add_depth(t_ns, depth, k * 33_333_333)
        assert asm.add_pose(t_ns, robot_pose(k / 30), k * 33_333_333) == ""
    # 3 s ahead, arriving with the stream: refused; 60 s ahead after 10 s of silence: refused too
    assert asm.add_pose(t_ns + 3 * 10**9, robot_pose(1.0), 30 * 33_333_333) == "future stamp"
    assert asm.add_pose(t_ns + 60 * 10**9, robot_pose(1.0), 10 * 10**9) == "future stamp"


def test_the_jump_limit_still_refuses_a_16_m_s_orbit_after_a_gap():
    """The tests' fast orbit (0.54 m per 1/30 s) after 0.135 s of lost poses: 2.2 m is more than 0.5 + 10 * 0.135."""
    asm = FrameAssembler(SyncConfig())
    T0, T1 = np.eye(4), np.eye(4)
    T1[0, 3] = 2.2
    assert asm.add_pose(T0_NS, T0) == ""
    assert asm.add_pose(T0_NS + 135_000_000, T1) == REJECT_POSE_JUMP
