"""The base of the lang3d lifecycle nodes (rclpy.lifecycle, the state machine Nav2's lifecycle manager drives).

- constructor: declares every parameter (nothing else is allocated);
- configure: reads the parameters, loads models, allocates the map (``_configure_map``);
- activate: starts intake (``_start_intake``), the services, and the timers (status, cloud, objects, diagnostics,
  autosave);
- deactivate: stops intake, services and timers; the map and the models stay;
- cleanup: frees the map and models (back to unconfigured);
- shutdown: autosaves when ``ros.autosave.on_shutdown`` is set and the map is not empty, then frees.

``ros.autostart`` (default true) configures and activates the node as soon as it is spun, the way Nav2's
``lifecycle_manager`` with ``autostart: true`` would; false leaves it unconfigured for a manager. A transition
callback never raises: a failure is logged with its reason and reported to the caller as FAILURE.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from visualization_msgs.msg import MarkerArray

from lang3d_ros.ros import conversions as cv
from lang3d_ros.ros.autosave import Autosaver
from lang3d_ros.ros.diagnostics import DiagnosticsMonitor, to_msg
from lang3d_ros.ros.params import config_from_node, declare_config
from lang3d_ros.ros.services import QueryServices, latched_qos


class _RosLogHandler(logging.Handler):
    """Forwards the library's Python log records (``lang3d_ros.*``: dropped and rejected frames with their reasons,
    synchronizer resets, ...) to the ROS logger of the same name, so they reach the console, the log files and the
    node's log level like the node's own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from rclpy.logging import get_logger

            ros = get_logger(record.name.replace(".", "_"))
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                ros.error(text)
            elif record.levelno >= logging.WARNING:
                ros.warning(text)
            elif record.levelno >= logging.INFO:
                ros.info(text)
            else:
                ros.debug(text)
        except Exception:  # logging must never take a node down
            self.handleError(record)


def bridge_library_logging(level: int = logging.INFO) -> None:
    """Route ``lang3d_ros`` Python logging into ROS logging (once per process; the node executables call it).
    Without it a node process shows only the library's warnings, bare on stderr, and none of its INFO lines (e.g.
    why frames are dropped). Records still propagate to the root logger's handlers: call it only where the root
    logger has none, or lines appear twice."""
    lib = logging.getLogger("lang3d_ros")
    if not any(isinstance(h, _RosLogHandler) for h in lib.handlers):
        lib.addHandler(_RosLogHandler())
    if lib.level == logging.NOTSET or lib.level > level:
        lib.setLevel(level)


class DuplicateNodeError(RuntimeError):
    """Another node with this node's name and namespace is on the graph."""


