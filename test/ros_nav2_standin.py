"""TEST-ONLY stand-in for Nav2's navigate_to_pose action server (uses the test-built nav2_msgs of
test/nav2_stub): accepts goals in the map frame, rejects others, prints each goal and finishes it at once."""

import contextlib

import rclpy
from nav2_msgs.action import NavigateToPose
from rclpy.action import ActionServer, GoalResponse
from rclpy.node import Node


class StandIn(Node):
    def __init__(self):
        super().__init__("bt_navigator")
        self.server = ActionServer(self, NavigateToPose, "navigate_to_pose", self.execute, goal_callback=self.on_goal)
        self.get_logger().info("stand-in navigate_to_pose ready")

    def on_goal(self, goal):
        p = goal.pose.pose.position
        accepted = goal.pose.header.frame_id == "map"
        print(
            f"GOAL {goal.pose.header.frame_id} {p.x:.3f} {p.y:.3f} {'accepted' if accepted else 'rejected'}", flush=True
        )
        return GoalResponse.ACCEPT if accepted else GoalResponse.REJECT

    def execute(self, handle):
        handle.succeed()
        return NavigateToPose.Result()


def main():
    rclpy.init()
    node = StandIn()
    try:
        with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
            rclpy.spin(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
