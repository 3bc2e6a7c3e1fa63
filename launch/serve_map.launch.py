"""Serve a saved map (no mapping): Ground, Navigate, Ask, SaveMap, LoadMap, GetMapStatus on a map file.

ros2 launch lang3d_ros serve_map.launch.py map:=/path/room.l3dmap [config:=...]
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("lang3d_ros")
    return LaunchDescription([
        DeclareLaunchArgument("map", description="map file written by SaveMap (.l3dmap)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "lang3d.yaml")),
        DeclareLaunchArgument("namespace", default_value=""),
        Node(package="lang3d_ros", executable="query_server_node", name="lang3d_query_server",
             namespace=LaunchConfiguration("namespace"), output="screen", emulate_tty=True,
             parameters=[LaunchConfiguration("config"), {"ros.load_map": LaunchConfiguration("map")}]),
    ])
