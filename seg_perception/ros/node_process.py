"""The process around a segmentation node: rclpy up, the core's log lines into the node's
log, spin until a stop signal, everything down again, and the exit code.

Shared by segmentation_node and its managed variant (entry_point.py picks which); the
node classes themselves know nothing of signals or of rclpy's global state.
"""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from seg_perception.ros import core_logging
from seg_perception.ros.node import NODE_NAME, SegmentationNode, StartupError
from seg_perception.signals import StopSignals


def spin_until_stopped(node: Node, stop: StopSignals, period_s: float = 0.1) -> None:
    """Spin the node until a stop signal arrives or something shuts rclpy down."""
    # Two threads: images keep arriving (intake callback group) while a model swap loads.
    executor = MultiThreadedExecutor(num_threads=2, context=node.context)
    executor.add_node(node)
    try:
        while stop.received is None and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=period_s)
    finally:
        executor.remove_node(node)
        executor.shutdown()


def run(stop: StopSignals, args=None, node_class=SegmentationNode) -> int:
    """Run the node until ``stop`` is signalled; return the exit code.

    A signal that arrived before (during the imports) ends it before the model
    is loaded. ``node_class``: SegmentationNode or its managed variant.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    stop_forwarding = None
    try:
        node = node_class()
        # Backend choice, engine builds and the core's warnings into this node's log.
        stop_forwarding = core_logging.forward_core_logs(node.get_logger())
        if stop.received is None:
            node.start()
            spin_until_stopped(node, stop)
        if stop.received:
            node.get_logger().info(f'{stop.received}: shutting down')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        code = 1
        print(f'[{NODE_NAME}] cannot start: {exc}', file=sys.stderr, flush=True)
    finally:
        # Further signals (Ctrl-C in a terminal reaches a node under ros2 launch
        # twice: the group's and launch's forwarded one) only set the flag again.
        if node is not None:
            node.destroy_node()
        if stop_forwarding is not None:
            stop_forwarding()
        rclpy.try_shutdown()
    return code
