"""The lang3d services (Ground, Navigate, Ask, RenderRelevancy, SaveMap, LoadMap, GetMapStatus) on a LanguageMap,
attached to a node.

Every handler answers: success, message and an ``error_code`` (lang3d_ros.errors.ErrorCode, repeated as the
``ERROR_*`` constants of every srv) are always set; no exception leaves a callback. Map files go through the map
folder policy; to a client "not allowed", "not found" and "not a map" are one IO_ERROR answer, the details go to
the log. A failed LoadMap leaves the served map and its status as they were.

Threads: the services are created in three mutually exclusive callback groups (queries, map files, status), so at
most one query runs at a time and a multi-threaded executor always keeps a thread for sensor callbacks; requests
wait in a reliable queue of ``ros.service_qos_depth``. What it cannot do: bound the time of one query (a first
query after a large map change recomputes relevancy and the occupancy grid).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.service import Service
from visualization_msgs.msg import MarkerArray

from lang3d_ros.errors import ErrorCode, Lang3DError, error_code_of
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.llm.frontend import check_query
from lang3d_ros.mapping.language_map import LanguageMap
from lang3d_ros.mapping.queries import QueryEngine
from lang3d_ros.ros import conversions as cv

MAP_SUFFIX = ".l3dmap"


def text_field(value: str) -> str:
    """Service strings arrive as str; refuse what could not be valid UTF-8 text (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"text is not valid UTF-8 ({exc.reason})") from exc
    return value


def service_qos(depth: int) -> QoSProfile:
    """Reliable, volatile, KEEP_LAST ``depth``: the request queue of a service (the rmw default is 10)."""
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    return QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class MapFiles:
    """Where SaveMap may write and LoadMap may read: ``lang3d_ros.mapstore.MapFolder`` on ``ros.map_dir``. Every
    refusal and every failed read or write is a Lang3DError(IO_ERROR) with the folder's one client-facing message;
    the reason (real paths) goes to ``log``."""

    def __init__(self, map_dir: str, log: Callable[[str], None]):
        from lang3d_ros.mapstore import MapFolder

        self.folder = MapFolder(os.path.expanduser(map_dir))
        self._log = log

    def refused(self, what: str, name: str, exc: BaseException) -> Lang3DError:
        from lang3d_ros.mapstore.folder import CLIENT_MESSAGE

        self._log(f"{what} {name!r} refused: {getattr(exc, 'detail', None) or exc}")
        return Lang3DError(ErrorCode.IO_ERROR, CLIENT_MESSAGE.format(name=str(name)[:200]))

    def for_write(self, name: str) -> Path:
        if not name:
            name = time.strftime("lang3d_%Y%m%d_%H%M%S") + MAP_SUFFIX
        try:
            return Path(self.folder.for_write(name))
        except (ValueError, OSError) as exc:
            raise self.refused("SaveMap", name, exc) from exc

    def for_read(self, name: str) -> Path:
        try:
            return Path(self.folder.for_read(name))
        except (ValueError, OSError) as exc:
            raise self.refused("LoadMap", name, exc) from exc


