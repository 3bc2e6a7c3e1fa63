"""Write Frames to a rosbag2 (MCAP or sqlite3) with ``rosbags``: colour, aligned depth, camera_info and
the camera pose (PoseStamped and/or nav_msgs/Odometry) on standard topics, Jazzy CDR.

Stamps: header stamps are the frames' stamps; the bag's receive time adds a small seeded latency
(3-12 ms). Poses come with each frame or, with ``pose_rate_hz``, resampled at their own rate (slerp
between frames). The bag is written to a hidden staging folder beside ``path`` and renamed into place
only when complete; on any error nothing is left behind. ``ground_truth.json`` goes inside the bag
folder when a scene is given (rosbag2 tools ignore files that metadata.yaml does not list).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.datasets.image_codec import encode_image
from lang3d_ros.datasets.poses import interpolate_poses
from lang3d_ros.datasets.rosbag.topics import CAMERA_INFO, IMAGE, ODOMETRY, POSE_STAMPED, BagTopics, typestore
from lang3d_ros.geometry.transforms import pose_from_matrix

log = logging.getLogger(__name__)
GROUND_TRUTH_NAME = "ground_truth.json"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass
class BagSummary:
    path: Path
    n_frames: int
    message_counts: dict[str, int] = field(default_factory=dict)
    ground_truth: Path | None = None


class _Msgs:
    """Message builders over the Jazzy typestore."""

    def __init__(self, topics: BagTopics):
        self.ts = typestore()
        self.t = self.ts.types
        self.topics = topics

    def header(self, stamp_ns: int, frame_id: str):
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return self.t["std_msgs/msg/Header"](
            stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id
        )

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int) -> bytes:
        h, w, step, data = encode_image(array, encoding)
        msg = self.t[IMAGE](
            header=self.header(stamp_ns, self.topics.camera_frame_id),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=step,
            data=np.frombuffer(data, dtype=np.uint8),
        )
        return bytes(self.ts.serialize_cdr(msg, IMAGE))

    def camera_info(self, frame: Frame, stamp_ns: int) -> bytes:
        k = frame.intrinsics
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = self.t[CAMERA_INFO](
            header=self.header(stamp_ns, self.topics.camera_frame_id),
            height=k.height,
            width=k.width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k.K.reshape(-1).copy(),
            r=np.eye(3).reshape(-1),
            p=np.array([k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )
        return bytes(self.ts.serialize_cdr(msg, CAMERA_INFO))

    def pose(self, T: np.ndarray):
        p, q = pose_from_matrix(T)
        return self.t["geometry_msgs/msg/Pose"](
            position=self.t["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
            orientation=self.t["geometry_msgs/msg/Quaternion"](
                x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
            ),
        )

    def pose_stamped(self, T: np.ndarray, stamp_ns: int) -> bytes:
        msg = self.t[POSE_STAMPED](header=self.header(stamp_ns, self.topics.map_frame_id), pose=self.pose(T))
        return bytes(self.ts.serialize_cdr(msg, POSE_STAMPED))

    def odometry(self, T: np.ndarray, stamp_ns: int, v_cam: np.ndarray, w_cam: np.ndarray) -> bytes:
        vec = self.t["geometry_msgs/msg/Vector3"]
        twist = self.t["geometry_msgs/msg/Twist"](
            linear=vec(x=float(v_cam[0]), y=float(v_cam[1]), z=float(v_cam[2])),
            angular=vec(x=float(w_cam[0]), y=float(w_cam[1]), z=float(w_cam[2])),
        )
        msg = self.t[ODOMETRY](
            header=self.header(stamp_ns, self.topics.map_frame_id),
            child_frame_id=self.topics.camera_frame_id,
            pose=self.t["geometry_msgs/msg/PoseWithCovariance"](pose=self.pose(T), covariance=np.zeros(36)),
            twist=self.t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
        )
        return bytes(self.ts.serialize_cdr(msg, ODOMETRY))


def _velocity_cam(T0: np.ndarray, T1: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear and angular velocity of the camera, expressed in the camera frame (nav_msgs/Odometry twist)."""
    if dt_s <= 0:
        return np.zeros(3), np.zeros(3)
    from scipy.spatial.transform import Rotation

    R0 = T0[:3, :3]
    v = R0.T @ (T1[:3, 3] - T0[:3, 3]) / dt_s
    w = Rotation.from_matrix(R0.T @ T1[:3, :3]).as_rotvec() / dt_s
    return v, w


def _validate_args(storage, depth_encoding, pose_msg, pose_rate_hz):
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if depth_encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"depth_encoding must be '16UC1' (mm) or '32FC1' (m), got {depth_encoding!r}")
    if pose_msg not in ("pose", "odom", "both", "none"):
        raise ValueError(f"pose_msg must be 'pose', 'odom', 'both' or 'none', got {pose_msg!r}")
    if pose_rate_hz is not None and not (np.isfinite(pose_rate_hz) and pose_rate_hz > 0):
        raise ValueError(f"pose_rate_hz must be positive, got {pose_rate_hz}")


