"""seg_perception.runtime.trt.progress: the engine build's progress lines, without TensorRT.

BuildProgress is driven with a fake clock the way TensorRT 10 calls an
IProgressMonitor (nested phases, steps from 0); the builder wiring is checked on
test_tensorrt_runtime's recording stand-in of the API with an IProgressMonitor base.
"""
import logging
import re

from seg_perception.runtime.trt import engine as trt_mod, progress
from test_tensorrt_runtime import fake_trt, spec_for
from trt_helpers import write_model


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(interval_s=2.0):
    lines, clock = [], Clock()
    return progress.BuildProgress(lines.append, interval_s, clock), lines, clock


def test_top_level_phases_always_logged_with_elapsed_time_and_duration():
    monitor, lines, clock = make()
    monitor.phase_start('Building engine', None, 3)
    clock.now += 0.5
    monitor.phase_start('Tactic selection', 'Building engine', 40)   # nested, < interval
    clock.now += 0.5
    monitor.phase_finish('Tactic selection')
    clock.now += 11.0
    monitor.phase_finish('Building engine')
    assert lines == ['TensorRT build 0.0 s: Building engine (3 steps)',
                     'TensorRT build 12.0 s: Building engine done in 12.0 s']


def test_steps_are_throttled_to_one_line_per_interval_and_name_the_phase_path():
    monitor, lines, clock = make(interval_s=2.0)
    monitor.phase_start('Building engine', None, 2)
    monitor.phase_start('Tactic selection', 'Building engine', 63)
    for step in range(63):                      # one step every 0.25 s: 15.75 s in all
        clock.now += 0.25
        assert monitor.step_complete('Tactic selection', step) is True    # never cancels
    step_lines = lines[1:]
    assert len(step_lines) == 7                # 15.75 s / 2 s, not 63 lines
    assert step_lines[0] == 'TensorRT build 2.0 s: Building engine > Tactic selection: step 8/63'
    assert step_lines[-1].endswith('Building engine > Tactic selection: step 56/63')


def test_step_of_an_unknown_phase_still_reported():
    monitor, lines, clock = make(interval_s=0.0)
    assert monitor.step_complete('Layer fusion', 4)
    assert lines == ['TensorRT build 0.0 s: Layer fusion: step 5']


def test_lines_go_to_stderr_when_logging_is_not_configured(monkeypatch, capsys):
    monkeypatch.setattr(progress.LOG, 'hasHandlers', lambda: False)
    progress.log_line('TensorRT build 1.0 s: Building engine (1 step)')
    assert '[seg_perception] TensorRT build 1.0 s' in capsys.readouterr().err


class FakeMonitorBase:
    def __init__(self):
        self.initialised = True


def test_build_sets_a_monitor_that_reports_through_the_log(tmp_path, monkeypatch, caplog):
    model = write_model(tmp_path / 'net.onnx')
    trt = fake_trt()
    trt.IProgressMonitor = FakeMonitorBase
    seen = {}

    def build(network, config):                # TensorRT calling the monitor while building
        monitor = seen['monitor'] = config.progress_monitor
        monitor.phase_start('Building engine', None, 1)
        assert monitor.step_complete('Building engine', 0) is True
        monitor.phase_finish('Building engine')
        return b'PLAN'
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: trt)
    builder_type = trt.Builder
    monkeypatch.setattr(builder_type, 'build_serialized_network',
                        lambda self, network, config: build(network, config))
    with caplog.at_level(logging.INFO, logger=progress.__name__):
        assert trt_mod.build_engine_bytes(model, spec_for(model)) == b'PLAN'
    assert isinstance(seen['monitor'], FakeMonitorBase) and seen['monitor'].initialised
    messages = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert messages[0].endswith('Building engine (1 step)')
    assert messages[-1].startswith('TensorRT build ') and 'Building engine done in' in messages[-1]


def test_monitor_swallows_errors_of_the_logic_instead_of_ending_the_build():
    class Broken:
        def phase_start(self, *args):
            raise RuntimeError('log sink gone')

        def step_complete(self, *args):
            raise RuntimeError('log sink gone')

        def phase_finish(self, *args):
            raise RuntimeError('log sink gone')
    trt = fake_trt()
    trt.IProgressMonitor = FakeMonitorBase
    monitor = progress.progress_monitor(trt, Broken())
    monitor.phase_start('Building engine', None, 1)
    assert monitor.step_complete('Building engine', 0) is True
    monitor.phase_finish('Building engine')


def test_no_monitor_before_tensorrt_10():
    assert progress.progress_monitor(fake_trt(), progress.BuildProgress()) is None


def test_build_engine_command_shows_the_progress(tmp_path, monkeypatch, caplog, capsys):
    from seg_perception import cli
    from trt_helpers import ENV
    model = write_model(tmp_path / 'net.onnx')
    trt = fake_trt()
    trt.IProgressMonitor = FakeMonitorBase

    def build(self, network, config):
        monitor = config.progress_monitor
        monitor.phase_start('Building engine', None, 2)
        monitor.step_complete('Building engine', 0)
        monitor.phase_finish('Building engine')
        return b'PLAN'
    monkeypatch.setattr(trt.Builder, 'build_serialized_network', build)
    trt.Runtime = lambda logger: type('Runtime', (), {
        'deserialize_cuda_engine': lambda self, data: object()})()
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: trt)
    monkeypatch.setattr(trt_mod, 'device_environment', lambda: dict(ENV))
    with caplog.at_level(logging.INFO, logger=progress.__name__):
        assert cli.main(['build-engine', '--model', model, '--precision', 'fp16',
                         '--cache-dir', str(tmp_path / 'engines')]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert re.fullmatch(r'TensorRT build \d+\.\d s: Building engine \(2 steps\)', lines[0])
    assert 'Building engine done in' in lines[-1]
    assert 'built in' in capsys.readouterr().out
