"""rosbag2 (MCAP / sqlite3) RGB-D bags without ROS: writer, synchronising reader, summary."""

from lang3d_ros.datasets.rosbag.info import bag_info
from lang3d_ros.datasets.rosbag.reader import RosbagSource, open_reader
from lang3d_ros.datasets.rosbag.topics import BagTopics
from lang3d_ros.datasets.rosbag.writer import GROUND_TRUTH_NAME, BagSummary, write_bag

__all__ = ["BagSummary", "BagTopics", "GROUND_TRUTH_NAME", "RosbagSource", "bag_info", "open_reader", "write_bag"]
