"""Online mapping + serving: the mapper and the query server in one process (services answer on the live map).

ros2 launch lang3d_ros mapping.launch.py [config:=/path/robot.yaml] [namespace:=robot1] [use_sim_time:=true]
                                         [autostart:=false] [rviz:=true]
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
            DeclareLaunchArgument(
                "config",
                default_value=os.path.join(share, "config", "lang3d.yaml"),
                description="parameter file (ROS 2 params layout)",
            ),
            DeclareLaunchArgument(
                "extra_config",
                default_value=os.path.join(share, "config", "lang3d.yaml"),
                description="a second parameter file layered on top (e.g. a camera's)",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="true when replaying bags with /clock"
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
                namespace=LaunchConfiguration("namespace"),
                output="screen",
                emulate_tty=True,
                parameters=[
                    LaunchConfiguration("config"),
                    LaunchConfiguration("extra_config"),
                    {
                        "use_sim_time": LaunchConfiguration("use_sim_time"),
                        "ros.autostart": LaunchConfiguration("autostart"),
                    },
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
