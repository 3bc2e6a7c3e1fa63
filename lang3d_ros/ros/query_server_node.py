"""Query server node: Ground, Navigate, Ask, SaveMap, LoadMap and GetMapStatus on the live map (same process as
the mapper) or on a map file; answers also published as RViz markers, the goal, the path and the occupancy grid.

Every callback answers: bad input and internal errors become success=false with a message (never an exception
out of the callback). Callbacks run in a reentrant group, so services answer while mapping continues.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid, Odometry, Path as PathMsg
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.mapping.language_map import LanguageMap, check_query
from lang3d_ros.mapping.queries import QueryEngine
from lang3d_ros.ros import conversions as cv
from lang3d_ros.ros.params import declare_config


def _text(value: str) -> str:
    """Service strings arrive as str; refuse what could not be valid UTF-8 text (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid UTF-8 ({exc.reason})") from exc
    return value


class QueryServerNode(Node):
    def __init__(self, language_map: LanguageMap | None = None, config=None, status_fn=None,
                 node_name: str = "lang3d_query_server", **kwargs):
        """Live mode: pass the mapper's ``language_map``, ``config`` and ``status_fn``. Serving mode (no
        arguments): declares its parameters, builds an empty map and loads ``ros.load_map`` when set."""
        super().__init__(node_name, **kwargs)
        if config is None:
            config = declare_config(self)
        self.config = cfg = config
        if language_map is None:
            from lang3d_ros.semantics.backends import build_text_encoder

            language_map = LanguageMap(cfg, build_text_encoder(cfg.semantics), device=cfg.fusion.device)
            if cfg.ros.load_map:
                language_map.load(os.path.expanduser(cfg.ros.load_map))
                self.get_logger().info(f"serving {cfg.ros.load_map}: {language_map.num_points} points")
        self.map = language_map
        self.engine = QueryEngine(cfg, language_map)
        self._status_fn = status_fn
        self.robot_pose = (0.0, 0.0, 0.0)
        self.calls = {"ok": 0, "failed": 0}
        group = ReentrantCallbackGroup()
        from lang3d_ros.srv import Ask, GetMapStatus, Ground, LoadMap, Navigate, SaveMap

        self.create_service(Ground, "lang3d/ground", self._ground, callback_group=group)
        self.create_service(Navigate, "lang3d/navigate", self._navigate, callback_group=group)
        self.create_service(Ask, "lang3d/ask", self._ask, callback_group=group)
        self.create_service(SaveMap, "lang3d/save_map", self._save, callback_group=group)
        self.create_service(LoadMap, "lang3d/load_map", self._load, callback_group=group)
        self.create_service(GetMapStatus, "lang3d/get_map_status", self._status, callback_group=group)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
        self.markers_pub = self.create_publisher(MarkerArray, cfg.ros.markers_topic, latched)
        self.grid_pub = self.create_publisher(OccupancyGrid, cfg.ros.grid_topic, latched)
        self.path_pub = self.create_publisher(PathMsg, cfg.ros.path_topic, latched)
        self.goal_pub = self.create_publisher(PoseStamped, cfg.ros.goal_topic, latched)
        if cfg.ros.odom_topic:
            self.create_subscription(Odometry, cfg.ros.odom_topic, self._on_odom, 10, callback_group=group)
        if cfg.llm.mode != "parser_only" and cfg.ros.llm_preload:
            threading.Thread(target=self._load_llm, name="lang3d-llm-load", daemon=True).start()
        self.get_logger().info("services ready: lang3d/{ground,navigate,ask,save_map,load_map,get_map_status}")

    # -------------------------------------------------------------------------------- helpers
    def _load_llm(self) -> None:
        from lang3d_ros.llm import Reasoner, make_backend

        t0 = time.monotonic()
        try:
            backend = make_backend(self.config.llm)
            self.engine.set_reasoner(Reasoner(self.config.llm, backend=backend, encoder=self.map.text_encoder))
            self.get_logger().info(f"3D-LLM backend {self.config.llm.backend} ready in {time.monotonic() - t0:.1f} s")
        except Exception as exc:
            self.get_logger().warning(f"3D-LLM backend {self.config.llm.backend} unavailable ({exc}); the parser answers")

    def _header(self):
        return cv.make_header(self.config.frames.map_frame, self.get_clock().now().nanoseconds)

    def _on_odom(self, msg: Odometry) -> None:
        try:
            T, _, _, _ = cv.odometry_to_matrix(msg)
            self.robot_pose = (float(T[0, 3]), float(T[1, 3]), float(np.arctan2(T[1, 0], T[0, 0])))
        except ValueError as exc:  # keep the last good pose; say why this one was refused
            self.get_logger().warning(f"odometry refused, keeping the last robot pose: {exc}", throttle_duration_sec=5.0)

    def _pose_from(self, ps: PoseStamped) -> tuple[float, float, float]:
        if not ps.header.frame_id:
            return self.robot_pose
        if ps.header.frame_id != self.config.frames.map_frame:
            raise ValueError(f"pose is in frame {ps.header.frame_id!r}; give it in {self.config.frames.map_frame!r}")
        T = cv.pose_to_matrix(ps.pose)
        return float(T[0, 3]), float(T[1, 3]), float(np.arctan2(T[1, 0], T[0, 0]))

    def _answer(self, name: str, res, fn):
        """Run fn(res); any error becomes success=false + message."""
        try:
            fn(res)
            self.calls["ok"] += 1
        except ValueError as exc:
            res.success, res.message = False, str(exc)
            self.calls["failed"] += 1
        except Exception as exc:
            res.success, res.message = False, f"internal error in {name}: {type(exc).__name__}: {exc}"
            self.calls["failed"] += 1
            self.get_logger().error(f"{name} failed: {traceback.format_exc()}")
        return res

    def _publish_objects(self, objects) -> None:
        labels = [f"{o.label or o.query} {o.score:.2f}" for o in objects]
        colors = [(0.1, 0.8, 0.2) if i == 0 else (0.9, 0.7, 0.1) for i in range(len(objects))]
        self.markers_pub.publish(cv.boxes_to_marker_array([o.box for o in objects], self._header(), labels, colors))

    # -------------------------------------------------------------------------------- services
    def _ground(self, req, res):
        def run(res):
            query = check_query(_text(req.query))
            if req.level and req.level not in LEVELS:
                raise ValueError(f"unknown level {req.level!r}: use '' (best), {', '.join(LEVELS)}")
            if not np.isfinite(req.min_score) or req.min_score < 0 or req.min_score > 1:
                raise ValueError(f"min_score must be in [0, 1], got {req.min_score}")
            out = self.engine.ground(query, int(req.max_results), float(req.min_score), req.level, self.robot_pose)
            hdr = self._header()
            res.objects = [cv.scene_object_to_msg(o, hdr) for o in out.objects]
            res.answered_by, res.latency_ms, res.message = out.answered_by, float(out.latency_ms), out.message
            res.success = bool(out.objects)
            if out.objects:
                self._publish_objects(out.objects)

        return self._answer("ground", res, run)

    def _navigate(self, req, res):
        def run(res):
            start = self._pose_from(req.start)
            if not np.isfinite(req.standoff_m):
                raise ValueError("standoff_m must be finite")
            out = self.engine.navigate(_text(req.instruction), float(req.standoff_m), start)
            hdr = self._header()
            res.success, res.message = out.success, out.message
            if out.target is not None:
                res.target = cv.scene_object_to_msg(out.target, hdr)
                self._publish_objects([out.target])
            if out.grid is not None:
                f = out.grid.to_msg_fields()
                self.grid_pub.publish(cv.occupancy_grid_to_msg(f["resolution"], f["width"], f["height"],
                                                               (f["origin_position"][0], f["origin_position"][1], 0.0), f["data"], hdr))
            if out.success:
                nav = out.navigation
                z = float(out.grid.floor_z_m) if out.grid is not None else 0.0
                res.goal = cv.planar_pose_stamped(*nav.goal_pose, frame_id=hdr.frame_id, stamp_ns=cv.stamp_to_ns(hdr.stamp), z=z)
                res.path = cv.path_to_msg(nav.path, hdr, z=z)
                res.path_length_m = float(nav.path_length_m)
                self.goal_pub.publish(res.goal)
                self.path_pub.publish(res.path)

        return self._answer("navigate", res, run)

    def _ask(self, req, res):
        def run(res):
            ans = self.engine.ask(_text(req.question), self._pose_from(req.robot_pose))
            hdr = self._header()
            res.success, res.answer, res.answered_by = True, ans.text, ans.path
            res.objects = [cv.scene_object_to_msg(o, hdr) for o in ans.objects]
            if ans.objects:
                self._publish_objects(ans.objects)

        return self._answer("ask", res, run)

    def _save(self, req, res):
        def run(res):
            path = _text(req.path).strip()
            if not path:
                folder = Path(os.path.expanduser(self.config.ros.map_dir))
                path = str(folder / time.strftime("lang3d_%Y%m%d_%H%M%S.l3dmap"))
            path = os.path.abspath(os.path.expanduser(path))
            res.size_bytes = int(self.map.save(path))
            res.success, res.path, res.message = True, path, f"saved {self.map.num_points} points"

        return self._answer("save_map", res, run)

    def _load(self, req, res):
        def run(res):
            path = os.path.abspath(os.path.expanduser(_text(req.path).strip()))
            if self._status_fn is not None:
                raise ValueError("this server maps live; start the query server alone (ros.load_map) to serve a file")
            self.map.load(path)
            res.success, res.message = True, f"loaded {path}: {self.map.num_points} points"
            res.status = cv.status_to_msg(self._status_dict(), self._header())

        return self._answer("load_map", res, run)

    def _status_dict(self) -> dict:
        if self._status_fn is not None:
            return self._status_fn()
        return {"source": self.map.source, "num_points": self.map.num_points, "memory_mb": self.map.memory_mb(),
                "training_state": "disabled"}

    def _status(self, req, res):
        def run(res):
            res.status = cv.status_to_msg(self._status_dict(), self._header())
            res.success = True

        return self._answer("get_map_status", res, run)
