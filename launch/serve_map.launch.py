"""Serve a saved map (no mapping): Ground, Navigate, Ask, SaveMap, LoadMap, GetMapStatus on a map file.

ros2 launch lang3d_ros serve_map.launch.py map:=/path/room.l3dmap [config:=...] [autostart:=false] [rviz:=true]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lang3d_ros.evaluation.processes import MALLOC_ARENA_MAX_DEFAULT
from launch import LaunchDescription


def generate_launch_description():
    share = get_package_share_directory("lang3d_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument("map", description="map file written by SaveMap (.l3dmap)"),
            DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "lang3d.yaml")),
            DeclareLaunchArgument("namespace", default_value=""),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="configure + activate the lifecycle node at start; false = wait for "
                "a lifecycle manager (nav2_lifecycle_manager)",
            ),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="true: also open RViz with config/lang3d.rviz"
            ),
            Node(
                package="lang3d_ros",
                executable="query_server_node",
                # fewer glibc malloc arenas of worker threads (~30 MiB), unless the user sets it
                additional_env={"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX_DEFAULT)},
                name="lang3d_query_server",
                namespace=LaunchConfiguration("namespace"),
                output="screen",
                emulate_tty=True,
                parameters=[
                    LaunchConfiguration("config"),
                    {"ros.load_map": LaunchConfiguration("map"), "ros.autostart": LaunchConfiguration("autostart")},
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
