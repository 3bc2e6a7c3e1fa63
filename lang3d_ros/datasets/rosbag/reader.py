"""Read RGB-D Frames from a rosbag2 folder (MCAP or sqlite3) or a single .mcap/.db3 file with ``rosbags``.

Opening the bag indexes it: camera_info and pose messages are read whole (they are small), image
messages only for their header stamps. Each colour image is matched to the depth image and
camera_info nearest in header stamp within ``slop_ms`` (approximate time sync); its pose is
interpolated (slerp) between the bracketing pose messages (PoseStamped, PoseWithCovarianceStamped or
Odometry). Colour images with no partner are skipped and counted (``skipped``). Depth: 16UC1/mono16
in millimetres (``depth_scale``), 32FC1 in metres. Pose messages are taken as T_world_cam of the
colour optical frame: the reader has no TF tree and cannot apply a base_link -> camera extrinsic.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rosbags.rosbag2 import Reader

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.datasets.image_codec import decode_image, to_depth_m, to_rgb8
from lang3d_ros.datasets.poses import interpolate_poses
from lang3d_ros.datasets.rosbag.topics import CAMERA_INFO, IMAGE, POSE_TYPES, BagTopics, header_stamp_ns, typestore
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import matrix_from_pose

log = logging.getLogger(__name__)
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


@contextlib.contextmanager
def reading(path):
    """Open a bag for the ``with`` block and close it after; a library error inside (a truncated or corrupt
    file) becomes a ValueError that names the bag. ValueErrors pass through unchanged."""
    reader = open_reader(path)
    try:
        yield reader
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: damaged bag ({type(exc).__name__}: {exc})") from exc
    finally:
        reader.close()


def open_reader(path) -> Reader:
    """rosbags Reader for a bag folder or a single .mcap/.db3 file; ValueError names an unreadable file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, yaml, sqlite3 and struct errors for damaged bags
        raise ValueError(f"{path}: cannot open bag ({type(exc).__name__}: {exc})") from exc
    return reader


@dataclass(frozen=True)
class _Planned:
    color_idx: int
    depth_idx: int
    stamp_ns: int
    intrinsics: Intrinsics
    T_world_cam: np.ndarray


