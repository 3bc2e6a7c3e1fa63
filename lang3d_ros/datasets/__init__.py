"""Frames from synthetic scenes, rosbags and the common RGB-D dataset layouts."""
from lang3d_ros.datasets.frame import Frame, FrameSource

__all__ = ["Frame", "FrameSource"]
