"""The ROS 2 layer: message conversions and thin rclpy nodes. The only package here that imports ROS."""
