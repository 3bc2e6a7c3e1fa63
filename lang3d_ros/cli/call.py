"""``lang3d call``: call the lang3d services from a terminal (what ``ros2 service call`` does, with readable output).

lang3d call ground "red mug" --max 3        lang3d call navigate "take me to the sofa" --standoff 0.8
lang3d call ask "how many chairs are there?"   lang3d call status   lang3d call save /tmp/room.l3dmap
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "call",
        help="call a lang3d service (needs ROS 2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("service", choices=("ground", "navigate", "ask", "status", "save", "load"))
    p.add_argument("text", nargs="?", default="", help="query / instruction / question / map path")
    p.add_argument("--max", type=int, default=0, help="ground: max results (0 = server default)")
    p.add_argument("--min-score", type=float, default=0.0)
    p.add_argument("--level", default="", choices=("", "subpart", "part", "whole"))
    p.add_argument("--standoff", type=float, default=0.0, help="navigate: metres (0 = server default)")
    p.add_argument("--ns", default="", help="namespace of the server (e.g. /robot1)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the service and its answer")
    p.add_argument("--json", action="store_true", help="print the full response as JSON")
    p.set_defaults(func=run)


def message_to_dict(msg):
    """Any ROS message -> plain dict/list values (for --json and reports)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {k: message_to_dict(getattr(msg, k)) for k in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)):
        return [message_to_dict(v) for v in msg]
    if hasattr(msg, "tolist"):
        return msg.tolist()
    return msg


def _describe(service: str, res) -> str:
    from lang3d_ros.errors import ErrorCode

    code = int(getattr(res, "error_code", 0))
    name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code)
    lines = [
        f"success: {res.success}"
        + (f"  ({res.message})" if res.message else "")
        + ("" if res.success and code == 0 else f"  [error_code {code} {name}]")
    ]
    for o in getattr(res, "objects", []):
        c, s = o.bbox_center.position, o.bbox_size
        lines.append(
            f"  #{o.instance_id} {o.label!r} score {o.score:.2f} level {o.level or '-'} "
            f"centre ({c.x:.2f}, {c.y:.2f}, {c.z:.2f}) m size ({s.x:.2f}, {s.y:.2f}, {s.z:.2f}) m "
            f"[{o.header.frame_id}]"
        )
    if service == "navigate" and res.success:
        p, q = res.goal.pose.position, res.goal.pose.orientation
        lines.append(
            f"  goal ({p.x:.2f}, {p.y:.2f}) m, quaternion z={q.z:.3f} w={q.w:.3f} "
            f"[{res.goal.header.frame_id}];"
            f" path {len(res.path.poses)} poses, {res.path_length_m:.2f} m; target {res.target.label!r}"
        )
    if service == "ask" and res.success:
        lines.append(f"  answer ({res.answered_by}): {res.answer}")
    if service in ("status", "load"):
        s = res.status
        lines.append(
            f"  {s.source}: {s.frames_fused} frames fused, {s.keyframes} keyframes, "
            f"{s.frames_dropped} dropped, "
            f"{s.frames_rejected} rejected, {s.num_points} points, {s.num_gaussians} Gaussians, "
            f"training {s.training_state}, {s.memory_mb:.0f} MiB"
        )
    if service == "save" and res.success:
        lines.append(f"  wrote {res.path} ({res.size_bytes} bytes)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        import rclpy

        from lang3d_ros.srv import Ask, GetMapStatus, Ground, LoadMap, Navigate, SaveMap
    except ImportError as exc:
        raise ValueError(
            f"ROS 2 or the built interfaces are not importable ({exc}); source env.sh or your workspace"
        ) from exc
    kinds = {
        "ground": (
            Ground,
            "ground",
            dict(query=args.text, max_results=max(args.max, 0), min_score=args.min_score, level=args.level),
        ),
        "navigate": (Navigate, "navigate", dict(instruction=args.text, standoff_m=args.standoff)),
        "ask": (Ask, "ask", dict(question=args.text)),
        "status": (GetMapStatus, "get_map_status", {}),
        "save": (SaveMap, "save_map", dict(path=args.text)),
        "load": (LoadMap, "load_map", dict(path=args.text)),
    }
    srv_type, name, fields = kinds[args.service]
    full = f"{args.ns.rstrip('/')}/lang3d/{name}"
    rclpy.init()
    node = rclpy.create_node("lang3d_cli")
    try:
        client = node.create_client(srv_type, full)
        if not client.wait_for_service(timeout_sec=args.timeout):
            raise ValueError(
                f"service {full} is not available (is the mapper or query server running, same ROS_DOMAIN_ID?)"
            )
        future = client.call_async(srv_type.Request(**fields))
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            raise ValueError(f"{full} did not answer within {args.timeout} s")
        res = future.result()
        print(json.dumps(message_to_dict(res), indent=1) if args.json else _describe(args.service, res))
        return 0 if res.success else 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
