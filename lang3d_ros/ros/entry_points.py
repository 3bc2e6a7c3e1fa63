"""Executables: ``ros2 run lang3d_ros <name>`` and the console scripts (same functions)."""
from __future__ import annotations

import contextlib
import signal
import sys


def _spin(nodes, threads: int = 4) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    executor = MultiThreadedExecutor(num_threads=threads)
    for n in nodes:
        executor.add_node(n)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())  # SIGTERM stops as cleanly as SIGINT
    try:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):  # both mean: stop cleanly
            executor.spin()
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return 0


def mapper_node(argv=None) -> int:
    """Mapping and serving in one process (the services answer on the live map)."""
    import rclpy

    from lang3d_ros.ros.mapper_node import MapperNode
    from lang3d_ros.ros.query_server_node import QueryServerNode

    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        mapper = MapperNode()
        server = QueryServerNode(language_map=mapper.stack.language_map, config=mapper.config, status_fn=mapper.status)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"lang3d mapper failed to start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    return _spin([mapper, server])


def query_server_node(argv=None) -> int:
    """Serving a saved map (parameter ros.load_map), no mapping."""
    import rclpy

    from lang3d_ros.ros.query_server_node import QueryServerNode

    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        server = QueryServerNode()
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"lang3d query server failed to start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    return _spin([server], threads=3)


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
