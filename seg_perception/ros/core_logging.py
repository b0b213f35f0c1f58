"""The core's Python log lines in the node's ROS log (its console and /rosout).

The ROS-free core reports through Python ``logging`` under ``seg_perception.*``: which
backend and precision it chose and why, a TensorRT engine being built (minutes on a
Jetson, with progress lines), another process holding the build lock, an unusable timing
cache, an ego mask covering the whole image. The command line configures Python logging;
a node does not, so without this the INFO lines were dropped and the warnings went to
stderr as bare text, never to /rosout. :func:`forward_core_logs` hands each record to
the node's rclpy logger at the same severity (the two use the same numbers), the
module that wrote it named in front, and lets through only what the ROS logger's level
would show.

No rclpy import: the logger is any object with ``debug/info/warning/error/fatal`` and
``get_effective_level``, as rclpy's ``RcutilsLogger`` has.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

CORE = 'seg_perception'
# Python's levels and rcutils' severities share their numbers (10 debug ... 50 fatal).
_METHODS = ((logging.CRITICAL, 'fatal'), (logging.ERROR, 'error'),
            (logging.WARNING, 'warning'), (logging.INFO, 'info'), (logging.DEBUG, 'debug'))


class RosLogHandler(logging.Handler):
    """Each record of the core to ``ros_logger``, as ``module: message``."""

    def __init__(self, ros_logger: Any):
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = record.name[len(CORE) + 1:] if record.name.startswith(CORE + '.') \
                else record.name
            method = next((m for level, m in _METHODS if record.levelno >= level), 'debug')
            getattr(self.ros_logger, method)(f'{name}: {self.format(record)}')
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)


def forward_core_logs(ros_logger: Any) -> Callable[[], None]:
    """Send the core's log records to ``ros_logger``; returns the function that stops it.

    The core logger's level is set to the ROS logger's, so records the ROS side would drop
    are not even formatted, and restored on stop; records also stop propagating to the root
    logger meanwhile (where nothing would show them but Python's last-resort stderr line).
    """
    core = logging.getLogger(CORE)
    handler = RosLogHandler(ros_logger)
    saved = (core.level, core.propagate)
    try:
        level = int(ros_logger.get_effective_level())
    except (AttributeError, TypeError, ValueError):    # no levels: everything from INFO
        level = logging.INFO
    core.setLevel(level or logging.INFO)               # 0: unset, the ROS default INFO
    core.propagate = False
    core.addHandler(handler)

    def stop() -> None:
        core.removeHandler(handler)
        core.setLevel(saved[0])
        core.propagate = saved[1]
    return stop
