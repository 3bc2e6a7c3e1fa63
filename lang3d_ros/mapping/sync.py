"""Assemble Frames from separately arriving colour, depth, camera info and pose streams (ROS-free).

Colour and depth are paired by approximate time (|dt| <= slop). The camera pose at the colour stamp is interpolated
(linear position, slerp rotation) between the two pose samples that bracket it, when they are at most
``pose_max_gap_s`` apart; a pair waits up to ``pose_wait_s`` for a later pose and is then dropped with a reason.
This is the path used where message_filters is not installed; it is tested against known streams.

Faults in the streams are refused one message at a time, so that intake recovers at once:
- the newest image stamp is the clock: a pose stamped more than ``max_pose_lead_s`` after it and after the newest
  accepted pose (future) or an image or pose more than ``max_stamp_lag_s`` before it (stale) is rejected; a caller
  that passes arrival times (``received_ns``, a monotonic clock) allows a pose the time since the last message was
  stored on top of ``max_pose_lead_s``, so after a gap in every stream longer than it (a stalled link, lost
  best-effort messages) the first poses are on time, not in the future, while a pose stamped far ahead of a stream
  that keeps arriving is still refused;
  ``clock_jump_confirm`` images in a row that far back mean the clock went back (bag loop, simulator reset):
  everything buffered is dropped (counted), the synchronizer restarts from those images (and the poses held with
  them), ``clock_resets`` counts it and a warning is logged;
- a pose sample farther from the accepted sample nearest in time than the speed limits allow is rejected
  (``pose jump`` / ``pose turn``); a jump that persists ``pose_follow_jump_s`` is followed, with a warning;
- a change of camera intrinsics is counted and warned about; later frames carry the new intrinsics.
What it cannot do: an image stamped far in the *future* is accepted (a camera may resume after a pause) and becomes
the clock; the next images then look like a time jump back and reset the synchronizer (a few frames dropped,
counted). A pose source that jumps and stays is trusted after ``pose_follow_jump_s``.

Counting (every colour image ends in exactly one place)::

    colour_received == frames_assembled + sum(drop_reasons) + sum(reject_reasons) + frames_pending

``status()`` returns these keys (and the depth / pose / intrinsics counters); a node adds the pipeline's.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import validate_rigid
from lang3d_ros.mapping.config import SyncConfig
from lang3d_ros.mapping.ratelog import ReasonLog

log = logging.getLogger(__name__)

DROP_NO_DEPTH = "colour without depth"
DROP_NO_POSE = "no pose for the image stamp"
DROP_BUFFER_FULL = "buffer full"
DROP_CLOCK_RESET = "time jump back (synchronizer reset)"
DROP_DEPTH_ALONE = "depth without colour"
REJECT_STALE = "stale stamp"
REJECT_FUTURE = "future stamp"
REJECT_POSE_JUMP = "pose jump"
REJECT_POSE_TURN = "pose turn"
HELD_LATE_POSE = "held: stamped far back, kept until the next image says whether the clock went back"


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


def rotation_angle_rad(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle (rad) of the rotation between two (3,3) rotation matrices."""
    c = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


@dataclass
class AssemblerStats:
    """What happened to every message. Colour images: ``frames`` assembled, ``dropped`` (no partner, no pose,
    buffer full, clock reset) or ``rejected`` (stamp) by reason; the rest are pending in the buffers."""

    colour_received: int = 0
    frames: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    depth_received: int = 0
    depth_dropped: dict[str, int] = field(default_factory=dict)
    poses_received: int = 0
    poses_rejected: dict[str, int] = field(default_factory=dict)
    pose_jumps_followed: int = 0
    intrinsics_changes: int = 0
    clock_resets: int = 0

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


@dataclass
class _Late:
    """An image stamped far before the clock, held until the next image says whether the clock went back."""

    kind: str
    stamp_ns: int
    data: np.ndarray


