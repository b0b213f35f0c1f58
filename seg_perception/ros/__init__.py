"""ROS 2 glue. Only ``node.py`` imports rclpy; ``conversions.py`` works without ROS."""
