"""A server for every lang3d_ros service type whose answers are computed from the request, so a client in another
process can check that every field crossed the wire. Run: python ros_echo_server.py (stops on SIGINT)."""

import contextlib

import rclpy
from geometry_msgs.msg import PoseStamped
from lang3d_ros.msg import DetectedObject
from lang3d_ros.srv import Ask, GetMapStatus, Ground, LoadMap, Navigate, SaveMap
from rclpy.node import Node


def _obj(label: str, score: float, i: int) -> DetectedObject:
    o = DetectedObject(
        instance_id=i, label=label, query=label, score=score, level="part", has_oriented_box=True, num_points=10 * i
    )
    o.header.frame_id = "map"
    o.bbox_center.position.x = float(i)
    o.bbox_size.x, o.bbox_size.y, o.bbox_size.z = 0.1, 0.2, 0.3
    o.obb_center.orientation.z, o.obb_center.orientation.w = 0.6, 0.8
    o.mean_color.r, o.mean_color.a = 1.0, 1.0
    return o


class EchoServer(Node):
    def __init__(self):
        super().__init__("lang3d_echo_server")
        self.create_service(Ground, "ground", self.ground)
        self.create_service(Navigate, "navigate", self.navigate)
        self.create_service(Ask, "ask", self.ask)
        self.create_service(SaveMap, "save_map", self.save_map)
        self.create_service(LoadMap, "load_map", self.load_map)
        self.create_service(GetMapStatus, "get_map_status", self.status)
        self.get_logger().info("echo server ready")

    def ground(self, req, res):
        res.success, res.message, res.answered_by, res.latency_ms = True, f"level={req.level}", "relevancy", 1.5
        res.objects = [_obj(req.query, req.min_score, i + 1) for i in range(req.max_results)]
        return res

    def navigate(self, req, res):
        res.success, res.message = True, req.instruction
        res.goal = PoseStamped()
        res.goal.header.frame_id = "map"
        res.goal.pose.position.x = req.start.pose.position.x + req.standoff_m
        res.target = _obj("chair", 0.9, 7)
        res.path.header.frame_id = "map"
        res.path.poses = [req.start, res.goal]
        res.path_length_m = req.standoff_m
        res.goal_sent, res.goal_accepted = True, req.standoff_m > 0.5
        return res

    def ask(self, req, res):
        res.success, res.answer, res.answered_by = True, req.question.upper(), "parser"
        res.objects = [_obj("mug", 1.0, 3)]
        return res

    def save_map(self, req, res):
        res.success, res.path, res.size_bytes = True, "/abs/" + req.path, 2**40 + 5
        return res

    def load_map(self, req, res):
        res.success, res.message, res.error_code = False, f"cannot read {req.path}", LoadMap.Response.ERROR_IO_ERROR
        res.status.source = "file:" + req.path
        return res

    def status(self, req, res):
        res.success = True
        s = res.status
        s.source, s.frames_fused, s.num_points, s.num_gaussians = "live", 42, 2**33, 7
        s.training_state, s.training_psnr_db = "training_rgb", 27.5
        return res


def main():
    rclpy.init()
    node = EchoServer()
    try:
        with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):  # stop cleanly
            rclpy.spin(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