class RosbagSource:
    """FrameSource over a bag. pose_topic: None = ``topics.pose`` if present, else ``topics.odom``."""

    def __init__(
        self,
        path,
        topics: BagTopics = BagTopics(),
        pose_topic: str | None = None,
        slop_ms: float = 20.0,
        max_pose_gap_ms: float = 250.0,
        depth_scale: float = 0.001,
    ):
        if not slop_ms >= 0 or not max_pose_gap_ms > 0 or not depth_scale > 0:
            raise ValueError(
                f"need slop_ms >= 0, max_pose_gap_ms > 0, depth_scale > 0; got {slop_ms}, {max_pose_gap_ms}, "
                f"{depth_scale}"
            )
        self.path = Path(path)
        self.topics = topics
        self.slop_ns = int(slop_ms * 1e6)
        self.max_pose_gap_ns = int(max_pose_gap_ms * 1e6)
        self.depth_scale = float(depth_scale)
        self.skipped = 0
        with reading(self.path) as reader:
            self._index(reader, pose_topic)

    # index ------------------------------------------------------------------------------------
    def _connection(self, reader: Reader, topic: str, types: tuple[str, ...]):
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            have = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
            raise ValueError(f"{self.path}: topic {topic} is missing; the bag has {have}")
        if conns[0].msgtype not in types:
            raise ValueError(f"{self.path}: topic {topic} has type {conns[0].msgtype}, expected {' or '.join(types)}")
        return conns

    def _index(self, reader: Reader, pose_topic: str | None) -> None:
        ts = typestore()
        t = self.topics
        if pose_topic is None:
            have = {c.topic for c in reader.connections}
            pose_topic = t.pose if t.pose in have or t.odom not in have else t.odom
        self.pose_topic = pose_topic
        color_c = self._connection(reader, t.color, (IMAGE,))
        depth_c = self._connection(reader, t.depth, (IMAGE,))
        info_c = self._connection(reader, t.camera_info, (CAMERA_INFO,))
        pose_c = self._connection(reader, pose_topic, POSE_TYPES)
        self._color_conns, self._depth_conns = color_c, depth_c
        color_st, depth_st, info, pose_st, pose_T = [], [], [], [], []
        enc_checked = set()
        for c, _, raw in reader.messages(connections=color_c + depth_c + info_c + pose_c):
            if c.topic in (t.color, t.depth):
                (color_st if c.topic == t.color else depth_st).append(header_stamp_ns(raw))
                if c.topic not in enc_checked:
                    self._check_encoding(c.topic, ts.deserialize_cdr(raw, c.msgtype).encoding)
                    enc_checked.add(c.topic)
            elif c.topic == t.camera_info:
                m = ts.deserialize_cdr(raw, c.msgtype)
                K = np.asarray(m.k, dtype=np.float64).reshape(3, 3)
                try:
                    intr = Intrinsics.from_K(K, int(m.width), int(m.height))
                except ValueError as exc:
                    raise ValueError(f"{self.path}: {t.camera_info} has unusable intrinsics: {exc}") from exc
                info.append((header_stamp_ns(raw), intr))
            else:
                m = ts.deserialize_cdr(raw, c.msgtype)
                pose = m.pose.pose if hasattr(m.pose, "pose") else m.pose
                p, q = pose.position, pose.orientation
                pose_st.append(header_stamp_ns(raw))
                pose_T.append(matrix_from_pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)))
        for topic, st in ((t.color, color_st), (t.depth, depth_st), (t.camera_info, info), (pose_topic, pose_st)):
            if not st:
                raise ValueError(f"{self.path}: topic {topic} has no messages")
        self._plan = self._synchronise(
            np.array(color_st), np.array(depth_st), info, np.array(pose_st), np.array(pose_T)
        )

    def _check_encoding(self, topic: str, encoding: str) -> None:
        allowed = COLOR_ENCODINGS if topic == self.topics.color else DEPTH_ENCODINGS
        if encoding not in allowed:
            raise ValueError(f"{self.path}: topic {topic} has encoding {encoding!r}; expected one of {allowed}")

    def _synchronise(self, color_st, depth_st, info, pose_st, pose_T) -> list[_Planned]:
        def nearest(sorted_st, q):
            i = (
                np.clip(np.searchsorted(sorted_st, q), 1, len(sorted_st) - 1)
                if len(sorted_st) > 1
                else np.zeros(len(q), int)
            )
            if len(sorted_st) > 1:
                i = np.where(np.abs(sorted_st[i - 1] - q) <= np.abs(sorted_st[i] - q), i - 1, i)
            return i, np.abs(sorted_st[i] - q)

        d_order = np.argsort(depth_st, kind="stable")
        di, d_err = nearest(depth_st[d_order], color_st)
        info_st = np.array([s for s, _ in info])
        i_order = np.argsort(info_st, kind="stable")
        ii, i_err = nearest(info_st[i_order], color_st)
        p_order = np.argsort(pose_st, kind="stable")
        T, ok = interpolate_poses(pose_st[p_order], pose_T[p_order], color_st, self.max_pose_gap_ns, self.slop_ns)
        good = (d_err <= self.slop_ns) & (i_err <= self.slop_ns) & ok
        self.skipped = int(np.count_nonzero(~good))
        if not good.any():
            raise ValueError(
                f"{self.path}: streams are not synchronised within {self.slop_ns / 1e6:.1f} ms: median |colour-depth| "
                f"{np.median(d_err) / 1e6:.1f} ms, |colour-camera_info| {np.median(i_err) / 1e6:.1f} ms, "
                f"{np.count_nonzero(ok)} of {len(color_st)} colour stamps inside the pose stream {self.pose_topic}"
            )
        if self.skipped:
            log.warning(
                "%s: %d of %d colour images have no depth/camera_info/pose partner within %.1f ms; skipped",
                self.path,
                self.skipped,
                len(color_st),
                self.slop_ns / 1e6,
            )
        plan = [
            _Planned(int(k), int(d_order[di[k]]), int(color_st[k]), info[i_order[ii[k]]][1], T[k])
            for k in np.nonzero(good)[0]
        ]
        plan.sort(key=lambda p: p.stamp_ns)
        return plan

    # iteration --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._plan)

    @property
    def stamps_ns(self) -> np.ndarray:
        return np.array([p.stamp_ns for p in self._plan], dtype=np.int64)

    def __iter__(self) -> Iterator[Frame]:
        want_c = {p.color_idx: p for p in self._plan}
        want_d = {p.depth_idx for p in self._plan}
        pending_c: dict[int, np.ndarray] = {}
        pending_d: dict[int, np.ndarray] = {}
        next_i = 0
        ts = typestore()
        reader = open_reader(self.path)
        try:
            ci = di = -1
            for c, _, raw in reader.messages(connections=self._color_conns + self._depth_conns):
                m = None
                if c.topic == self.topics.color:
                    ci += 1
                    if ci in want_c:
                        m = ts.deserialize_cdr(raw, c.msgtype)
                        self._check_encoding(c.topic, m.encoding)
                        pending_c[ci] = to_rgb8(m.encoding, self._decode(c.topic, m))
                else:
                    di += 1
                    if di in want_d:
                        m = ts.deserialize_cdr(raw, c.msgtype)
                        self._check_encoding(c.topic, m.encoding)
                        pending_d[di] = to_depth_m(m.encoding, self._decode(c.topic, m), self.depth_scale)
                while next_i < len(self._plan):
                    p = self._plan[next_i]
                    if p.color_idx not in pending_c or p.depth_idx not in pending_d:
                        break
                    yield self._frame(p, next_i, pending_c.pop(p.color_idx), pending_d[p.depth_idx])
                    if all(q.depth_idx != p.depth_idx for q in self._plan[next_i + 1 : next_i + 4]):
                        pending_d.pop(p.depth_idx, None)
                    next_i += 1
        except (ValueError, FileNotFoundError):
            raise
        except (sqlite3.DatabaseError, Exception) as exc:
            raise ValueError(f"{self.path}: damaged bag while reading messages ({type(exc).__name__}: {exc})") from exc
        finally:
            reader.close()
        if next_i < len(self._plan):
            raise ValueError(f"{self.path}: bag ended after {next_i} of {len(self._plan)} indexed frames (truncated?)")

    def _decode(self, topic: str, m) -> np.ndarray:
        try:
            return decode_image(m.encoding, m.height, m.width, m.step, bool(m.is_bigendian), m.data)
        except ValueError as exc:
            raise ValueError(f"{self.path}: topic {topic}: {exc}") from exc

    def _frame(self, p: _Planned, index: int, rgb: np.ndarray, depth: np.ndarray) -> Frame:
        if rgb.shape[:2] != depth.shape or depth.shape != (p.intrinsics.height, p.intrinsics.width):
            raise ValueError(
                f"{self.path}: colour {rgb.shape[1]}x{rgb.shape[0]}, depth {depth.shape[1]}x{depth.shape[0]} and "
                f"camera_info "
                f"{p.intrinsics.width}x{p.intrinsics.height} differ; depth must be aligned to colour "
                f"({self.topics.depth})"
            )
        return Frame(
            rgb=rgb,
            depth_m=depth,
            intrinsics=p.intrinsics,
            T_world_cam=p.T_world_cam.copy(),
            stamp_ns=p.stamp_ns,
            index=index,
        ).validate()
