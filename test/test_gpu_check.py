"""benchmarks/gpu_check.py's CPU-side logic: the steps, the budget, the report, agreement.

The check itself needs an NVIDIA GPU; here its commands go to a fake runner that
answers as build-engine, bench and the check's own sub-steps do, so the order, the
skipping, the time limits and what reaches benchmarks/GPU.md are checked.
"""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                'benchmarks'))
import gpu_check  # noqa: E402


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


BUILD_OUTPUT = '''/tmp/engines/abc.engine
  precision      fp16
  engine         9.1 MB, built in 41.0 s
'''

QUANTIZE_OUTPUT = '''/tmp/w/default_model.trt.int8.onnx
  target         tensorrt: QInt8 activations, QInt8 weights, QDQ format
  calibration    minmax on 23 of 23 images
  quantised      54 network nodes; float: Resize
  time           30.1 s
  next           seg-perception build-engine --model /tmp/w/default_model.trt.int8.onnx
'''


class FakeRunner:
    """Answers each step by its name; ``fail``/``hang`` name steps that fail or time out."""

    def __init__(self, work, clock, fail=(), hang=(), seconds=20.0):
        self.work, self.clock, self.fail, self.hang = work, clock, fail, hang
        self.seconds, self.calls = seconds, []

    def __call__(self, command, timeout_s):
        name = self.step_name(command)
        self.calls.append((name, timeout_s))
        if name in self.hang:
            self.clock.now += timeout_s
            return gpu_check.Outcome(None, '', 'building layer 12', timeout_s)
        self.clock.now += self.seconds
        if name in self.fail:
            return gpu_check.Outcome(1, '', 'Traceback...\nCommandError: no GPU', self.seconds)
        return gpu_check.Outcome(0, self.stdout(name, command), '', self.seconds)

    @staticmethod
    def step_name(command):
        if 'build-engine' in command:
            return 'build ' + command[command.index('--precision') + 1]
        if 'bench' in command:
            return (f'bench {command[command.index("--precision") + 1]} '
                    f'x{command[command.index("--batch") + 1]}')
        for word in ('frames', 'quantize', 'agree'):
            if word in command:
                return word if word != 'agree' else \
                    'agree ' + command[command.index('--precision') + 1]
        raise AssertionError(command)

    def stdout(self, name, command):
        if name == 'frames':
            return json.dumps({'frames': 23, 'bag': 'seg_perception/assets/sample_bag'})
        if name == 'quantize':
            return QUANTIZE_OUTPUT
        if name.startswith('build'):
            return BUILD_OUTPUT
        if name.startswith('agree'):
            return json.dumps({'agreement': 0.9991, 'pixels': 1000, 'frames': 2,
                               'per_frame': [0.9990, 0.9992]})
        with open(command[command.index('--output') + 1], 'w') as stream:
            json.dump({'results': [{'describe': {'precision': name.split()[1]},
                                    'fps': 250.0, 'peak_rss_mb': 900.0,
                                    'stages_ms': {'total': {'median': 4.0, 'p95': 4.5},
                                                  'infer': {'median': 2.5, 'p95': 2.7}}}]},
                      stream)
        return ''


def run(tmp_path, budget=470.0, **runner_kwargs):
    clock = FakeClock()
    runner = FakeRunner(str(tmp_path), clock, **runner_kwargs)
    report = gpu_check.Report(str(tmp_path / 'GPU.md'), gpu_check.header(
        {'gpu': 'NVIDIA H100 80GB HBM3', 'driver': '580.159.04', 'tensorrt': '10.16.1.11'},
        'bash benchmarks/gpu_check.sh', '2026-12-06T05:00:00+00:00'))
    passed = gpu_check.run_steps(gpu_check.plan(str(tmp_path), 'default_model.onnx'), runner,
                                 report, clock.now + budget, clock)
    return passed, runner, (tmp_path / 'GPU.md').read_text()


