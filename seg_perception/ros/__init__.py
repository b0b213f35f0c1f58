"""ROS 2 glue. Only the modules the import-linter ROS contract names import rclpy
(the nodes, their process and /diagnostics, the ground outputs); the rest works without ROS."""
