"""Assemble Frames from separately arriving colour, depth, camera info and pose streams (ROS-free).

Colour and depth are paired by approximate time (|dt| <= slop). The camera pose at the colour stamp is interpolated
(linear position, slerp rotation) between the two pose samples that bracket it, when they are at most
``pose_max_gap_s`` apart; a pair waits up to ``pose_wait_s`` for a later pose and is then dropped with a reason.
This is the path used where message_filters is not installed; it is tested against known streams.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import validate_rigid
from lang3d_ros.mapping.config import SyncConfig


def interpolate_pose(stamps_ns: np.ndarray, poses: np.ndarray, query_ns: int, max_gap_ns: int) -> np.ndarray | None:
    """Pose at ``query_ns`` from sorted samples (N,) and (N,4,4): interpolated between bracketing samples at most
    ``max_gap_ns`` apart, or an exact sample; None when the query is outside the samples or the gap is too wide."""
    i = int(np.searchsorted(stamps_ns, query_ns))
    if i < len(stamps_ns) and stamps_ns[i] == query_ns:
        return poses[i].copy()
    if i == 0 or i == len(stamps_ns):
        return None
    t0, t1 = int(stamps_ns[i - 1]), int(stamps_ns[i])
    if t1 - t0 > max_gap_ns:
        return None
    w = (query_ns - t0) / (t1 - t0)
    out = np.eye(4)
    out[:3, 3] = (1 - w) * poses[i - 1][:3, 3] + w * poses[i][:3, 3]
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([poses[i - 1][:3, :3], poses[i][:3, :3]])))
    out[:3, :3] = slerp([w]).as_matrix()[0]
    return out


@dataclass
class AssemblerStats:
    frames: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class FrameAssembler:
    """Feed messages as they arrive (any order within a stream is tolerated); ``pop_frames`` returns complete Frames.

    ``T_pose_cam`` maps the camera's optical frame into the frame the pose stream describes (e.g. base_link when the
    pose is the robot's odometry); identity when the pose stream is the camera pose itself.
    """

    def __init__(self, config: SyncConfig, T_pose_cam: np.ndarray | None = None):
        self.config = config
        self.T_pose_cam = validate_rigid(np.eye(4) if T_pose_cam is None else T_pose_cam, "T_pose_cam")
        self._color: deque[tuple[int, np.ndarray]] = deque(maxlen=config.buffer_size)
        self._depth: deque[tuple[int, np.ndarray]] = deque(maxlen=config.buffer_size)
        self._pose_t: list[int] = []
        self._pose_T: list[np.ndarray] = []
        self._pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=config.buffer_size)
        self.intrinsics: Intrinsics | None = None
        self.stats = AssemblerStats()
        self._index = 0

    def add_intrinsics(self, intrinsics: Intrinsics) -> None:
        self.intrinsics = intrinsics

    def add_color(self, stamp_ns: int, rgb: np.ndarray) -> None:
        self._color.append((int(stamp_ns), rgb))
        self._pair()

    def add_depth(self, stamp_ns: int, depth_m: np.ndarray) -> None:
        self._depth.append((int(stamp_ns), depth_m))
        self._pair()

    def add_pose(self, stamp_ns: int, T_world_pose: np.ndarray) -> None:
        """Raises ValueError for a non-rigid or non-finite pose (nothing is stored)."""
        T = validate_rigid(T_world_pose, "pose")
        stamp_ns = int(stamp_ns)
        i = bisect.bisect_left(self._pose_t, stamp_ns)
        if i < len(self._pose_t) and self._pose_t[i] == stamp_ns:
            self._pose_T[i] = T
        else:
            self._pose_t.insert(i, stamp_ns)
            self._pose_T.insert(i, T)
        keep = self.config.buffer_size * 10
        if len(self._pose_t) > keep:
            del self._pose_t[: len(self._pose_t) - keep]
            del self._pose_T[: len(self._pose_T) - keep]

    def _pair(self) -> None:
        slop = int(self.config.slop_s * 1e9)
        while self._color and self._depth:
            tc, rgb = self._color[0]
            td, depth = self._depth[0]
            if abs(tc - td) <= slop:
                self._color.popleft()
                self._depth.popleft()
                self._pending.append((tc, rgb, depth))
            elif tc < td:
                self._color.popleft()
                self.stats.drop("colour without depth")
            else:
                self._depth.popleft()
                self.stats.drop("depth without colour")

    def pop_frames(self, now_ns: int | None = None) -> list[Frame]:
        """Complete frames whose pose is known; pairs that waited too long for a pose are dropped (counted)."""
        out: list[Frame] = []
        gap = int(self.config.pose_max_gap_s * 1e9)
        wait = int(self.config.pose_wait_s * 1e9)
        stamps = np.asarray(self._pose_t, dtype=np.int64)
        poses = np.asarray(self._pose_T) if self._pose_T else np.zeros((0, 4, 4))
        while self._pending:
            t, rgb, depth = self._pending[0]
            if self.intrinsics is None:
                break
            T = interpolate_pose(stamps, poses, t, gap) if len(stamps) else None
            if T is None:
                newest = int(stamps[-1]) if len(stamps) else None
                later_pose_possible = newest is None or newest < t
                waited = now_ns is not None and now_ns - t > wait
                if later_pose_possible and not waited:
                    break  # wait for the next pose sample
                self._pending.popleft()
                self.stats.drop("no pose for the image stamp")
                continue
            self._pending.popleft()
            frame = Frame(rgb=rgb, depth_m=depth, intrinsics=self.intrinsics, T_world_cam=T @ self.T_pose_cam,
                          stamp_ns=t, index=self._index)
            self._index += 1
            self.stats.frames += 1
            out.append(frame)
        return out