def _depth_array(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    d = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    if encoding == "16UC1":
        return np.where(valid, np.clip(np.round(d * 1000.0), 0, 65535), 0).astype(np.uint16)
    return np.where(valid, d, np.nan).astype(np.float32)  # REP 118: NaN = no return


def write_bag(
    frames: Iterable[Frame],
    path,
    storage: str = "mcap",
    depth_encoding: str = "16UC1",
    topics: BagTopics = BagTopics(),
    pose_msg: str = "pose",
    pose_rate_hz: float | None = None,
    scene=None,
    seed: int = 0,
    progress: bool = False,
    total: int | None = None,
) -> BagSummary:
    """Write ``frames`` (time order) to a new rosbag2 folder ``path``; returns what was written.

    scene: a SyntheticScene whose ground truth (objects, camera poses, stamps, intrinsics) is stored as
    ``path/ground_truth.json``. Raises ValueError when ``path`` exists, the arguments are invalid or a frame
    is bad (stamps not increasing, sizes changing); then no folder is left behind."""
    _validate_args(storage, depth_encoding, pose_msg, pose_rate_hz)
    path = Path(path)
    if path.exists():
        raise ValueError(f"{path} exists already; refusing to overwrite a bag")
    staging = path.parent / f".{path.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        summary = _write(
            frames,
            staging / path.name,
            storage,
            depth_encoding,
            topics,
            pose_msg,
            pose_rate_hz,
            scene,
            seed,
            progress,
            total,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.path = path
    log.info("wrote %d frames to %s (%s, depth %s)", summary.n_frames, path, storage, depth_encoding)
    if summary.ground_truth is not None:
        summary.ground_truth = path / GROUND_TRUTH_NAME
    return summary


def _write(
    frames, path, storage, depth_encoding, topics, pose_msg, pose_rate_hz, scene, seed, progress, total
) -> BagSummary:
    msgs = _Msgs(topics)
    rng = np.random.default_rng([int(seed), 3])
    counts: dict[str, int] = {}
    stamps, poses, intr = [], [], None
    writer = Writer(path, version=8, storage_plugin=STORAGES[storage])
    writer.open()
    try:
        conn = {
            "color": writer.add_connection(topics.color, IMAGE, typestore=msgs.ts),
            "depth": writer.add_connection(topics.depth, IMAGE, typestore=msgs.ts),
            "info": writer.add_connection(topics.camera_info, CAMERA_INFO, typestore=msgs.ts),
        }
        if pose_msg in ("pose", "both"):
            conn["pose"] = writer.add_connection(topics.pose, POSE_STAMPED, typestore=msgs.ts)
        if pose_msg in ("odom", "both"):
            conn["odom"] = writer.add_connection(topics.odom, ODOMETRY, typestore=msgs.ts)

        def put(key: str, stamp_ns: int, data: bytes) -> None:
            writer.write(conn[key], int(stamp_ns + rng.uniform(3e6, 12e6)), data)
            counts[conn[key].topic] = counts.get(conn[key].topic, 0) + 1

        def pose_stamps(t_from: int | None, t_to: int) -> np.ndarray:
            """Pose stamps in (t_from, t_to]: the frame's own stamp, or a grid at pose_rate_hz from the first frame."""
            if pose_rate_hz is None:
                return np.array([t_to], dtype=np.int64)
            period = 1e9 / pose_rate_hz
            k0 = 0 if t_from is None else int(np.floor((t_from - stamps[0]) / period)) + 1
            k1 = int(np.floor((t_to - stamps[0]) / period))
            q = (stamps[0] + np.round(np.arange(k0, k1 + 1) * period)).astype(np.int64)
            return q[(q <= t_to) & ((q > t_from) if t_from is not None else True)]

        def put_poses(q: np.ndarray) -> None:
            """Pose messages at stamps q, interpolated between the last two frames."""
            if "pose" not in conn and "odom" not in conn:
                return
            Ts, ok = interpolate_poses(np.asarray(stamps[-2:]), np.asarray(poses[-2:]), q, max_gap_ns=1 << 62)
            for s, T, good in zip(q, Ts, ok):
                if not good:
                    continue
                if "pose" in conn:
                    put("pose", s, msgs.pose_stamped(T, s))
                if "odom" in conn:
                    dt = (stamps[-1] - stamps[-2]) * 1e-9 if len(stamps) > 1 else 0.0
                    v, w = _velocity_cam(poses[-2], poses[-1], dt) if len(poses) > 1 else (np.zeros(3), np.zeros(3))
                    put("odom", s, msgs.odometry(T, s, v, w))

        it = tqdm(frames, total=total, desc="write bag", unit="frame", disable=not progress)
        for f in it:
            f.validate()
            if intr is None:
                intr = f.intrinsics
            elif f.intrinsics != intr:
                raise ValueError(f"frame {f.index}: intrinsics changed within the bag ({f.intrinsics} vs {intr})")
            if stamps and f.stamp_ns <= stamps[-1]:
                raise ValueError(f"frame {f.index}: stamp {f.stamp_ns} ns is not after the previous {stamps[-1]} ns")
            stamps.append(int(f.stamp_ns))
            poses.append(np.asarray(f.T_world_cam, dtype=np.float64))
            put_poses(pose_stamps(stamps[-2] if len(stamps) > 1 else None, stamps[-1]))
            put("info", f.stamp_ns, msgs.camera_info(f, f.stamp_ns))
            put("color", f.stamp_ns, msgs.image(f.rgb, "rgb8", f.stamp_ns))
            put("depth", f.stamp_ns, msgs.image(_depth_array(f.depth_m, depth_encoding), depth_encoding, f.stamp_ns))
        if not stamps:
            raise ValueError("no frames to write")
        if pose_rate_hz is not None and len(stamps) > 1:  # close the pose stream at the last image
            grid = pose_stamps(stamps[-2], stamps[-1])
            if not len(grid) or grid[-1] < stamps[-1]:
                put_poses(np.array([stamps[-1]], dtype=np.int64))
    finally:
        writer.close()
    gt = None
    if scene is not None:
        gt = scene.save_ground_truth(path / "ground_truth.json", np.stack(poses), np.asarray(stamps), intr)
    return BagSummary(path=path, n_frames=len(stamps), message_counts=counts, ground_truth=gt)
