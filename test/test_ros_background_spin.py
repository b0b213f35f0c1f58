"""BackgroundSpin (seg_perception/ros/background_spin.py): the client nodes of the
benchmarks and live tests are spun on a thread that must serve callbacks and then end for
certain. A spin thread left blocked in rclpy's wait aborted node_bench at exit under load
("terminate called without an active exception", CI of session 10).
"""
import time

import pytest

from conftest import require_ros
from live_ros_fixtures import next_domain

pytestmark = pytest.mark.ros


@pytest.fixture
def context():
    rclpy = require_ros()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain())
    yield context
    rclpy.try_shutdown(context=context)


def spinner_for(node, context):
    from rclpy.executors import SingleThreadedExecutor

    from seg_perception.ros.background_spin import BackgroundSpin
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return BackgroundSpin(executor)


def test_it_serves_callbacks_until_stopped_and_then_its_thread_is_gone(context):
    import rclpy
    from std_msgs.msg import String
    node = rclpy.create_node('background_spin_test', context=context)
    received = []
    node.create_subscription(String, '/background_spin_test', received.append, 10)
    publisher = node.create_publisher(String, '/background_spin_test', 10)
    spinner = spinner_for(node, context)
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        publisher.publish(String(data='hello'))
        time.sleep(0.05)
    assert received and received[0].data == 'hello'
    assert spinner.stop(timeout_s=5.0) is True
    assert not spinner.thread.is_alive()
    count = len(received)
    publisher.publish(String(data='after stop'))
    time.sleep(0.3)
    assert len(received) == count               # nothing spins the node any more
    node.destroy_node()


def test_an_idle_spinner_stops_within_its_period(context):
    import rclpy
    node = rclpy.create_node('background_spin_idle', context=context)
    spinner = spinner_for(node, context)
    time.sleep(0.2)                              # blocked in the wait, nothing to serve
    started = time.monotonic()
    assert spinner.stop(timeout_s=5.0) is True
    assert time.monotonic() - started < 2.0
    node.destroy_node()


def test_the_thread_ends_when_the_context_is_shut_down(context):
    import rclpy
    node = rclpy.create_node('background_spin_shutdown', context=context)
    spinner = spinner_for(node, context)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    spinner.thread.join(5.0)
    assert not spinner.thread.is_alive()