class QueryServices:
    """The services and answer topics of one node (the mapper's live map or a served file).

    ``create()`` makes the services and publishers (lifecycle activate), ``destroy()`` removes them (deactivate);
    the map, the query engine and its caches live as long as this object.
    """

    def __init__(
        self, node, language_map: LanguageMap, config, status_fn: Callable[[], dict] | None = None, live: bool = False
    ):
        self.node = node
        self.config = cfg = config
        self.map = language_map
        self.engine = QueryEngine(cfg, language_map)
        self._status_fn = status_fn
        self.live = live
        self.robot_pose = (0.0, 0.0, 0.0)
        self.calls = {"ok": 0, "failed": 0}
        self.files = MapFiles(cfg.ros.map_dir, node.get_logger().warning)
        self._entities: list = []
        self.navigate_hook: Callable | None = None
        """Optional ``hook(goal: PoseStamped, res) -> None`` run after a successful Navigate (Nav2 handoff)."""
        self._llm_thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- lifecycle
    def create(self) -> None:
        if self._entities:
            return
        from lang3d_ros.srv import Ask, GetMapStatus, Ground, LoadMap, Navigate, RenderRelevancy, SaveMap

        cfg, node = self.config, self.node
        queries, files, status = (MutuallyExclusiveCallbackGroup() for _ in range(3))
        qos = service_qos(cfg.ros.service_qos_depth)
        for srv_type, name, fn, group in (
            (Ground, "ground", self._ground, queries),
            (Navigate, "navigate", self._navigate, queries),
            (Ask, "ask", self._ask, queries),
            (RenderRelevancy, "render_relevancy", self._render_relevancy, queries),
            (SaveMap, "save_map", self._save, files),
            (LoadMap, "load_map", self._load, files),
            (GetMapStatus, "get_map_status", self._status, status),
        ):
            self._entities.append(
                node.create_service(srv_type, f"lang3d/{name}", fn, qos_profile=qos, callback_group=group)
            )
        self.markers_pub = node.create_publisher(MarkerArray, cfg.ros.markers_topic, latched_qos())
        self.grid_pub = node.create_publisher(OccupancyGrid, cfg.ros.grid_topic, latched_qos())
        self.path_pub = node.create_publisher(PathMsg, cfg.ros.path_topic, latched_qos())
        self.goal_pub = node.create_publisher(PoseStamped, cfg.ros.goal_topic, latched_qos())
        self._entities += [self.markers_pub, self.grid_pub, self.path_pub, self.goal_pub]
        if cfg.ros.odom_topic:
            self._entities.append(
                node.create_subscription(Odometry, cfg.ros.odom_topic, self._on_odom, 10, callback_group=status)
            )
        if cfg.llm.mode != "parser_only" and cfg.ros.llm_preload and self._llm_thread is None:
            self._llm_thread = threading.Thread(target=self._load_llm, name="lang3d-llm-load", daemon=True)
            self._llm_thread.start()
        node.get_logger().info(
            "services ready: lang3d/{ground,navigate,ask,render_relevancy,save_map,load_map,get_map_status}"
        )

    def destroy(self) -> None:
        for e in self._entities:
            if isinstance(e, Service):
                self.node.destroy_service(e)
            elif isinstance(e, Publisher):
                self.node.destroy_publisher(e)
            else:
                self.node.destroy_subscription(e)
        self._entities = []

    # -------------------------------------------------------------------------------- helpers
    def _load_llm(self) -> None:
        from lang3d_ros.llm import Reasoner, make_backend

        t0 = time.monotonic()
        log = self.node.get_logger()
        try:
            backend = make_backend(self.config.llm)
            self.engine.set_reasoner(Reasoner(self.config.llm, backend=backend, encoder=self.map.text_encoder))
            self.model_status = "loaded"
            log.info(f"3D-LLM backend {self.config.llm.backend} ready in {time.monotonic() - t0:.1f} s")
        except Exception as exc:
            self.model_status = f"fallback (parser): {exc}"[:200]
            log.warning(f"3D-LLM backend {self.config.llm.backend} unavailable ({exc}); the parser answers")

    model_status: str = "parser only"
    """3D-LLM state for /diagnostics: "parser only", "loaded" or "fallback (parser): <why>"."""

    def _header(self):
        return cv.make_header(self.config.frames.map_frame, self.node.get_clock().now().nanoseconds)

    def _on_odom(self, msg: Odometry) -> None:
        try:
            T, _, _, _ = cv.odometry_to_matrix(msg)
            self.robot_pose = (float(T[0, 3]), float(T[1, 3]), float(np.arctan2(T[1, 0], T[0, 0])))
        except ValueError as exc:  # keep the last good pose; say why this one was refused
            self.node.get_logger().warning(
                f"odometry refused, keeping the last robot pose: {exc}", throttle_duration_sec=5.0
            )

    def _pose_from(self, ps: PoseStamped) -> tuple[float, float, float]:
        if not ps.header.frame_id:
            return self.robot_pose
        if ps.header.frame_id != self.config.frames.map_frame:
            raise Lang3DError(
                ErrorCode.BAD_REQUEST,
                f"pose is in frame {ps.header.frame_id!r}; give it in {self.config.frames.map_frame!r}",
            )
        T = cv.pose_to_matrix(ps.pose)
        return float(T[0, 3]), float(T[1, 3]), float(np.arctan2(T[1, 0], T[0, 0]))

    def _require_map(self) -> None:
        if self.map.num_points == 0:
            raise Lang3DError(ErrorCode.NO_MAP, "the map is empty: no frame has been fused yet")

    def _answer(self, name: str, res, fn):
        """Run fn(res); sets error_code (NONE unless fn set another); any error becomes success=false + code."""
        try:
            res.error_code = int(ErrorCode.NONE)
            fn(res)
            if not res.success and res.error_code == ErrorCode.NONE:
                res.error_code = int(ErrorCode.INTERNAL)
            self.calls["ok" if res.success else "failed"] += 1
        except ValueError as exc:
            res.success, res.message, res.error_code = False, str(exc), int(error_code_of(exc))
            self.calls["failed"] += 1
        except Exception as exc:
            code = error_code_of(exc)
            res.success, res.error_code = False, int(code)
            res.message = (
                f"internal error in {name}; the server log has the details"
                if code == ErrorCode.INTERNAL
                else f"{name} failed: {exc}"
            )
            self.calls["failed"] += 1
            self.node.get_logger().error(f"{name} failed: {traceback.format_exc()}")
        return res

    def _publish_objects(self, objects) -> None:
        labels = [f"{o.label or o.query} {o.score:.2f}" for o in objects]
        colors = [(0.1, 0.8, 0.2) if i == 0 else (0.9, 0.7, 0.1) for i in range(len(objects))]
        self.markers_pub.publish(cv.boxes_to_marker_array([o.box for o in objects], self._header(), labels, colors))

    # -------------------------------------------------------------------------------- services
    def _ground(self, req, res):
        def run(res):
            query = check_query(text_field(req.query))
            if req.level and req.level not in LEVELS:
                raise Lang3DError(
                    ErrorCode.BAD_REQUEST, f"unknown level {req.level!r}: use '' (best), {', '.join(LEVELS)}"
                )
            if not np.isfinite(req.min_score) or req.min_score < 0 or req.min_score > 1:
                raise Lang3DError(ErrorCode.BAD_REQUEST, f"min_score must be in [0, 1], got {req.min_score}")
            self._require_map()
            out = self.engine.ground(query, int(req.max_results), float(req.min_score), req.level, self.robot_pose)
            hdr = self._header()
            res.objects = [cv.scene_object_to_msg(o, hdr) for o in out.objects]
            res.answered_by, res.latency_ms, res.message = str(out.answered_by), float(out.latency_ms), out.message
            res.success = bool(out.objects)
            if out.objects:
                self._publish_objects(out.objects)
            else:
                res.error_code = int(ErrorCode.NOT_FOUND)

        return self._answer("ground", res, run)

    def _navigate(self, req, res):
        def run(res):
            start = self._pose_from(req.start)
            if not np.isfinite(req.standoff_m):
                raise Lang3DError(ErrorCode.BAD_REQUEST, "standoff_m must be finite")
            instruction = check_query(text_field(req.instruction))
            self._require_map()
            out = self.engine.navigate(instruction, float(req.standoff_m), start)
            hdr = self._header()
            res.success, res.message = out.success, out.message
            if out.target is not None:
                res.target = cv.scene_object_to_msg(out.target, hdr)
                self._publish_objects([out.target])
            if out.grid is not None:
                f = out.grid.to_msg_fields()
                origin = (f["origin_position"][0], f["origin_position"][1], 0.0)
                self.grid_pub.publish(
                    cv.occupancy_grid_to_msg(f["resolution"], f["width"], f["height"], origin, f["data"], hdr)
                )
            if not out.success:
                res.error_code = int(ErrorCode.NOT_FOUND if out.target is None else ErrorCode.UNREACHABLE)
                return
            nav = out.navigation
            z = float(out.grid.floor_z_m) if out.grid is not None else 0.0
            res.goal = cv.planar_pose_stamped(
                *nav.goal_pose, frame_id=hdr.frame_id, stamp_ns=cv.stamp_to_ns(hdr.stamp), z=z
            )
            res.path = cv.path_to_msg(nav.path, hdr, z=z)
            res.path_length_m = float(nav.path_length_m)
            self.goal_pub.publish(res.goal)
            self.path_pub.publish(res.path)
            if self.navigate_hook is not None:
                self.navigate_hook(res.goal, res)

        return self._answer("navigate", res, run)

    def _ask(self, req, res):
        def run(res):
            question = check_query(text_field(req.question))
            pose = self._pose_from(req.robot_pose)
            self._require_map()
            ans = self.engine.ask(question, pose)
            hdr = self._header()
            res.success, res.answer, res.answered_by = True, ans.text, str(ans.path)
            res.objects = [cv.scene_object_to_msg(o, hdr) for o in ans.objects]
            if ans.objects:
                self._publish_objects(ans.objects)

        return self._answer("ask", res, run)

    def current_camera(self):
        """The live mapper's current camera: the last keyframe it fused (a Frame: T_world_cam, intrinsics, stamp), or
        None before the first one. Lang3DError(NOT_ALLOWED) on a server without a camera (serving a map file)."""
        pipeline = getattr(self.node, "pipeline", None)
        if not self.live or pipeline is None:
            raise Lang3DError(
                ErrorCode.NOT_ALLOWED,
                "this server has no camera (it serves a map file): give camera and camera_pose in the request",
            )
        return pipeline.selector.last

    def _render_camera(self, req):
        """-> (T_world_cam (4, 4), Intrinsics, image header, camera PoseStamped) of a RenderRelevancy request: the
        request's CameraInfo + optical-frame pose in the map frame, or the current camera when width = height = 0."""
        cam, map_frame = req.camera, self.config.frames.map_frame
        camera_frame = cam.header.frame_id or self.config.frames.camera_frame
        if int(cam.width) == 0 and int(cam.height) == 0:
            frame = self.current_camera()
            if frame is None:
                raise Lang3DError(ErrorCode.NO_MAP, "no current camera yet: the mapper has not fused a keyframe")
            T, K, stamp_ns = np.asarray(frame.T_world_cam, np.float64), frame.intrinsics, int(frame.stamp_ns)
        else:
            K = cv.camera_info_to_intrinsics(cam)  # ValueError (BAD_REQUEST): distortion, zero focal length, ...
            if req.camera_pose.header.frame_id != map_frame:
                raise Lang3DError(
                    ErrorCode.BAD_REQUEST,
                    f"camera_pose is in frame {req.camera_pose.header.frame_id!r}; give the optical frame's pose in "
                    f"{map_frame!r}",
                )
            T = cv.pose_to_matrix(req.camera_pose.pose)
            stamp_ns = cv.stamp_to_ns(cam.header.stamp) or cv.stamp_to_ns(req.camera_pose.header.stamp)
        stamp_ns = stamp_ns or self.node.get_clock().now().nanoseconds
        return T, K, cv.make_header(camera_frame, stamp_ns), cv.matrix_to_pose_stamped(T, map_frame, stamp_ns)

    def _render_relevancy(self, req, res):
        def run(res):
            from geometry_msgs.msg import Point, PointStamped

            from lang3d_ros.gaussians.relevancy_render import render_query_view

            query = check_query(text_field(req.query))
            if req.level and req.level not in LEVELS:
                raise Lang3DError(
                    ErrorCode.BAD_REQUEST, f"unknown level {req.level!r}: use '' (best), {', '.join(LEVELS)}"
                )
            if not np.isfinite(req.mask_threshold) or not 0.0 <= req.mask_threshold <= 1.0:
                raise Lang3DError(ErrorCode.BAD_REQUEST, f"mask_threshold must be in [0, 1], got {req.mask_threshold}")
            self._require_map()
            T, K, hdr, pose = self._render_camera(req)
            view = render_query_view(self.map, query, T, K, req.level, float(req.mask_threshold), int(req.max_results))
            res.relevancy = cv.numpy_to_image(view.relevancy, "32FC1", hdr)
            if req.want_mask:
                res.mask = cv.numpy_to_image(view.mask.astype(np.uint8) * 255, "mono8", hdr)
            res.mask_threshold = float(view.mask_threshold)
            res.camera_pose = pose
            res.target_in_view = view.target_in_view
            res.best_u, res.best_v = (int(x) for x in view.best_uv)
            res.best_score = float(view.best_score)
            map_hdr = cv.make_header(self.config.frames.map_frame, cv.stamp_to_ns(hdr.stamp))
            res.best_point = PointStamped(header=map_hdr)
            res.has_best_point = view.best_point_world is not None
            if res.has_best_point:
                x, y, z = (float(c) for c in view.best_point_world)
                res.best_point.point = Point(x=x, y=y, z=z)
            res.instance_ids = [int(i) for i in view.instance_ids]
            res.instance_scores = [float(x) for x in view.instance_scores]
            res.instance_pixels = [int(n) for n in view.instance_pixels]
            res.level_used, res.answered_by = view.level, view.answered_by
            res.latency_ms = float(view.latency_ms)
            res.success = True
            res.message = (
                f"{len(view.instance_ids)} of the answering instances in view"
                if view.target_in_view
                else "the answering instances are not in this view"
            )

        return self._answer("render_relevancy", res, run)

    def _save(self, req, res):
        def run(res):
            name = text_field(req.path).strip()
            path = self.files.for_write(name)
            try:
                res.size_bytes = int(self.map.save(path))
            except (OSError, ValueError) as exc:
                raise self.files.refused("SaveMap", name or path.name, exc) from exc
            res.success, res.path, res.message = True, str(path), f"saved {self.map.num_points} points"
            self.node.get_logger().info(f"saved {self.map.num_points} points to {path}")

        return self._answer("save_map", res, run)

    def _load(self, req, res):
        def run(res):
            res.status = cv.status_to_msg(self.status_dict(), self._header())  # a failure answers the current status
            if self.live:
                raise Lang3DError(
                    ErrorCode.NOT_ALLOWED,
                    "this server maps live; start the query server alone (ros.load_map) to serve a file",
                )
            name = text_field(req.path).strip()
            path = self.files.for_read(name)
            try:
                self.map.load(path)
            except (OSError, ValueError) as exc:
                raise self.files.refused("LoadMap", name, exc) from exc
            res.success, res.message = True, f"loaded {path}: {self.map.num_points} points"
            res.status = cv.status_to_msg(self.status_dict(), self._header())

        return self._answer("load_map", res, run)

    def status_dict(self) -> dict:
        if self._status_fn is not None:
            return self._status_fn()
        return {
            "source": self.map.source,
            "num_points": self.map.num_points,
            "memory_mb": self.map.memory_mb(),
            "training_state": "disabled",
        }

    def _status(self, req, res):
        def run(res):
            res.status = cv.status_to_msg(self.status_dict(), self._header())
            res.success = True

        return self._answer("get_map_status", res, run)
