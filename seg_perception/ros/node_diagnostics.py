"""segmentation_node's /diagnostics: two tasks per camera on a diagnostic_updater.

``<camera> segmentation`` (rates, drops, latency, backend; health() in diagnostics.py
turns them into a level) and ``<camera> camera`` (what the images themselves look like,
camera_health.py). The counting and the rules are ROS-free (diagnostics.py); this module
only copies them into DiagnosticStatus.
"""
import functools

import diagnostic_updater
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.clock import Clock, ClockType

from seg_perception.ros.diagnostics import ERROR, OK, WARN, camera_health, health, key_values

# DiagnosticStatus.level is a bytes field in Humble: map our ints to its constants.
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


def create_updater(node) -> diagnostic_updater.Updater:
    """An updater on ``node`` with both tasks of each configured camera.

    The tasks read the node's state when they run (its stats, worker, backend values and
    ground outputs change with activation and model swaps), not when they are made.
    """
    updater = diagnostic_updater.Updater(node)
    # The updater times itself on the node clock: on sim time /diagnostics would stop
    # with /clock (a bag paused or played to its end) and keep counts from before the
    # last frames. Its rates and latencies are wall-clock ones: so is its period.
    node.destroy_timer(updater.timer)
    updater.timer = node.create_timer(updater.period, updater.update,
                                      clock=Clock(clock_type=ClockType.STEADY_TIME))
    updater.setHardwareID(node.backend_values.get('device', 'none'))
    for camera in node.config.cameras:
        updater.add(f'{camera.name} segmentation',
                    functools.partial(diagnose_segmentation, node, camera.name))
        updater.add(f'{camera.name} camera',
                    functools.partial(diagnose_camera, node, camera.name))
    return updater


def diagnose_segmentation(node, camera: str, stat):
    """Rates, drops, latency and backend of ``camera``'s segmentation, with their level."""
    snapshot = node.stats[camera].snapshot()
    level, message = health(snapshot, node.config.min_rate_hz, node.config.latency_budget_ms)
    if node.worker is not None and not node.worker.alive:
        level, message = ERROR, 'inference thread stopped'
    stat.summary(_LEVELS[level], message)
    for key, value in key_values(snapshot, node.backend_values):
        stat.add(key, value)
    if node.ground is not None:
        stat.add('ground', node.ground.outputs.status(camera))
    return stat


def diagnose_camera(node, camera: str, stat):
    """What ``camera``'s images look like (frozen, dark, out-of-order stamps...)."""
    state = node.health[camera]
    level, message = camera_health(state.report(), node.stats[camera].received)
    stat.summary(_LEVELS[level], message)
    stat.add('stamps_out_of_order', str(state.stamps_out_of_order))
    return stat
