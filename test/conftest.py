"""Shared test helpers and fixtures.

``require_ros()`` imports rclpy or skips the calling test, so the ROS tests run where a
ROS 2 runtime is sourced and skip elsewhere. With ``SEG_PERCEPTION_REQUIRE_ROS=1`` (CI
with the runtime installed) a missing rclpy is a failure instead of a skip.

The fixtures ``colour_net_name`` and ``tiny_name`` register a test network (colour_net.py,
tiny_seg_model.py) with ``seg_perception.models.registered`` while a test runs, so its
checkpoints rebuild by name, and yield its architecture name. Their modules import torch,
so they are imported only by the tests that ask for them.
"""
import os

import pytest

REQUIRE_ROS_ENV = 'SEG_PERCEPTION_REQUIRE_ROS'


def ros_required() -> bool:
    """Whether this run must have a ROS 2 runtime (missing rclpy fails instead of skips)."""
    return os.environ.get(REQUIRE_ROS_ENV, '').strip() not in ('', '0', 'false', 'no')


def require_ros():
    """Return the rclpy module, or skip (fail under SEG_PERCEPTION_REQUIRE_ROS=1)."""
    try:
        import rclpy
    except ImportError as exc:
        if ros_required():
            pytest.fail(f'{REQUIRE_ROS_ENV}=1 but rclpy cannot be imported ({exc}); '
                        'source /opt/ros/<distro>/setup.bash', pytrace=False)
        pytest.skip('rclpy not importable: source a ROS 2 setup.bash to run this test')
    return rclpy


@pytest.fixture
def colour_net_name():
    """The nearest-colour ColourNet, registered while the test runs."""
    from colour_net import ARCHITECTURE, ColourNet
    from seg_perception import models
    with models.registered(ARCHITECTURE, ColourNet) as name:
        yield name


@pytest.fixture
def tiny_name():
    """The trainable TinySegmenter, registered while the test runs."""
    from seg_perception import models
    from tiny_seg_model import TINY_NAME, TinySegmenter
    with models.registered(TINY_NAME, TinySegmenter) as name:
        yield name
