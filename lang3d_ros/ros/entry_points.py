"""Executables: ``ros2 run lang3d_ros <name>`` and the console scripts (same functions)."""

from __future__ import annotations

import contextlib
import signal
import sys


def _run_lifecycle_node(make_node, what: str, argv) -> int:
    """Create the node, refuse to start beside a namesake, autostart when ``ros.autostart``, spin until SIGINT /
    SIGTERM, then stop cleanly (the map's fate is logged; autosave when configured)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from lang3d_ros.ros.lifecycle import bridge_library_logging

    rclpy.init(args=sys.argv if argv is None else argv)
    bridge_library_logging()  # the library's reasons (dropped frames, resets) in the node's log
    node = None
    try:
        node = make_node()
        node.check_unique_name(node.config.ros.duplicate_check_s)
        if node.config.ros.autostart and not node.autostart():
            raise RuntimeError("configure/activate failed (the log above says why)")
        if not node.config.ros.autostart:
            node.get_logger().info("waiting unconfigured for a lifecycle manager (ros.autostart is false)")
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"lang3d {what} failed to start: {exc}", file=sys.stderr)
        if node is not None:
            node.finished = True  # nothing was mapped: no autosave, no shutdown log
            node.destroy_node()
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=max(int(node.config.ros.executor_threads), 2))
    executor.add_node(node)
    reason = {"why": "shutdown"}

    def on_sigterm(*_):
        reason["why"] = "SIGTERM"
        rclpy.try_shutdown()

    signal.signal(signal.SIGTERM, on_sigterm)  # SIGTERM stops as cleanly as SIGINT
    try:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):  # both mean: stop cleanly
            executor.spin()
        if reason["why"] == "shutdown":
            reason["why"] = "SIGINT"
    finally:
        node.finish(reason["why"])
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def mapper_node(argv=None) -> int:
    """Mapping and serving in one lifecycle node (the services answer on the live map)."""
    from lang3d_ros.ros.mapper_node import MapperNode

    return _run_lifecycle_node(MapperNode, "mapper", argv)


def query_server_node(argv=None) -> int:
    """Serving a saved map (parameter ros.load_map), no mapping."""
    from lang3d_ros.ros.query_server_node import QueryServerNode

    return _run_lifecycle_node(QueryServerNode, "query server", argv)


def bag_player(argv=None) -> int:
    from lang3d_ros.ros.bag_player import main

    return main(sys.argv[1:] if argv is None else argv)


ENTRY_POINTS = {"mapper_node": mapper_node, "query_server_node": query_server_node, "bag_player": bag_player}

if __name__ == "__main__":  # python -m lang3d_ros.ros.entry_points <name> [args...]
    if len(sys.argv) < 2 or sys.argv[1] not in ENTRY_POINTS:
        print(f"usage: python -m lang3d_ros.ros.entry_points {{{','.join(ENTRY_POINTS)}}} [args]", file=sys.stderr)
        sys.exit(2)
    name = sys.argv.pop(1)
    sys.exit(ENTRY_POINTS[name]())
