"""Mapper node: colour + depth + camera_info + pose in, a fused language map out (PointCloud2 and MapStatus).

Callbacks only decode and hand over: the MappingPipeline's workers do fusion, semantics and training, and a
busy pipeline drops frames (counted in MapStatus.frames_dropped) instead of queueing them without bound. A bad
message is logged, counted and skipped; it never stops the node.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from lang3d_ros.mapping.build import build_stack, ground_truth_tables
from lang3d_ros.mapping.pipeline import combine_intake_status
from lang3d_ros.mapping.sync import FrameAssembler
from lang3d_ros.ros import conversions as cv
from lang3d_ros.ros.lifecycle import Lang3DLifecycleNode

COLOUR = "colour image"
LIVE_DDS_PROFILE = "config/fastdds_live.xml"


def sensor_qos(depth: int, reliability: str = "best_effort") -> QoSProfile:
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        durability=DurabilityPolicy.VOLATILE,
    )


def mount_matrix(xyz_rpy) -> np.ndarray:
    v = np.asarray(xyz_rpy, dtype=np.float64)
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        raise ValueError(f"camera_mount_xyz_rpy must be 6 finite numbers, got {list(xyz_rpy)}")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", v[3:]).as_matrix()
    T[:3, 3] = v[:3]
    return T


def intake_summary(st: dict) -> str:
    """One log line: what became of every colour image received and of the depth and pose messages, by reason
    (the same counts as MapStatus and /diagnostics)."""

    def reasons(d: dict) -> str:
        return f" ({', '.join(f'{k}: {v}' for k, v in sorted(d.items(), key=lambda kv: -kv[1]))})" if d else ""

    line = (
        f"intake: {st.get('frames_received', 0)} colour images: {st.get('frames_fused', 0)} fused, "
        f"{st.get('frames_dropped', 0)} dropped{reasons(st.get('drop_reasons', {}))}, "
        f"{st.get('frames_rejected', 0)} rejected{reasons(st.get('reject_reasons', {}))}, "
        f"{st.get('frames_pending', 0)} pending; {st.get('depth_received', 0)} depth images"
        f"{reasons(st.get('depth_dropped', {}))}, {st.get('poses_received', 0)} poses"
        f"{reasons(st.get('poses_rejected', {}))}"
    )
    if st.get("keyframes_without_semantics"):
        line += f"; {st['keyframes_without_semantics']} keyframes fused without semantics (semantics queue full)"
    if any(st.get("lost_in_transport", {}).values()):
        line += f"; lost in transport, never received (DDS message-lost events){reasons(st['lost_in_transport'])}"
    return line


class MapperNode(Lang3DLifecycleNode):
    """Lifecycle mapper: configure builds the models and the map, activate subscribes and starts the workers,
    deactivate unsubscribes (the map stays), cleanup frees (see lang3d_ros.ros.lifecycle)."""

    live = True

    def __init__(self, node_name: str = "lang3d_mapper", **kwargs):
        super().__init__(node_name, **kwargs)
        self.stack = None
        self.pipeline = None
        self.assembler = None
        self.rejected: Counter = Counter()
        self._last_warn: dict[str, float] = {}
        self._subs: list = []
        self.lost_in_transport: Counter = Counter()
        self._tf = None
        # The assembler is not thread-safe: every sensor callback and status reader holds this lock while it uses it
        # (a few list operations and the hand-over; messages are decoded before, outside it; never a wait on the
        # map). Each sensor stream has its own callback
        # group (_start_intake): with one group for all of them, rclpy's executor leaves every stream of a busy
        # group out of its wait set and, when the group frees, serves the ready streams in creation order (a
        # replay's poses came up to 3.7 s after their images). What it cannot do: keep a stream on time; with a
        # group per stream poses still came up to 3.1 s late under load, in bursts (likely a reliable DDS reader
        # holding later samples until a lost one is repaired), so mapping.sync.pose_wait_s must cover that where
        # no frame may be lost (config/synthetic.yaml for replays).
        self._intake_lock = threading.Lock()
        self._workers_running = False

    def _configure_map(self, cfg) -> None:
        gt = {}
        if cfg.semantics.backend == "ground_truth":
            from lang3d_ros.datasets.synthetic import load_ground_truth

            if not cfg.ros.ground_truth_file:
                raise ValueError("semantics.backend ground_truth needs ros.ground_truth_file (synthetic scenes only)")
            truth = load_ground_truth(cfg.ros.ground_truth_file)
            gt = dict(ground_truth_tables(truth), scene=truth.regenerate_scene())
        self.stack = build_stack(cfg, start=False, **gt)
        self.pipeline = self.stack.pipeline
        self.language_map = self.stack.language_map
        use_odom = bool(cfg.ros.odom_topic)
        T_robot_cam = mount_matrix(cfg.ros.camera_mount_xyz_rpy) if use_odom else None
        self.assembler = FrameAssembler(cfg.mapping.sync, T_robot_cam)
        self.rejected = Counter()
        self.lost_in_transport = Counter()

    def _start_intake(self) -> None:
        cfg = self.config
        self.pipeline.start()
        trainer = self.pipeline.trainer
        if trainer is not None and hasattr(trainer, "start"):
            trainer.start()
        self._workers_running = True
        qos = sensor_qos(cfg.ros.sensor_qos_depth, cfg.ros.sensor_qos_reliability)
        pose_qos = sensor_qos(cfg.ros.pose_qos_depth, cfg.ros.sensor_qos_reliability)
        streams = [
            (Image, cfg.ros.color_topic, self._on_color, qos),
            (Image, cfg.ros.depth_topic, self._on_depth, qos),
            (CameraInfo, cfg.ros.camera_info_topic, self._on_info, qos),
        ]
        if cfg.ros.pose_topic:
            streams.append((PoseStamped, cfg.ros.pose_topic, self._on_pose, pose_qos))
        if cfg.ros.odom_topic:
            streams.append((Odometry, cfg.ros.odom_topic, self._on_odom, pose_qos))
        # one group per stream: a stream's messages in order, one at a time, and no stream kept waiting by another;
        # the middleware's message-lost events (samples that never reached this node) are counted per stream
        self._subs = [
            self.create_subscription(
                t,
                topic,
                fn,
                q,
                callback_group=MutuallyExclusiveCallbackGroup(),
                event_callbacks=SubscriptionEventCallbacks(message_lost=self._lost_counter(what)),
            )
            for (t, topic, fn, q), what in zip(streams, self._stream_names(cfg))
        ]
        if cfg.ros.use_tf and self._tf is None:
            self._tf = self._make_tf()
        self.get_logger().info(
            f"mapping {cfg.ros.color_topic} + {cfg.ros.depth_topic} with poses from "
            f"{cfg.ros.pose_topic or cfg.ros.odom_topic or 'TF'}; semantics: {cfg.semantics.backend}"
        )

    def _stop_intake(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self.pipeline is not None and self._workers_running:
            self._workers_running = False
            self.pipeline.stop()  # the stop marker queues behind the frames already handed over
            trainer = self.pipeline.trainer
            if trainer is not None and hasattr(trainer, "stop"):
                trainer.stop()
            try:
                self.get_logger().info(intake_summary(self.status()))
            except Exception as exc:
                self.get_logger().error(f"intake summary failed: {exc!r}")

    def _create_outputs(self) -> None:
        cfg = self.config.ros
        self.status_pub = self.create_publisher(self._status_type(), cfg.status_topic, 10)
        self.cloud_pub = self.create_publisher(PointCloud2, cfg.cloud_topic, 1)
        self._pubs += [self.status_pub, self.cloud_pub]
        self._timers.append(
            self.create_timer(cfg.status_period_s, self._publish_status, callback_group=self._timer_group)
        )
        if cfg.cloud_period_s > 0:
            self._timers.append(
                self.create_timer(cfg.cloud_period_s, self._publish_cloud, callback_group=self._timer_group)
            )

    def _release(self) -> None:
        self.stack = self.pipeline = self.assembler = None
        self._tf = None

    @staticmethod
    def _status_type():
        from lang3d_ros.msg import MapStatus

        return MapStatus

    def _make_tf(self):
        try:
            import tf2_ros
        except ImportError:
            self.get_logger().warning("ros.use_tf is set but tf2_ros is not installed: poses come only from topics")
            return None
        buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(buffer, self)
        return buffer

    # ------------------------------------------------------------------------------ input
    def _warn_throttled(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) > 5.0:  # one line per reason every 5 s
            self._last_warn[key] = now
            self.get_logger().warning(text)

    def _reject(self, what: str, reason: str) -> None:
        key = f"{what}: {reason}"[:120]
        self.rejected[key] += 1
        self._warn_throttled(key, f"rejected {what} ({self.rejected[key]} so far): {reason}")

    def _guard(self, what: str, decode, apply, msg) -> None:
        """``decode(msg)`` (conversions only, outside the intake lock, so streams decode in parallel and no stream
        waits for another's image copy), then ``apply(decoded)`` under the lock (the assembler and the hand-over).
        A ValueError from either is a rejected message with its reason; anything else is logged too."""
        try:
            item = decode(msg)
            with self._intake_lock:
                apply(item)
        except ValueError as exc:
            self._reject(what, str(exc))
        except Exception as exc:  # never let one message take the node down
            self._reject(what, f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"unexpected error on {what}: {exc!r}")

    @staticmethod
    def _stream_names(cfg) -> list[str]:
        """The names of the streams _start_intake subscribes to, in its order (as the rejects and logs name them)."""
        names = [COLOUR, "depth image", "camera_info"]
        return names + ["pose"] * bool(cfg.ros.pose_topic) + ["odometry"] * bool(cfg.ros.odom_topic)

    def _lost_counter(self, what: str):
        def on_lost(event) -> None:
            self.on_messages_lost(what, int(event.total_count_change))

        return on_lost

    def on_messages_lost(self, what: str, n: int) -> None:
        """The middleware reports ``n`` messages of stream ``what`` that never reached this node (e.g. a best-effort
        sample whose shared-memory buffer the publisher reused before this process read it): counted in
        ``lost_in_transport`` and warned about (once every 5 s per stream). What it cannot do: see samples that a
        full subscription history (ros.sensor_qos_depth, ros.pose_qos_depth) overwrote, or losses a middleware does
        not report."""
        if n <= 0:
            return
        with self._intake_lock:
            self.lost_in_transport[what] += n
            total = self.lost_in_transport[what]
        self._warn_throttled(
            f"lost: {what}",
            f"{total} {what} message(s) lost in transport so far (never received; best-effort DDS). Under CPU load "
            f"a publisher on this host with Fast DDS's default 512 KiB shared-memory segment reuses its buffers "
            f"before they are read: start the camera driver with FASTRTPS_DEFAULT_PROFILES_FILE={LIVE_DDS_PROFILE}",
        )

    def _on_info(self, msg: CameraInfo) -> None:
        # a change mid-stream is counted (camera_info_changes) and warned about by the assembler
        self._guard("camera_info", cv.camera_info_to_intrinsics, lambda K: self.assembler.add_intrinsics(K), msg)

    def _on_color(self, msg: Image) -> None:
        rx = time.monotonic_ns()  # arrival (before waiting for the intake lock): see FrameAssembler.add_pose

        def apply(item):
            m, stamp, rgb = item
            if self._tf is not None:  # before add_color: an image refused here is counted once, as a colour reject
                self._lookup_camera_pose(m.header.frame_id, m.header.stamp, stamp, rx)
            self.assembler.add_color(stamp, rgb, rx)
            self._drain(stamp)

        self._guard(COLOUR, lambda m: (m, cv.stamp_to_ns(m.header.stamp), cv.image_to_rgb8(m)), apply, msg)

    def _on_depth(self, msg: Image) -> None:
        rx = time.monotonic_ns()

        def decode(m):
            return cv.stamp_to_ns(m.header.stamp), cv.image_to_depth_m(m, self.config.ros.depth_scale_m)

        def apply(item):
            stamp, depth_m = item
            self.assembler.add_depth(stamp, depth_m, rx)
            self._drain(stamp)

        self._guard("depth image", decode, apply, msg)

    def _pose_in_map(self, what: str, T, frame: str, stamp: int):
        if frame and frame != self.config.frames.map_frame:
            raise ValueError(f"{what} is in frame {frame!r}, expected the map frame {self.config.frames.map_frame!r}")
        return stamp, T

    def _apply_pose(self, rx: int, item) -> None:
        stamp, T = item
        self.assembler.add_pose(stamp, T, rx)  # a stale / future / jumping pose is counted and logged there
        self._drain(stamp)

    def _on_pose(self, msg: PoseStamped) -> None:
        rx = time.monotonic_ns()

        def decode(m):
            T, frame, stamp = cv.pose_stamped_to_matrix(m)
            return self._pose_in_map("pose", T, frame, stamp)

        self._guard("pose", decode, lambda item: self._apply_pose(rx, item), msg)

    def _on_odom(self, msg: Odometry) -> None:
        rx = time.monotonic_ns()

        def decode(m):
            T, frame, _child, stamp = cv.odometry_to_matrix(m)
            return self._pose_in_map("odometry", T, frame, stamp)

        self._guard("odometry", decode, lambda item: self._apply_pose(rx, item), msg)

    def _lookup_camera_pose(self, camera_frame: str, stamp_msg, stamp_ns: int, received_ns: int | None = None) -> None:
        from rclpy.time import Time

        frame = self.config.frames.camera_frame or camera_frame
        try:
            tf = self._tf.lookup_transform(self.config.frames.map_frame, frame, Time.from_msg(stamp_msg))
        except Exception as exc:  # tf2 raises its own exception types
            raise ValueError(f"no TF {self.config.frames.map_frame} <- {frame} at the image stamp: {exc}") from exc
        T, _, _, _ = cv.transform_stamped_to_matrix(tf)
        self.assembler.add_pose(stamp_ns, T, received_ns)

    def _drain(self, now_ns: int) -> None:
        for frame in self.assembler.pop_frames(now_ns):
            self.pipeline.submit(frame)

    # ----------------------------------------------------------------------------- output
    def status(self) -> dict:
        """MapStatus fields: the pipeline's and the assembler's counters combined (``combine_intake_status``), so
        frames_received (colour images) = frames_fused + frames_dropped + frames_rejected + frames_pending; colour
        images that could not be decoded are rejected frames, other refused messages are ``messages_rejected``."""
        if self.pipeline is None:
            return super().status()
        colour = {k: v for k, v in self.rejected.items() if k.startswith(COLOUR)}
        with self._intake_lock:  # a callback may be changing the assembler's counters
            intake = self.assembler.status()
            lost = {k: v for k, v in self.lost_in_transport.items() if v}
        st = combine_intake_status(self.pipeline.status(), intake, colour)
        st["lost_in_transport"] = lost
        others = {k: v for k, v in self.rejected.items() if not k.startswith(COLOUR)}
        st["messages_rejected"] = sum(others.values()) + sum(st.get("poses_rejected", {}).values())
        reasons = Counter(st.get("reject_reasons", {}))
        reasons.update(st.get("drop_reasons", {}))
        reasons.update(others)
        reasons.update(st.get("poses_rejected", {}))
        reasons.update({f"lost in transport: {k}": v for k, v in lost.items()})
        st["reasons"] = reasons
        st["queue_frames"] = self.pipeline._frames.qsize()
        st["queue_keyframes"] = self.pipeline._keyframes.qsize()
        return st

    def _publish_status(self) -> None:
        try:
            now = self.get_clock().now().nanoseconds
            self.status_pub.publish(cv.status_to_msg(self.status(), cv.make_header(self.config.frames.map_frame, now)))
        except Exception as exc:
            self.get_logger().error(f"status publishing failed: {exc!r}")

    def _publish_cloud(self) -> None:
        if self.cloud_pub.get_subscription_count() == 0:
            return
        lmap = self.stack.language_map
        with lmap.lock:
            xyz = lmap.points.points_xyz.cpu().numpy()
            rgb = lmap.points.colors.cpu().numpy()
        n_max = self.config.ros.cloud_max_points
        if len(xyz) > n_max:
            keep = np.random.default_rng(0).choice(len(xyz), n_max, replace=False)
            xyz, rgb = xyz[keep], rgb[keep]
        now = self.get_clock().now().nanoseconds
        header = cv.make_header(self.config.frames.map_frame, now)
        self.cloud_pub.publish(cv.points_to_pointcloud2(xyz, header, rgb=rgb))

    def destroy_node(self):
        self.finish("node destroyed")
        return super().destroy_node()
