"""The segmentation_node executables (plain and managed): the stop signals first,
everything slow after.

Importing rclpy, the messages, NumPy and OpenCV takes about a second, and a
Ctrl-C in that time used to end in a KeyboardInterrupt traceback. This module
imports nothing slow: it installs the handlers, then imports the node (see
node.run, which skips loading the model when a signal has already arrived).
"""
import sys

from seg_perception.signals import StopSignals


def main(args=None, lifecycle: bool = False) -> int:
    """Entry point of ``ros2 run seg_perception segmentation_node``; returns the exit code.

    ``lifecycle``: run the managed variant (lifecycle_node.py) instead.
    """
    stop = StopSignals()
    try:
        if lifecycle:
            from seg_perception.ros import lifecycle_node   # slow, as node below
            return lifecycle_node.run(stop, args)
        from seg_perception.ros import node     # slow: rclpy, messages, NumPy, OpenCV
        return node.run(stop, args)
    finally:
        stop.restore()


def main_lifecycle(args=None) -> int:
    """Entry point of ``ros2 run seg_perception segmentation_lifecycle_node``."""
    return main(args, lifecycle=True)


if __name__ == '__main__':
    sys.exit(main())
