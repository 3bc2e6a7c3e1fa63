"""Frames from synthetic scenes, rosbags and the common RGB-D dataset layouts.

``open_source(path)`` picks the reader; every reader is a ``FrameSource`` (iterate Frames in time order, len).
Synthetic scenes live in ``lang3d_ros.datasets.synthetic``."""

from lang3d_ros.datasets.folders import ReplicaSource, ScanNetSource, TumSource
from lang3d_ros.datasets.frame import Frame, FrameSource
from lang3d_ros.datasets.gradslam import GradslamBatchSource
from lang3d_ros.datasets.rosbag import BagTopics, RosbagSource, write_bag
from lang3d_ros.datasets.sources import detect_kind, open_source

__all__ = [
    "BagTopics",
    "Frame",
    "FrameSource",
    "GradslamBatchSource",
    "ReplicaSource",
    "RosbagSource",
    "ScanNetSource",
    "TumSource",
    "detect_kind",
    "open_source",
    "write_bag",
]