def test_every_step_runs_in_order_and_its_figure_reaches_the_report(tmp_path):
    passed, runner, text = run(tmp_path)
    assert all(passed.values()) and len(passed) == 10
    assert [name for name, _ in runner.calls] == [
        'frames', 'build fp16', 'agree fp16', 'bench fp16 x1', 'bench fp16 x6',
        'quantize', 'build int8', 'agree int8', 'bench int8 x1', 'bench int8 x6']
    assert 'GPU: NVIDIA H100 80GB HBM3, driver 580.159.04' in text
    assert '- build-engine int8: 9.1 MB, built in 41.0 s' in text
    assert ('- INT8 (QDQ) model: 54 network nodes; float: Resize; calibration minmax on 23 '
            'of 23 images') in text
    assert '99.910 % of 1000 pixels agree over 2 frames (worst frame 99.90 %)' in text
    assert 'target >= 99.5 %: met' in text
    assert ('- pipeline TensorRT int8, 6 cameras of 1920x1080 per call: 250.0 frames/s; '
            'per call total 4.0 ms median / 4.5 ms p95') in text


def test_engines_are_built_with_the_profiles_and_timing_cache_the_pipeline_looks_for(tmp_path):
    steps = {s.name: s for s in gpu_check.plan(str(tmp_path), 'm.onnx')}
    build = steps['build fp16'].command
    shapes = build[build.index('--shapes') + 1:build.index('--cache-dir')]
    assert shapes == list(gpu_check.PROFILES)
    assert build[build.index('--timing-cache') + 1].startswith(str(tmp_path / 'engines'))
    assert steps['build int8'].command[steps['build int8'].command.index('--model') + 1] \
        .endswith('.int8.onnx')
    bench = steps['bench fp16 x6'].command
    assert bench[bench.index('--engine-cache-dir') + 1] == str(tmp_path / 'engines')


def test_a_failed_quantisation_skips_only_what_needs_the_int8_model(tmp_path):
    passed, runner, text = run(tmp_path, fail=('quantize',))
    assert '- quantize: FAILED (exit 1, 20 s): CommandError: no GPU' in text
    assert '- build int8: skipped, needs quantize' in text
    assert '- bench int8 x6: skipped, needs build int8' in text
    assert passed['bench fp16 x6'] and not passed['agree int8']
    assert 'build int8' not in [name for name, _ in runner.calls]


def test_a_step_past_its_limit_is_stopped_and_named(tmp_path):
    passed, runner, text = run(tmp_path, hang=('build fp16',))
    assert dict(runner.calls)['build fp16'] == 150
    assert '- build fp16: stopped at its limit after 150 s: building layer 12' in text
    assert '- agree fp16: skipped, needs build fp16' in text
    assert passed['agree int8'] and passed['bench int8 x6']


def test_the_budget_caps_each_step_and_the_rest_are_not_started(tmp_path):
    # 20 s a step: frames, build fp16, agree fp16, then bench fp16 x1 gets what is left
    passed, runner, text = run(tmp_path, budget=60.0 + gpu_check.MIN_STEP_S + 5,
                               hang=('bench fp16 x1',))
    assert runner.calls[-1] == ('bench fp16 x1', pytest.approx(gpu_check.MIN_STEP_S + 5))
    assert len(runner.calls) == 4
    assert '- bench fp16 x6: not run, the time budget is spent' in text
    assert '- quantize: not run, the time budget is spent' in text
    assert '- build int8: skipped, needs quantize' in text


def test_a_cut_off_run_leaves_the_header_and_the_figures_so_far(tmp_path):
    report = gpu_check.Report(str(tmp_path / 'GPU.md'), gpu_check.header(
        {}, 'bash benchmarks/gpu_check.sh', '2026-12-06T05:00:00+00:00'))
    report.add('- build-engine fp16: 9.1 MB, built in 41.0 s')
    text = (tmp_path / 'GPU.md').read_text()               # read while "still running"
    assert 'GPU: unknown, driver unknown' in text and 'built in 41.0 s' in text
    assert 'finished' not in text.split('## Results')[1]


def test_unreadable_output_fails_the_step_instead_of_the_check(tmp_path):
    step = gpu_check.Step('agree fp16', ['x'], 10, gpu_check.agreement_lines('fp16'))
    report = gpu_check.Report(str(tmp_path / 'GPU.md'), ['# t'])
    passed = gpu_check.run_steps(
        [step], lambda command, timeout: gpu_check.Outcome(0, 'Segmentation fault', '', 1.0),
        report, 100.0, lambda: 0.0)
    assert passed == {'agree fp16': False}
    assert 'output is unreadable' in (tmp_path / 'GPU.md').read_text()


