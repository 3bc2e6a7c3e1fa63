"""Topic names, frame ids and message types of RGB-D bags (RealSense-style defaults)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rosbags.typesys import Stores, get_typestore

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_TYPES = (POSE_STAMPED, ODOMETRY, "geometry_msgs/msg/PoseWithCovarianceStamped")


@dataclass(frozen=True)
class BagTopics:
    """Where each stream lives. Depth is aligned to colour (same size and intrinsics)."""

    color: str = "/camera/color/image_raw"
    depth: str = "/camera/depth/image_rect_raw"
    camera_info: str = "/camera/color/camera_info"
    pose: str = "/camera/pose"
    odom: str = "/odom"
    camera_frame_id: str = "camera_color_optical_frame"
    map_frame_id: str = "map"


_TYPESTORE = None


def typestore():
    """The ROS 2 Jazzy typestore (CDR), created once."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
    return _TYPESTORE


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Stamp of a CDR message that starts with std_msgs/Header, without deserialising the rest."""
    if len(raw) < 12:
        raise ValueError(f"CDR message of {len(raw)} bytes is too short to hold a header")
    little = raw[1] in (1, 3)
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return int(sec) * 1_000_000_000 + int(nsec)
