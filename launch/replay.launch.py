"""Replay a bag into the mapper (mapping + serving), e.g. a synthetic bag from `lang3d synth`.

ros2 launch lang3d_ros replay.launch.py bag:=/path/bag [rate:=1.0] [config:=.../synthetic.yaml]
                                        [ground_truth:=/path/bag/ground_truth.json] [rviz:=true]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, TimerAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lang3d_ros.evaluation.processes import MALLOC_ARENA_MAX_DEFAULT
from launch import LaunchDescription


def generate_launch_description():
    share = get_package_share_directory("lang3d_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 folder (mcap or sqlite3)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
            DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "synthetic.yaml")),
            DeclareLaunchArgument(
                "ground_truth", default_value="", description="synthetic bags: <bag>/ground_truth.json"
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="configure + activate the lifecycle node at start; false = wait for "
                "a lifecycle manager (nav2_lifecycle_manager, node_names [lang3d_mapper])",
            ),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="true: also open RViz with config/lang3d.rviz"
            ),
            Node(
                package="lang3d_ros",
                executable="mapper_node",
                # fewer glibc malloc arenas of worker threads (~30 MiB), unless the user sets it
                additional_env={"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX_DEFAULT)},
                name="lang3d_mapper",
                output="screen",
                emulate_tty=True,
                parameters=[
                    LaunchConfiguration("config"),
                    {
                        "ros.ground_truth_file": LaunchConfiguration("ground_truth"),
                        "ros.autostart": LaunchConfiguration("autostart"),
                    },
                ],
            ),
            # give the mapper time to load its models before the first frame
            TimerAction(
                period=5.0,
                actions=[
                    ExecuteProcess(
                        cmd=[
                            "ros2",
                            "run",
                            "lang3d_ros",
                            "bag_player",
                            LaunchConfiguration("bag"),
                            "--rate",
                            LaunchConfiguration("rate"),
                        ],
                        output="screen",
                    )
                ],
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="lang3d_rviz",
                output="screen",
                arguments=["-d", os.path.join(share, "config", "lang3d.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