def test_label_agreement_counts_pixels_over_all_frames():
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[0, :5] = 1                                            # 5 of 100 differ
    found = gpu_check.label_agreement([(a, b), (a, a.copy())])
    assert found['agreement'] == pytest.approx(195 / 200) and found['pixels'] == 200
    assert found['per_frame'] == [pytest.approx(0.95), 1.0]
    with pytest.raises(ValueError, match='differ in size'):
        gpu_check.label_agreement([(a, np.zeros((5, 5), np.uint8))])
    with pytest.raises(ValueError, match='no frames'):
        gpu_check.label_agreement([])


def test_agreement_below_the_target_is_marked_missed():
    line = gpu_check.agreement_lines('int8')(json.dumps(
        {'agreement': 0.99, 'pixels': 10, 'frames': 1, 'per_frame': [0.99]}))[0]
    assert line.endswith('MISSED')


def test_environment_facts_from_nvidia_smi_and_the_modules():
    answers = {'nvidia-smi': 'NVIDIA H200, 580.159.03\n', 'tensorrt': '10.16.1.11\n',
               'onnxruntime': '1.23.2\n'}

    def runner(command, timeout):
        key = 'nvidia-smi' if command[0] == 'nvidia-smi' else command[-1].split()[1][:-1]
        return gpu_check.Outcome(0, answers[key], '', 0.1)
    facts = gpu_check.environment_facts(runner)
    assert facts['gpu'] == 'NVIDIA H200' and facts['driver'] == '580.159.03'
    assert facts['tensorrt'] == '10.16.1.11' and facts['onnxruntime'] == '1.23.2'
    missing = gpu_check.environment_facts(lambda c, t: gpu_check.Outcome(127, '', 'nf', 0.0))
    assert 'gpu' not in missing and 'tensorrt' not in missing


def test_run_command_reports_a_missing_program_and_stops_one_past_its_limit():
    missing = gpu_check.run_command(['no-such-program-here'], 5.0)
    assert missing.returncode == 127 and 'no-such-program-here' in missing.stderr
    stopped = gpu_check.run_command([sys.executable, '-c', 'import time; time.sleep(60)'], 0.5)
    assert stopped.returncode is None
    done = gpu_check.run_command([sys.executable, '-c', 'print("ok")'], 30.0)
    assert done.returncode == 0 and done.stdout == 'ok\n'


def test_steps_look_engines_up_under_the_profiles_they_were_built_with():
    shapes = gpu_check.run_command([sys.executable, '-c', 'import os; print(os.environ['
                                    '"SEG_PERCEPTION_TRT_SHAPES"])'], 30.0).stdout.split()
    assert shapes == list(gpu_check.PROFILES)
    from seg_perception.runtime.trt.cache import parse_profile
    from seg_perception.runtime.trt.engine import SHAPES_ENV
    assert list(gpu_check.STEP_ENV) == [SHAPES_ENV]
    assert [parse_profile(p) for p in shapes][1] == ((1, 64, 64), (6, 1080, 1920),
                                                     (6, 1280, 2048))


def test_sample_frames_are_exported_as_images(tmp_path):
    found = gpu_check.export_frames(str(tmp_path / 'frames'))
    files = sorted(os.listdir(tmp_path / 'frames'))
    assert found['frames'] == len(files) > 0 and files[0] == 'frame_000.png'


def test_every_planned_command_parses_with_the_command_line_it_calls():
    # The check has never run on a GPU here: a flag renamed under it would only show on the
    # lent machine, with its minutes counted. Each step's argv is parsed by the real parser
    # of the command it calls (seg-perception's subcommand, or the check's own).
    import argparse
    import importlib
    steps = gpu_check.plan('/work', '/models/model.onnx')
    assert steps
    for step in steps:
        argv = step.command[1:]
        if argv[:2] == ['-m', 'seg_perception.cli']:
            name, options = argv[2], argv[3:]
            module = importlib.import_module(
                'seg_perception.commands.' + name.replace('-', '_'))
            parser = argparse.ArgumentParser(prog=f'seg-perception {name}')
            module.configure_parser(parser)
        else:
            assert argv[0] == os.path.abspath(gpu_check.__file__), step.command
            parser, options = gpu_check.build_parser(), argv[1:]
        try:
            parser.parse_args(options)
        except SystemExit:
            pytest.fail(f'step {step.name!r}: {" ".join(argv)} does not parse')