class FrameAssembler:
    """Feed messages as they arrive (any order within a stream is tolerated); ``pop_frames`` returns complete Frames.

    ``T_pose_cam`` maps the camera's optical frame into the frame the pose stream describes (e.g. base_link when the
    pose is the robot's odometry); identity when the pose stream is the camera pose itself. Not thread-safe: feed it
    from one thread (or under one lock).
    """

    def __init__(self, config: SyncConfig, T_pose_cam: np.ndarray | None = None):
        for name in (
            "slop_s",
            "pose_max_gap_s",
            "pose_wait_s",
            "max_stamp_lag_s",
            "max_pose_lead_s",
            "pose_max_speed_m_s",
            "pose_max_angular_speed_rad_s",
            "pose_max_jump_m",
            "pose_max_jump_rad",
            "pose_follow_jump_s",
        ):
            v = float(getattr(config, name))
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"mapping.sync.{name} must be a finite number >= 0, got {v}")
        if config.buffer_size < 1 or config.clock_jump_confirm < 1:
            raise ValueError("mapping.sync.buffer_size and clock_jump_confirm must be >= 1")
        self.config = config
        self.T_pose_cam = validate_rigid(np.eye(4) if T_pose_cam is None else T_pose_cam, "T_pose_cam")
        self.intrinsics: Intrinsics | None = None
        self.stats = AssemblerStats()
        self._say = ReasonLog(log)
        self._index = 0
        self._clear()

    def _clear(self) -> None:
        n = self.config.buffer_size
        self._color: deque[tuple[int, np.ndarray]] = deque()
        self._depth: deque[tuple[int, np.ndarray]] = deque()
        self._pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        self._maxlen = n
        self._pose_t: list[int] = []
        self._pose_T: list[np.ndarray] = []
        self._late: list[_Late] = []
        self._jump_track: list[tuple[int, np.ndarray]] = []
        self._newest_image_ns: int | None = None
        self._stored_rx_ns: int | None = None  # arrival time of the last message stored (when callers give it)
        self._rx_ns: int | None = None  # arrival time of the message being added

    # ------------------------------------------------------------------------------------------ input
    def add_intrinsics(self, intrinsics: Intrinsics) -> None:
        """Set the camera model; a change against the previous one is counted (``intrinsics_changes``) and warned
        about (rate-limited). Frames assembled afterwards carry the new intrinsics; pairs already buffered too."""
        old = self.intrinsics
        if old is not None and old != intrinsics:
            self.stats.intrinsics_changes += 1
            self._say(
                "camera intrinsics changed mid-stream",
                f"{old.width}x{old.height} fx={old.fx:.6g} fy={old.fy:.6g} cx={old.cx:.6g} cy={old.cy:.6g} -> "
                f"{intrinsics.width}x{intrinsics.height} fx={intrinsics.fx:.6g} fy={intrinsics.fy:.6g} "
                f"cx={intrinsics.cx:.6g} cy={intrinsics.cy:.6g}; later frames use the new values",
            )
        self.intrinsics = intrinsics

    def add_color(self, stamp_ns: int, rgb: np.ndarray, received_ns: int | None = None) -> None:
        """rgb: (H,W,3) uint8. A stale image is rejected (counted), several in a row reset the synchronizer.
        received_ns: when the message arrived (monotonic clock, ns; see ``add_pose``), optional."""
        self.stats.colour_received += 1
        self._rx_ns = None if received_ns is None else int(received_ns)
        self._add_image("colour", int(stamp_ns), rgb)

    def add_depth(self, stamp_ns: int, depth_m: np.ndarray, received_ns: int | None = None) -> None:
        """depth_m: (H,W) float32 metres. Stamps are checked as for colour."""
        self.stats.depth_received += 1
        self._rx_ns = None if received_ns is None else int(received_ns)
        self._add_image("depth", int(stamp_ns), depth_m)

    def add_pose(self, stamp_ns: int, T_world_pose: np.ndarray, received_ns: int | None = None) -> str:
        """Store a pose sample (4,4); returns "" when stored, else the reason it was rejected (counted in
        ``poses_rejected``, logged once per reason every 5 s): stale or future stamp, pose jump or turn. A pose
        stamped more than ``max_stamp_lag_s`` back is held (``HELD_LATE_POSE``) with the late images: stored if they
        turn out to be a clock jump back, else counted as a stale stamp.
        Raises ValueError for a non-rigid or non-finite pose (nothing is stored).
        received_ns: when the message arrived (monotonic clock, ns), optional; with it the future-stamp limit is
        ``max_pose_lead_s`` plus the time since the last message (of any stream) was stored, so poses after a gap
        in every stream are accepted."""
        T = validate_rigid(T_world_pose, "pose")
        stamp_ns = int(stamp_ns)
        self.stats.poses_received += 1
        self._rx_ns = rx = None if received_ns is None else int(received_ns)
        c = self.config
        ref = self._newest_image_ns
        # poses run ahead of a paused camera one sample at a time: judge the lead against the newer of the two
        ahead_of = ref if ref is None or not self._pose_t else max(ref, self._pose_t[-1])
        lead_ns = int(c.max_pose_lead_s * 1e9)
        silent_ns = max(0, rx - self._stored_rx_ns) if rx is not None and self._stored_rx_ns is not None else 0
        if ahead_of is not None and stamp_ns > ahead_of + lead_ns + silent_ns:
            return self._reject_pose(
                REJECT_FUTURE,
                f"pose stamped {(stamp_ns - ahead_of) * 1e-9:.3f} s after the "
                f"newest image or pose (limit mapping.sync.max_pose_lead_s="
                f"{c.max_pose_lead_s}" + (f" + {silent_ns * 1e-9:.3f} s without messages" if silent_ns else "") + ")",
            )
        if ref is not None and stamp_ns < ref - int(c.max_stamp_lag_s * 1e9):
            if len(self._late) < self._maxlen:  # the first pose of a new, earlier timeline often precedes its image
                self._late.append(_Late("pose", stamp_ns, T))
                return HELD_LATE_POSE
            return self._reject_pose(
                REJECT_STALE,
                f"pose stamped {(ref - stamp_ns) * 1e-9:.3f} s before the newest "
                f"image (limit mapping.sync.max_stamp_lag_s={c.max_stamp_lag_s})",
            )
        jump = self._jump_reason(stamp_ns, T)
        if jump:
            if self._follow_jump(stamp_ns, T):
                self._pose_t, self._pose_T = [stamp_ns], [T]
                self._stored_rx_ns = rx if rx is not None else self._stored_rx_ns
                self.stats.pose_jumps_followed += 1
                self._say(
                    "pose stream jumped and stayed",
                    f"following it from stamp {stamp_ns} ({jump}); "
                    f"mapping.sync.pose_follow_jump_s={c.pose_follow_jump_s}",
                )
                return ""
            return self._reject_pose(jump.split(":")[0], jump)
        self._jump_track = []
        i = bisect.bisect_left(self._pose_t, stamp_ns)
        if i < len(self._pose_t) and self._pose_t[i] == stamp_ns:
            self._pose_T[i] = T
        else:
            self._pose_t.insert(i, stamp_ns)
            self._pose_T.insert(i, T)
        if rx is not None:
            self._stored_rx_ns = rx
        keep = self.config.buffer_size * 10
        if len(self._pose_t) > keep:
            del self._pose_t[: len(self._pose_t) - keep]
            del self._pose_T[: len(self._pose_T) - keep]
        return ""

    def _drop(self, reason: str, detail: str, n: int = 1) -> None:
        """Count ``n`` colour images dropped for ``reason`` and log it (INFO, once per reason every 5 s)."""
        if n:
            self.stats.drop(reason, n)
            self._say(f"frame dropped ({reason})", detail, logging.INFO)

    def _drop_depth(self, reason: str, n: int = 1) -> None:
        if n:
            self.stats.depth_dropped[reason] = self.stats.depth_dropped.get(reason, 0) + n

    def _reject_pose(self, reason: str, detail: str) -> str:
        self.stats.poses_rejected[reason] = self.stats.poses_rejected.get(reason, 0) + 1
        self._say(f"pose rejected ({reason})", detail)
        return reason

    def _motion_reason(self, t0: int, T0: np.ndarray, t1: int, T1: np.ndarray) -> str:
        c = self.config
        dt_s = abs(t1 - t0) * 1e-9
        dist_m = float(np.linalg.norm(T1[:3, 3] - T0[:3, 3]))
        if dist_m > c.pose_max_jump_m + c.pose_max_speed_m_s * dt_s:
            return (
                f"{REJECT_POSE_JUMP}: moved {dist_m:.4g} m in {dt_s:.3g} s (limits pose_max_jump_m="
                f"{c.pose_max_jump_m}, pose_max_speed_m_s={c.pose_max_speed_m_s})"
            )
        angle = rotation_angle_rad(T0[:3, :3], T1[:3, :3])
        if angle > c.pose_max_jump_rad + c.pose_max_angular_speed_rad_s * dt_s:
            return (
                f"{REJECT_POSE_TURN}: turned {angle:.3g} rad in {dt_s:.3g} s (limits pose_max_jump_rad="
                f"{c.pose_max_jump_rad}, pose_max_angular_speed_rad_s={c.pose_max_angular_speed_rad_s})"
            )
        return ""

    def _jump_reason(self, stamp_ns: int, T: np.ndarray) -> str:
        """Against the accepted sample nearest in time (the previous one, else the next)."""
        if not self._pose_t:
            return ""
        i = bisect.bisect_left(self._pose_t, stamp_ns)
        j = i - 1 if i > 0 else 0
        return self._motion_reason(self._pose_t[j], self._pose_T[j], stamp_ns, T)

    def _follow_jump(self, stamp_ns: int, T: np.ndarray) -> bool:
        """Track rejected samples that agree among themselves; True once they span ``pose_follow_jump_s``."""
        if self.config.pose_follow_jump_s <= 0:
            return False
        if self._jump_track:
            t0, T0 = self._jump_track[-1]
            if stamp_ns <= t0 or self._motion_reason(t0, T0, stamp_ns, T):
                self._jump_track = []
        self._jump_track.append((stamp_ns, T))
        if (self._jump_track[-1][0] - self._jump_track[0][0]) * 1e-9 >= self.config.pose_follow_jump_s:
            self._jump_track = []
            return True
        return False

    def _add_image(self, kind: str, stamp_ns: int, data: np.ndarray) -> None:
        c = self.config
        ref = self._newest_image_ns
        lag_ns = int(c.max_stamp_lag_s * 1e9)
        if ref is not None and stamp_ns < ref - lag_ns:
            images = [x for x in self._late if x.kind != "pose"]
            if images and abs(stamp_ns - images[-1].stamp_ns) > lag_ns:
                self._reject_late()  # not the same earlier timeline as the held ones
            self._late.append(_Late(kind, stamp_ns, data))
            if len(images) + 1 < c.clock_jump_confirm:
                return
            late, self._late = self._late, []
            self._reset(
                f"image stamps went back by {(ref - stamp_ns) * 1e-9:.3f} s (bag loop, simulator reset or a "
                f"stray stamp ahead)"
            )
            for item in late:  # images first: they set the clock the held poses are judged against
                if item.kind != "pose":
                    self._store(item.kind, item.stamp_ns, item.data)
            for item in late:
                if item.kind == "pose":
                    self.stats.poses_received -= 1  # counted when it first arrived
                    self.add_pose(item.stamp_ns, item.data)
            return
        if self._late:
            self._reject_late()
        self._store(kind, stamp_ns, data)

    def _reject_late(self) -> None:
        for item in self._late:
            if item.kind == "pose":
                self._reject_pose(
                    REJECT_STALE,
                    f"pose stamped more than mapping.sync.max_stamp_lag_s="
                    f"{self.config.max_stamp_lag_s} s before the newest image",
                )
                continue
            if item.kind == "colour":
                self.stats.reject(REJECT_STALE)
            else:
                self.stats.depth_dropped[REJECT_STALE] = self.stats.depth_dropped.get(REJECT_STALE, 0) + 1
            self._say(
                f"{item.kind} image rejected ({REJECT_STALE})",
                f"stamped more than mapping.sync.max_stamp_lag_s={self.config.max_stamp_lag_s} s before the "
                f"newest image",
            )
        self._late = []

    def _reset(self, why: str) -> None:
        dropped = len(self._color) + len(self._pending)
        self.stats.drop(DROP_CLOCK_RESET, dropped)  # the warning below says it
        self._drop_depth(DROP_CLOCK_RESET, len(self._depth))
        self._clear()
        self.stats.clock_resets += 1
        self._say("synchronizer reset", f"{why}; {dropped} buffered frame(s) dropped, pose history cleared")

    def _store(self, kind: str, stamp_ns: int, data: np.ndarray) -> None:
        first = self._newest_image_ns is None
        self._newest_image_ns = stamp_ns if first else max(self._newest_image_ns, stamp_ns)
        if self._rx_ns is not None:
            self._stored_rx_ns = self._rx_ns
        if first:
            self._prune_future_poses()
        buf = self._color if kind == "colour" else self._depth
        if len(buf) >= self._maxlen:
            old_ns, _ = buf.popleft()
            if kind == "colour":
                self._drop(
                    DROP_BUFFER_FULL,
                    f"colour image stamped {old_ns} ns never met a depth image: {self._maxlen} colour images "
                    f"buffered (mapping.sync.buffer_size)",
                )
            else:
                self._drop_depth(DROP_BUFFER_FULL)
        buf.append((stamp_ns, data))
        self._pair()

    def _prune_future_poses(self) -> None:
        """Poses stored before the first image that are stamped too far after it (nothing could judge them)."""
        limit = self._newest_image_ns + int(self.config.max_pose_lead_s * 1e9)
        i = bisect.bisect_right(self._pose_t, limit)
        for _ in range(len(self._pose_t) - i):
            self._reject_pose(REJECT_FUTURE, "pose stamped after the first image by more than max_pose_lead_s")
        del self._pose_t[i:], self._pose_T[i:]

    def _pair(self) -> None:
        slop = int(self.config.slop_s * 1e9)
        while self._color and self._depth:
            tc, rgb = self._color[0]
            td, depth = self._depth[0]
            if abs(tc - td) <= slop:
                self._color.popleft()
                self._depth.popleft()
                if len(self._pending) >= self._maxlen:
                    old_ns = self._pending.popleft()[0]
                    self._drop(
                        DROP_BUFFER_FULL,
                        f"pair stamped {old_ns} ns still waiting for a pose: {self._maxlen} pairs buffered "
                        f"(mapping.sync.buffer_size)",
                    )
                self._pending.append((tc, rgb, depth))
            elif tc < td:
                self._color.popleft()
                self._drop(
                    DROP_NO_DEPTH,
                    f"colour stamped {tc} ns, the next depth image {(td - tc) * 1e-6:.1f} ms later "
                    f"(mapping.sync.slop_s={self.config.slop_s}): its depth image was lost or stamped apart",
                )
            else:
                self._depth.popleft()
                self._drop_depth(DROP_DEPTH_ALONE)

    # ------------------------------------------------------------------------------------------ output
    def pop_frames(self, now_ns: int | None = None) -> list[Frame]:
        """Complete frames whose pose is known; pairs that waited longer than ``pose_wait_s`` for a pose (by
        ``now_ns``, the newest stamp the caller saw or its clock) are dropped (counted). ``now_ns`` is capped at the
        newest image stamp + ``max_pose_lead_s`` (a rejected future stamp cannot expire the buffers)."""
        out: list[Frame] = []
        gap = int(self.config.pose_max_gap_s * 1e9)
        wait = int(self.config.pose_wait_s * 1e9)
        if now_ns is not None and self._newest_image_ns is not None:
            now_ns = min(int(now_ns), self._newest_image_ns + int(self.config.max_pose_lead_s * 1e9))
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
                self._drop(
                    DROP_NO_POSE,
                    f"stamp {t} ns; pose samples bracketing it are missing or more than mapping.sync.pose_max_gap_s="
                    f"{self.config.pose_max_gap_s} s apart (waited mapping.sync.pose_wait_s={self.config.pose_wait_s} "
                    f"s of stamps)",
                )
                continue
            self._pending.popleft()
            frame = Frame(
                rgb=rgb,
                depth_m=depth,
                intrinsics=self.intrinsics,
                T_world_cam=T @ self.T_pose_cam,
                stamp_ns=t,
                index=self._index,
            )
            self._index += 1
            self.stats.frames += 1
            out.append(frame)
        return out

    @property
    def frames_pending(self) -> int:
        """Colour images still buffered (unpaired, paired and waiting for a pose, or held as late)."""
        return len(self._color) + len(self._pending) + sum(1 for x in self._late if x.kind == "colour")

    def status(self) -> dict:
        """Counters for a status message. Keys: ``colour_received``, ``frames_assembled``, ``frames_dropped``,
        ``frames_rejected``, ``frames_pending`` (colour images; the first equals the sum of the other four),
        ``drop_reasons``, ``reject_reasons`` (dicts reason -> count), ``depth_received``, ``depth_dropped`` (dict),
        ``poses_received``, ``poses_rejected`` (dict), ``pose_jumps_followed``, ``intrinsics_changes``,
        ``clock_resets``."""
        s = self.stats
        return {
            "colour_received": s.colour_received,
            "frames_assembled": s.frames,
            "frames_dropped": sum(s.dropped.values()),
            "frames_rejected": sum(s.rejected.values()),
            "frames_pending": self.frames_pending,
            "drop_reasons": dict(s.dropped),
            "reject_reasons": dict(s.rejected),
            "depth_received": s.depth_received,
            "depth_dropped": dict(s.depth_dropped),
            "poses_received": s.poses_received,
            "poses_rejected": dict(s.poses_rejected),
            "pose_jumps_followed": s.pose_jumps_followed,
            "intrinsics_changes": s.intrinsics_changes,
            "clock_resets": s.clock_resets,
        }
