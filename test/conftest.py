"""Shared test helpers.

``require_ros()`` imports rclpy or skips the calling test, so the ROS tests run where a
ROS 2 runtime is sourced and skip elsewhere. With ``SEG_PERCEPTION_REQUIRE_ROS=1`` (CI
with the runtime installed) a missing rclpy is a failure instead of a skip.
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
