"""The segmentation_node executables (plain and managed): the stop signals first,
everything slow after.

Importing rclpy, the messages, NumPy and OpenCV takes about a second, and a
Ctrl-C in that time used to end in a KeyboardInterrupt traceback. This module
imports nothing slow: it installs the handlers, then imports the node (see
node_process.run, which skips loading the model when a signal has already arrived).
"""
import signal
import sys

from seg_perception.signals import StopSignals


def main(args=None, lifecycle: bool = False) -> int:
    """Entry point of ``ros2 run seg_perception segmentation_node``; returns the exit code.

    ``lifecycle``: run the managed variant (lifecycle_node.py) instead.
    """
    stop = StopSignals()
    try:
        # slow imports: rclpy, messages, NumPy, OpenCV
        from seg_perception.ros import node_process
        if lifecycle:
            from seg_perception.ros.lifecycle_node import LifecycleSegmentationNode
            return node_process.run(stop, args, node_class=LifecycleSegmentationNode)
        return node_process.run(stop, args)
    finally:
        # The node is down and the process about to end: a stop signal still on its way
        # (ros2 launch forwards Ctrl-C after the terminal's, later when launch runs rclpy
        # itself, as for a lifecycle node) has nothing left to stop. With the handlers
        # restored, Python's teardown would put back the default and such a late signal
        # would kill the interpreter (exit code -2): ignored instead.
        for number in StopSignals.SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def main_lifecycle(args=None) -> int:
    """Entry point of ``ros2 run seg_perception segmentation_lifecycle_node``."""
    return main(args, lifecycle=True)


if __name__ == '__main__':
    sys.exit(main())
