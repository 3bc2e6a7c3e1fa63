"""Cameras, rigid transforms and 3D boxes shared by every stage (numpy; no ROS)."""

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import (
    invert_rigid,
    is_rigid,
    matrix_from_pose,
    pose_from_matrix,
    transform_points,
    validate_rigid,
)

__all__ = [
    "Intrinsics",
    "Box3D",
    "invert_rigid",
    "is_rigid",
    "matrix_from_pose",
    "pose_from_matrix",
    "transform_points",
    "validate_rigid",
]
