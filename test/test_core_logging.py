"""The core's Python log records reach the node's ROS logger (ros/core_logging.py), tested
with a stand-in for rclpy's logger; test_launch_exit.py sees them in a real node's output."""
import logging

import pytest

from seg_perception.ros.core_logging import forward_core_logs
from seg_perception.runtime.trt.progress import BuildProgress


class FakeRosLogger:
    """What the handler uses of rclpy's RcutilsLogger: a method per severity, a level."""

    def __init__(self, level=20):
        self.level, self.lines = level, []
        for severity in ('debug', 'info', 'warning', 'error', 'fatal'):
            setattr(self, severity, lambda text, severity=severity:
                    self.lines.append((severity, text)))

    def get_effective_level(self):
        return self.level


@pytest.fixture
def forwarded():
    ros = FakeRosLogger()
    stop = forward_core_logs(ros)
    yield ros
    stop()


def test_core_records_arrive_at_their_severity_with_the_module_named(forwarded):
    log = logging.getLogger('seg_perception.runtime.backends')
    log.debug('not shown at the ROS default level')
    log.info('precision: %s (%s)', 'int8', 'auto: AVX512-VNNI')
    log.warning('threads: %d asked', 8)
    log.error('bad')
    log.critical('worse')
    assert forwarded.lines == [('info', 'runtime.backends: precision: int8 (auto: AVX512-VNNI)'),
                               ('warning', 'runtime.backends: threads: 8 asked'),
                               ('error', 'runtime.backends: bad'),
                               ('fatal', 'runtime.backends: worse')]


def test_the_ros_level_decides_what_is_forwarded():
    ros = FakeRosLogger(level=30)                   # --log-level warn
    stop = forward_core_logs(ros)
    try:
        logging.getLogger('seg_perception.ground.ego').info('dropped')
        logging.getLogger('seg_perception.ground.ego').warning('kept')
    finally:
        stop()
    assert ros.lines == [('warning', 'ground.ego: kept')]
    debug = FakeRosLogger(level=10)
    stop = forward_core_logs(debug)
    try:
        logging.getLogger('seg_perception').debug('top level')
    finally:
        stop()
    assert debug.lines == [('debug', 'seg_perception: top level')]


def test_stopping_restores_the_core_logger_and_forwards_nothing_more():
    core = logging.getLogger('seg_perception')
    before = (core.level, core.propagate, list(core.handlers))
    ros = FakeRosLogger()
    stop = forward_core_logs(ros)
    assert core.propagate is False and len(core.handlers) == len(before[2]) + 1
    stop()
    logging.getLogger('seg_perception.runtime.pipeline').warning('after the node')
    assert ros.lines == []
    assert (core.level, core.propagate, list(core.handlers)) == before


def test_tensorrt_build_progress_goes_to_the_node_log_not_stderr(forwarded, capsys):
    now = [0.0]
    progress = BuildProgress(interval_s=2.0, clock=lambda: now[0])
    progress.phase_start('Building engine', None, 3)
    now[0] = 5.0
    progress.phase_finish('Building engine')
    assert capsys.readouterr().err == ''
    lines = [text for severity, text in forwarded.lines if severity == 'info']
    assert lines and all(text.startswith('runtime.trt.progress: TensorRT build') for text in lines)
    assert any('Building engine' in text for text in lines)