class Lang3DLifecycleNode(LifecycleNode):
    """Shared lifecycle, services, /diagnostics, objects topic and autosave of the mapper and the query server."""

    live = False
    """True for the mapper (the services answer on the live map; LoadMap is refused)."""

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.config = declare_config(self)
        self.language_map = None
        self.query_services: QueryServices | None = None
        self.autosaver: Autosaver | None = None
        self.monitor: DiagnosticsMonitor | None = None
        self._timers: list = []
        self._pubs: list = []
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._objects_group = MutuallyExclusiveCallbackGroup()
        self._objects_key = None
        self.num_instances: int | None = None
        self.finished = False
        self._nav2 = None

    # --------------------------------------------------------------------------------- start-up
    def check_unique_name(self, wait_s: float) -> None:
        """Raise DuplicateNodeError when another node of this name and namespace appears within wait_s (graph query:
        two nodes of one name would share every service and the second would answer for the first)."""
        me = (self.get_name(), self.get_namespace())
        end = time.monotonic() + max(wait_s, 0.0)
        while True:
            same = [n for n in self.get_node_names_and_namespaces() if (n[0], n[1]) == me]
            if len(same) > 1:
                full = f"{me[1].rstrip('/')}/{me[0]}"
                raise DuplicateNodeError(
                    f"another node named {full} is already running on this ROS domain; stop it "
                    "or start this one with another name (__node:=...) or namespace (__ns:=...)"
                )
            if time.monotonic() >= end:
                return
            time.sleep(0.1)

    def autostart(self) -> bool:
        """configure + activate (ros.autostart); False when a transition failed (the log says why)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def _guarded(self, name: str, fn, undo=None) -> TransitionCallbackReturn:
        """Run a transition; on failure log why, run ``undo`` (back to the previous state) and report FAILURE."""
        try:
            fn()
            self.get_logger().info(f"{name}: done")
            return TransitionCallbackReturn.SUCCESS
        except Exception as exc:
            self.get_logger().error(f"{name} failed: {exc}\n{traceback.format_exc()}")
            if undo is not None:
                try:
                    undo()
                except Exception as exc2:
                    self.get_logger().error(f"undoing the failed {name} failed too: {exc2!r}")
            return TransitionCallbackReturn.FAILURE

    # ------------------------------------------------------------------------------ transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run():
            self.config = cfg = config_from_node(self)
            self._configure_map(cfg)
            self.query_services = QueryServices(self, self.language_map, cfg, status_fn=self.status, live=self.live)
            self.autosaver = Autosaver(cfg.ros.autosave, cfg.ros.map_dir, self.language_map, self.get_logger().info)
            self.monitor = DiagnosticsMonitor(cfg.ros.diagnostics, self.get_name())
            if self.live and cfg.ros.autosave.resume:
                self.autosaver.resume()

        return self._guarded("configure", run, self._free)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run():
            cfg = self.config.ros
            self._start_intake()
            self.query_services.create()
            if self.config.navigation.execute:
                from lang3d_ros.ros.nav2 import Nav2Handoff

                nav = self.config.navigation
                self._nav2 = Nav2Handoff(self, nav.execute_action, nav.execute_timeout_s)
                self.query_services.navigate_hook = self._nav2
            self._create_outputs()
            if cfg.diagnostics.enabled:
                self._pubs.append(self.create_publisher(DiagnosticArray, "/diagnostics", 10))
                self._diag_pub = self._pubs[-1]
                self._timers.append(
                    self.create_timer(
                        cfg.diagnostics.period_s, self._publish_diagnostics, callback_group=self._timer_group
                    )
                )
            if cfg.objects_period_s > 0:
                from lang3d_ros.msg import DetectedObjectArray

                self._objects_pub = self.create_publisher(DetectedObjectArray, cfg.objects_topic, latched_qos())
                self._object_markers_pub = self.create_publisher(MarkerArray, cfg.object_markers_topic, latched_qos())
                self._pubs += [self._objects_pub, self._object_markers_pub]
                self._objects_key = None
                self._timers.append(
                    self.create_timer(cfg.objects_period_s, self._publish_objects, callback_group=self._objects_group)
                )
            if self.live and cfg.autosave.period_s > 0:
                self._timers.append(
                    self.create_timer(
                        cfg.autosave.period_s, self._periodic_autosave, callback_group=self._objects_group
                    )
                )

        def undo():
            self._stop_outputs()
            self._stop_intake()

        return self._guarded("activate", run, undo)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run():
            self._stop_outputs()
            self._stop_intake()
            n = self.language_map.num_points if self.language_map is not None else 0
            self.get_logger().info(f"inactive: intake and services paused, the map ({n} points) is kept")

        return self._guarded("deactivate", run)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._guarded("cleanup", self._free)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._guarded("shutdown", lambda: self.finish("lifecycle shutdown"))

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error processing from {state.label}: freeing the map and models")
        return self._guarded("error recovery", self._free)

    # ------------------------------------------------------------------------------ subclass API
    def _configure_map(self, cfg) -> None:
        """Query server: the text encoder and an empty map. The mapper builds its whole stack instead."""
        from lang3d_ros.mapping.language_map import LanguageMap
        from lang3d_ros.semantics.backends import build_text_encoder

        self.language_map = LanguageMap(cfg, build_text_encoder(cfg.semantics), device=cfg.fusion.device)

    def _start_intake(self) -> None:
        """Mapper: subscriptions and workers. Query server: nothing."""

    def _stop_intake(self) -> None:
        """Mapper: subscriptions and workers stop; queued frames are fused first."""

    def _create_outputs(self) -> None:
        """Extra publishers and timers of the subclass (append to self._pubs / self._timers)."""

    def _release(self) -> None:
        """Free what ``_configure_map`` allocated beyond the map."""

    def status(self) -> dict:
        lmap = self.language_map
        if lmap is None:
            return {"source": "", "num_points": 0}
        return {
            "source": lmap.source,
            "num_points": lmap.num_points,
            "memory_mb": lmap.memory_mb(),
            "training_state": "disabled",
        }

    # ------------------------------------------------------------------------------ shared parts
    def _stop_outputs(self) -> None:
        for t in self._timers:
            self.destroy_timer(t)
        for p in self._pubs:
            self.destroy_publisher(p)
        self._timers, self._pubs = [], []
        if self.query_services is not None:
            self.query_services.destroy()
            self.query_services.navigate_hook = None
        if self._nav2 is not None:
            self._nav2.destroy()
            self._nav2 = None

    def _free(self) -> None:
        self._stop_outputs()
        self._stop_intake()
        self._release()
        self.query_services = self.autosaver = self.monitor = None
        self.language_map = None

    def finish(self, reason: str) -> None:
        """Clean stop (SIGINT, SIGTERM, lifecycle shutdown): say what happens to the map, autosave it when
        configured, stop the workers. Safe to call twice and in any state."""
        if self.finished:
            return
        self.finished = True
        log = self.get_logger()
        lmap = self.language_map
        try:
            self._stop_intake()
        except Exception as exc:
            log.error(f"stopping intake failed: {exc!r}")
        if lmap is None or lmap.num_points == 0:
            log.info(f"{reason}: stopping; the map is empty, nothing to save")
        elif not self.live:
            log.info(f"{reason}: stopping; the served map ({lmap.source}) is unchanged on disk")
        elif self.autosaver is not None and self.config.ros.autosave.on_shutdown:
            try:
                path = self.autosaver.save(reason, force=True)
                log.info(f"{reason}: map of {lmap.num_points} points saved to {path}")
            except Exception as exc:
                log.error(f"{reason}: autosave FAILED, the map of {lmap.num_points} points is lost: {exc!r}")
        else:
            log.warning(
                f"{reason}: the map of {lmap.num_points} points is NOT saved (ros.autosave.on_shutdown is "
                "false); call lang3d/save_map before stopping to keep it"
            )
        try:
            self._free()
        except Exception as exc:
            log.error(f"freeing failed: {exc!r}")

    def _periodic_autosave(self) -> None:
        try:
            if self.autosaver is not None:
                self.autosaver.save("periodic")
        except Exception as exc:
            self.get_logger().error(f"periodic autosave failed: {exc!r}")

    def _diagnostic_status(self) -> dict:
        st = dict(self.status())
        st["num_instances"] = self.num_instances if self.num_instances is not None else "not computed yet"
        if self.query_services is not None:
            st["llm_status"] = self.query_services.model_status
        if self.language_map is not None:
            st["text_encoder"] = type(self.language_map.text_encoder).__name__
        st["semantics_backend"] = self.config.semantics.backend
        return st

    def _publish_diagnostics(self) -> None:
        try:
            items = self.monitor.update(self._diagnostic_status(), time.monotonic())
            self._diag_pub.publish(to_msg(items, cv.make_header("", self.get_clock().now().nanoseconds)))
        except Exception as exc:
            self.get_logger().error(f"diagnostics failed: {exc!r}", throttle_duration_sec=5.0)

    def _publish_objects(self) -> None:
        """Publish the instance table (and its markers) when it changed: ids, labels and boxes to the centimetre."""
        lmap = self.language_map
        if lmap is None or lmap.num_points == 0:
            return
        try:
            objects = lmap.objects()
        except Exception as exc:
            self.get_logger().error(f"instance table failed: {exc!r}", throttle_duration_sec=5.0)
            return
        key = hashlib.sha1(
            repr(
                [
                    (
                        o.instance_id,
                        o.label,
                        [round(float(v), 2) for v in o.box.aabb().center],
                        [round(float(v), 2) for v in o.box.aabb().size],
                    )
                    for o in objects
                ]
            ).encode()
        ).digest()
        self.num_instances = len(objects)
        if key == self._objects_key:
            return
        self._objects_key = key
        from lang3d_ros.msg import DetectedObjectArray

        hdr = cv.make_header(self.config.frames.map_frame, self.get_clock().now().nanoseconds)
        self._objects_pub.publish(
            DetectedObjectArray(header=hdr, objects=[cv.scene_object_to_msg(o, hdr) for o in objects])
        )
        labels = [f"#{o.instance_id} {o.label}" for o in objects]
        markers = cv.boxes_to_marker_array(
            [o.box for o in objects], hdr, labels, [(0.2, 0.5, 0.9)] * len(objects), ns="lang3d_objects"
        )
        self._object_markers_pub.publish(markers)
