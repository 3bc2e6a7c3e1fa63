"""Nav2 handoff: with ``navigation.execute`` a successful Navigate also sends its goal to Nav2's NavigateToPose
action and reports whether Nav2 accepted it (``goal_sent``, ``goal_accepted`` and the message).

nav2_msgs is imported when the handoff is created; where it is not installed (PyPI-only machines) the answer says
so and still carries the goal. What it cannot do: follow the navigation to its end (the result and feedback are
Nav2's; a client that needs them calls the action itself) or cancel a goal it sent.
"""

from __future__ import annotations

import threading

from rclpy.action import ActionClient
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup


class Nav2Handoff:
    """``__call__(goal, res)`` is QueryServices.navigate_hook: sends ``goal`` (PoseStamped, map frame)."""

    def __init__(self, node, action_name: str, timeout_s: float):
        self.node = node
        self.timeout_s = float(timeout_s)
        self.action_name = action_name
        try:
            from nav2_msgs.action import NavigateToPose
        except ImportError:
            self._type = self._client = None
            node.get_logger().warning(
                "navigation.execute is set but nav2_msgs is not installed: Navigate returns "
                "goals without sending them to Nav2"
            )
            return
        self._type = NavigateToPose
        # its own group: the goal response is processed while the Navigate callback waits for it
        self._client = ActionClient(node, NavigateToPose, action_name, callback_group=MutuallyExclusiveCallbackGroup())

    def destroy(self) -> None:
        if self._client is not None:
            self._client.destroy()
            self._client = None

    def __call__(self, goal, res) -> None:
        if self._type is None:
            res.message += "; not sent to Nav2: nav2_msgs is not installed (send the goal as NavigateToPose.pose)"
            return
        if not self._client.wait_for_server(timeout_sec=self.timeout_s):
            res.message += f"; not sent to Nav2: no {self.action_name} action server after {self.timeout_s:.0f} s"
            return
        done = threading.Event()
        future = self._client.send_goal_async(self._type.Goal(pose=goal))
        future.add_done_callback(lambda _f: done.set())
        res.goal_sent = True
        if not done.wait(self.timeout_s):
            res.message += f"; sent to Nav2 ({self.action_name}), no acceptance within {self.timeout_s:.0f} s"
            return
        handle = future.result()
        res.goal_accepted = bool(handle is not None and handle.accepted)
        res.message += f"; Nav2 {'accepted' if res.goal_accepted else 'rejected'} the goal ({self.action_name})"
