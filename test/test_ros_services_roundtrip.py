"""Every custom service type, served by one process and called from another over real DDS (loopback only)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ros_helpers import next_domain_id, require_ros, spawn, stop

pytestmark = pytest.mark.ros
HERE = Path(__file__).parent


def _call(node, client, request, timeout_s=20.0):
    from rclpy.executors import SingleThreadedExecutor

    assert client.wait_for_service(timeout_sec=timeout_s), f"{client.srv_name} not available after {timeout_s} s"
    future = client.call_async(request)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    executor.spin_until_future_complete(future, timeout_sec=timeout_s)
    executor.remove_node(node)
    assert future.done(), f"{client.srv_name} did not answer within {timeout_s} s"
    return future.result()


def test_every_service_type_round_trips_between_processes(tmp_path):
    require_ros()
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from lang3d_ros.srv import Ask, GetMapStatus, Ground, LoadMap, Navigate, SaveMap

    domain = next_domain_id()
    server = spawn([str(HERE / "ros_echo_server.py")], domain, tmp_path / "logs")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    try:
        node = rclpy.create_node("lang3d_test_client", context=ctx)
        t0 = time.monotonic()
        res = _call(
            node,
            node.create_client(Ground, "ground"),
            Ground.Request(query="red mug ☕", max_results=3, min_score=0.25, level="whole"),
        )
        assert res.success and res.message == "level=whole" and res.answered_by == "relevancy"
        assert [o.label for o in res.objects] == ["red mug ☕"] * 3
        assert [o.instance_id for o in res.objects] == [1, 2, 3]
        o = res.objects[1]
        assert o.score == pytest.approx(0.25) and o.header.frame_id == "map" and o.has_oriented_box
        assert (o.bbox_center.position.x, o.bbox_size.z, o.obb_center.orientation.w) == pytest.approx((2.0, 0.3, 0.8))

        start = PoseStamped()
        start.header.frame_id = "map"
        start.pose.position.x = 1.0
        res = _call(
            node,
            node.create_client(Navigate, "navigate"),
            Navigate.Request(instruction="go to the chair", standoff_m=0.8, start=start),
        )
        assert res.success and res.message == "go to the chair" and res.goal.pose.position.x == pytest.approx(1.8)
        assert res.target.label == "chair" and len(res.path.poses) == 2 and res.path_length_m == pytest.approx(0.8)
        assert res.goal_sent and res.goal_accepted and res.error_code == 0

        res = _call(node, node.create_client(Ask, "ask"), Ask.Request(question="how many mugs?"))
        assert res.answer == "HOW MANY MUGS?" and res.answered_by == "parser" and res.objects[0].label == "mug"

        res = _call(node, node.create_client(SaveMap, "save_map"), SaveMap.Request(path="room.l3dmap"))
        assert res.success and res.path == "/abs/room.l3dmap" and res.size_bytes == 2**40 + 5

        res = _call(node, node.create_client(LoadMap, "load_map"), LoadMap.Request(path="/nope"))
        assert not res.success and res.message == "cannot read /nope" and res.status.source == "file:/nope"
        assert res.error_code == LoadMap.Response.ERROR_IO_ERROR == 7

        res = _call(node, node.create_client(GetMapStatus, "get_map_status"), GetMapStatus.Request())
        s = res.status
        assert (s.source, s.frames_fused, s.num_points, s.num_gaussians, s.training_state) == (
            "live",
            42,
            2**33,
            7,
            "training_rgb",
        )
        assert s.training_psnr_db == pytest.approx(27.5)
        assert time.monotonic() - t0 < 60
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
        assert stop(server) in (0, -2, 130), (tmp_path / "logs").joinpath("proc-0.log").read_text()
