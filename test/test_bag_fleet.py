"""bag-eval over many bags (#25): parallel workers, failures, --resume, Ray, A/B, a stop
signal, progress."""
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import bag_helpers as bh
import fleet_hooks
from seg_perception import cli
from seg_perception.replay.aggregate import aggregate
from seg_perception.replay.fleet import Progress, SameRunCheck, find_bags, run_fleet

OPTIONS = {'label_topics': ['/cam/ground_truth/labels'], 'overlays': 1}


@pytest.fixture
def bags(tmp_path):
    """Two good labelled bags, one damaged past reading, one that kills its worker."""
    folder = tmp_path / 'bags'
    folder.mkdir()
    bh.labelled_bag(folder / 'good_a', 3, wrong=(1,))
    bh.labelled_bag(folder / 'good_b', 2, wrong=(0,))
    bh.labelled_bag(folder / 'killer', 2)
    (folder / 'damaged.mcap').write_bytes(b'\x89MCAP0\r\n' + os.urandom(200))
    return folder


def fleet(bags, out, **kwargs):
    kwargs.setdefault('options', OPTIONS)
    kwargs.setdefault('progress', False)
    return run_fleet([str(bags)], [bh.model_path()], str(out), **kwargs)


def per_bag_metrics(out, name, folder='bags'):
    return json.loads((out / folder / name / 'metrics.json').read_text())


def test_bags_from_paths_folders_and_globs(bags):
    assert [os.path.basename(b) for b in find_bags([str(bags)])] == [
        'damaged.mcap', 'good_a', 'good_b', 'killer']
    assert find_bags([str(bags / 'good_*'), str(bags / 'good_a')]) == [
        str(bags / 'good_a'), str(bags / 'good_b')]
    with pytest.raises(ValueError, match='no bag there'):
        find_bags([str(bags / 'nothing*')])


def test_parallel_run_pools_the_bags_lists_the_failed_and_resumes_the_rest(bags, tmp_path):
    out = tmp_path / 'out'
    summary = fleet(bags, out, workers=2, hook=fleet_hooks.kill_the_worker_of_killer_bags)
    assert (summary['bags_total'], summary['bags_ok'], summary['bags_failed']) == (4, 2, 2)
    reasons = {f['name']: f['reason'] for f in summary['failed']}
    assert 'SIGKILL' in reasons['killer']
    assert 'BagError' in reasons['damaged']
    pooled = summary['per_model'][0]
    good = [per_bag_metrics(out, name) for name in ('good_a', 'good_b')]
    # pooled = summed confusion matrices, not averaged mIoU
    matrix = np.sum([g['confusion_matrix'] for g in good], axis=0)
    np.testing.assert_array_equal(pooled['metrics']['confusion_matrix'], matrix)
    assert pooled['metrics']['num_images'] == 5 and pooled['frames'] == 5
    assert pooled['metrics']['miou'] != pytest.approx(np.mean([g['miou'] for g in good]))
    assert pooled['latency_ms']['node']['count'] == 5
    assert pooled['latency_ms']['node']['max'] == pytest.approx(
        max(g['latency_ms']['node']['max'] for g in good), abs=1e-3)
    assert pooled['cameras']['cam']['frames'] == 5
    assert pooled['cameras']['cam']['recorded_fps'] == pytest.approx(10.0)
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['per_model'][0]['metrics']['miou'] == pytest.approx(pooled['metrics']['miou'])
    report = (out / 'report.md').read_text()
    assert '2 of 4 bags failed' in report and '| killer |' in report
    kept = {n: (out / 'results' / f'{n}.json').stat().st_mtime_ns for n in ('good_a', 'good_b')}
    resumed = fleet(bags, out, resume=True, workers=1)
    assert resumed['resumed'] == ['good_a', 'good_b']
    assert (resumed['bags_ok'], [f['name'] for f in resumed['failed']]) == (3, ['damaged'])
    assert kept == {n: (out / 'results' / f'{n}.json').stat().st_mtime_ns for n in kept}
    assert resumed['per_model'][0]['frames'] == 7


@pytest.mark.slow
def test_the_same_run_on_ray_gives_the_same_aggregate(bags, tmp_path):
    ray = pytest.importorskip('ray')
    (bags / 'killer').rename(bags / 'good_c')
    local = fleet(bags, tmp_path / 'local', workers=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = fleet(bags, tmp_path / 'ray', ray=True)
    finally:
        ray.shutdown()
    assert on_ray['failed'][0]['name'] == 'damaged' and on_ray['bags_ok'] == 3
    for key in ('bags_total', 'bags_ok'):
        assert on_ray[key] == local[key]
    one, other = local['per_model'][0], on_ray['per_model'][0]
    assert one['metrics'] == other['metrics']
    assert [(b['name'], b['frames'], b['miou']) for b in one['per_bag']] == \
        [(b['name'], b['frames'], b['miou']) for b in other['per_bag']]
    assert one['latency_ms']['node']['count'] == other['latency_ms']['node']['count'] == 7


@pytest.mark.slow
def test_a_stop_signal_on_ray_cancels_the_rest_and_keeps_the_finished(bags, tmp_path):
    """SIGTERM after the first bag on Ray (started by the run: ray.init would make SIGTERM
    exit at once): the finished bags are kept, the rest not run."""
    ray = pytest.importorskip('ray')
    from seg_perception.replay.bag_eval import RunStopped
    from seg_perception.signals import StopSignals
    (bags / 'killer').rename(bags / 'good_c')
    out = tmp_path / 'ray'
    try:
        with StopSignals() as stop:
            def stop_after_the_first_bag():
                if not stop() and list((out / 'results').glob('*.json')):
                    os.kill(os.getpid(), signal.SIGTERM)
                return stop()
            with pytest.raises(RunStopped, match='stopped by SIGTERM'):
                fleet(bags, out, ray=True, stop=stop_after_the_first_bag)
    finally:
        ray.shutdown()
    metrics = json.loads((out / 'metrics.json').read_text())
    kept = sorted(p.stem for p in (out / 'results').glob('*.json'))
    assert metrics['status'] == 'partial' and metrics['not_run']
    assert sorted(kept + [b['name'] for b in metrics['not_run']]) == \
        ['damaged', 'good_a', 'good_b', 'good_c']


def test_a_model_compared_with_itself_gives_zero_deltas(bags, tmp_path, capsys):
    out = tmp_path / 'ab'
    assert cli.main(['bag-eval', '--bag', str(bags / 'good_*'), '--model', bh.model_path(),
                     '--compare', bh.model_path(), '--output', str(out), '--label-topic',
                     '/cam/ground_truth/labels', '--workers', '1', '--no-progress']) == 0
    comparison = json.loads((out / 'metrics.json').read_text())['comparison']
    assert comparison['label_disagreement'] == 0.0
    assert comparison['miou_delta'] == 0.0 and comparison['drivable_iou_delta'] == 0.0
    assert set(comparison['per_class_iou_delta'].values()) <= {0.0, None}
    assert [b['label_disagreement'] for b in comparison['per_bag']] == [0.0, 0.0]
    assert comparison['most_different'] == []
    assert (out / 'compare' / 'good_a' / 'metrics.json').is_file()
    printed = capsys.readouterr().out
    assert 'labels differ on 0.000% of the pixels' in printed
    # what ran each side is recorded; the same model given twice is no accident
    per_model = json.loads((out / 'metrics.json').read_text())['per_model']
    for inference in (m['inference'] for m in per_model):
        assert (inference['file'], inference['precision']) == (bh.model_path(), 'fp32')
    assert comparison['same_run'] is False and 'same file' not in printed
    # two files that ran as one (precision auto's INT8 form): said so in metrics.json
    results = [json.loads(p.read_text()) for p in sorted((out / 'results').glob('*.json'))]
    assert aggregate(results, ['A.onnx', 'A.cpu.int8.onnx'])['comparison']['same_run'] is True


def ran(file, precision):
    return {'file': file, 'backend': 'onnxruntime', 'device': 'cpu', 'precision': precision,
            'precision_reason': None}


def ab_result(models, inferences):
    return {'status': 'ok', 'runs': [{'model': m, 'ran': r} for m, r in zip(models, inferences)]}


def test_two_models_that_run_as_the_same_file_are_warned_of_once(caplog):
    """--model A --compare A.cpu.int8.onnx with precision auto on a VNNI CPU runs the INT8
    file for both: one warning line saying so, once per run."""
    check = SameRunCheck()
    with caplog.at_level(logging.WARNING):
        check.add(ab_result(['A', 'A'], [ran('A', 'fp32')] * 2))        # deliberate
        check.add(ab_result(['A', 'B'], [ran('A', 'fp32'), ran('B', 'int8')]))
        check.add({'status': 'failed', 'runs': []})
        assert caplog.messages == []
        for _ in range(2):
            check.add(ab_result(['A', 'B'], [ran('B', 'int8')] * 2))
    (message,) = caplog.messages
    assert '\n' not in message
    assert message.startswith('--model and --compare both run B at int8 on onnxruntime')
    assert message.endswith('give --precision fp32 to run each file as it is')


@pytest.mark.slow
def test_the_int8_form_gives_small_deltas_and_shows_where(bags, tmp_path):
    """The small UNet of the quantisation tests against its INT8 form: the labels differ
    on a few pixels (test_quantize's agreement floor), the report shows where."""
    pytest.importorskip('onnxruntime.quantization')
    from test_quantize import AGREEMENT_FLOOR, export_small_unet, write_scenes
    from seg_perception.deploy.quantize import find_images, quantize_model
    fp32 = export_small_unet(tmp_path / 'unet.onnx')
    write_scenes(str(tmp_path / 'calibration'), 4, seed=1)
    int8 = str(tmp_path / 'unet.int8.onnx')
    quantize_model(fp32, int8, find_images(str(tmp_path / 'calibration')))
    summary = run_fleet([str(bags / 'good_*')], [fp32, int8], str(tmp_path / 'ab'),
                        options={'overlays': 1}, workers=2, progress=False)
    comparison = summary['comparison']
    assert 0.0 < comparison['label_disagreement'] < 1.0 - AGREEMENT_FLOOR
    worst = comparison['most_different'][0]
    assert worst == max(comparison['per_bag'], key=lambda b: b['label_disagreement'])['name']
    assert (tmp_path / 'ab' / 'overlays_ab' / f'{worst}.png').is_file()
    assert 'A above B' in (tmp_path / 'ab' / 'report.md').read_text()


@pytest.mark.slow
def test_the_default_model_against_its_int8_file_on_the_sample_bag(tmp_path, capsys):
    """The worked example of benchmarks/FLEET.md: --precision fp32 runs each file as it is
    (A fp32, B int8) and the deltas are small; precision auto on an int8 dot-product CPU
    runs the INT8 file for A too, and says so."""
    from seg_perception.commands.demo import sample_bag_path
    from seg_perception.model_info import resolve_model_path
    from seg_perception.runtime.backends import cpu_int8_form
    from seg_perception.runtime.cpu_features import int8_dot_product
    fp32 = resolve_model_path(None)
    int8 = cpu_int8_form(fp32)
    common = ['bag-eval', '--bag', sample_bag_path(), '--model', fp32, '--compare', int8,
              '--label-topic', '/camera/dash/ground_truth/drivable_mask', '--workers', '1',
              '--no-progress']
    assert cli.main(common + ['--output', str(tmp_path / 'ab'), '--precision', 'fp32']) == 0
    metrics = json.loads((tmp_path / 'ab' / 'metrics.json').read_text())
    assert [m['inference']['precision'] for m in metrics['per_model']] == ['fp32', 'int8']
    assert [m['inference']['file'] for m in metrics['per_model']] == [fp32, int8]
    comparison = metrics['comparison']
    assert not comparison['same_run'] and 0.0 < comparison['label_disagreement'] < 0.1
    assert set(comparison['per_class_iou_delta']) == {'drivable', 'not drivable'}
    assert all(abs(delta) < 0.03 for delta in comparison['per_class_iou_delta'].values())
    # the sample bag's masks mark each frame's bonnet 128: the pooled scores say they skip it
    for pooled in metrics['per_model']:
        assert 0.2 < pooled['metrics']['not_scored']['fraction'] < 0.35
    printed = capsys.readouterr().out
    assert printed.count('(not scored: 26.') == 2, printed
    assert 'These scores leave out 26.' in (tmp_path / 'ab' / 'report.md').read_text()
    assert cli.main(common + ['--output', str(tmp_path / 'auto')]) == 0
    comparison = json.loads((tmp_path / 'auto' / 'metrics.json').read_text())['comparison']
    vnni = int8_dot_product() is not None
    assert comparison['same_run'] is vnni
    assert ('both ran the same file' in capsys.readouterr().out) is vnni
    assert (comparison['label_disagreement'] == 0.0) is vnni


def test_ray_not_installed_is_one_line_saying_how_to_install(bags, tmp_path, capsys,
                                                             monkeypatch):
    import builtins
    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == 'ray':
            raise ImportError('No module named ray')
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_ray)
    assert cli.main(['bag-eval', '--bag', str(bags / 'good_a'), '--output', str(tmp_path / 'o'),
                     '--ray', '--no-progress']) == 2
    error = capsys.readouterr().err.strip()
    assert '\n' not in error and "pip install 'seg_perception[fleet]'" in error


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_gives_bags_frames_per_second_and_eta_at_most_once_a_second():
    clock, stream = Clock(100.0), io.StringIO()
    meter = Progress(4, stream=stream, clock=clock)
    ok = {'status': 'ok', 'runs': [{'summary': {'frames': 10}}]}
    assert meter.line(100.0) == 'bags 0/4, ? frames/s, ETA ?'        # no time yet
    assert meter.line(101.0) == 'bags 0/4, 0.0 frames/s, ETA ?'
    for now, result in ((102.0, ok), (102.5, {'status': 'failed', 'runs': []}), (103.5, ok),
                        (103.6, ok)):
        clock.now = now
        meter.add(result)
    # 102.5 is within a second of the line at 102.0; 103.6 is the last bag: always shown
    assert stream.getvalue().splitlines() == [
        'bags 1/4, 5.0 frames/s, ETA 6 s',
        'bags 3/4 (1 failed), 5.7 frames/s, ETA 1 s',
        'bags 4/4 (1 failed), 8.3 frames/s, ETA 0 s']
    terminal = Terminal()
    meter = Progress(2, stream=terminal, clock=clock)
    meter.add(ok)                           # no time has passed: no rate yet
    clock.now += 1.0
    meter.add(ok)
    assert terminal.getvalue() == ('\rbags 1/2, ? frames/s, ETA 0 s'
                                   '\rbags 2/2, 20.0 frames/s, ETA 0 s\n')
    stopped = Terminal()                    # a run stopped before its last bag
    meter = Progress(2, stream=stopped, clock=clock)
    meter.add(ok)
    meter.end()
    assert stopped.getvalue() == '\rbags 1/2, ? frames/s, ETA 0 s\n'
    quiet = io.StringIO()
    Progress(1, enabled=False, stream=quiet, clock=clock).add(ok)
    assert quiet.getvalue() == ''


_HOOKED_CLI = """
import functools, sys
sys.path.insert(0, sys.argv.pop(1))
import fleet_hooks
from seg_perception.replay import fleet
fleet.run_fleet = functools.partial(fleet.run_fleet, hook=fleet_hooks.slow_down_slow_bags)
from seg_perception import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_stop_signal_keeps_the_finished_bags_and_resume_runs_the_rest(tmp_path, sig):
    """Ctrl-C (SIGINT to the whole process group, workers too) or SIGTERM after the first
    bag's result: the finished bags are kept and pooled in a partial report listing the
    bags not run, the exit status is 128 + N, and --resume runs only those."""
    folder = tmp_path / 'bags'
    folder.mkdir()
    for index in range(4):
        bh.labelled_bag(folder / f'slow_{index}', 2)
    out = tmp_path / 'out'
    child = subprocess.Popen(
        [sys.executable, '-c', _HOOKED_CLI, os.path.dirname(__file__), 'bag-eval', '--bag',
         str(folder), '--model', bh.model_path(), '--output', str(out), '--label-topic',
         '/cam/ground_truth/labels', '--workers', '2', '--no-progress'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / 'results').glob('*.json')) and child.poll() is None:
            assert time.monotonic() < deadline, 'no bag finished'
            time.sleep(0.05)
        if sig == signal.SIGINT:
            os.killpg(child.pid, sig)
        else:
            child.send_signal(sig)
        _, error = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 128 + sig, error
    metrics = json.loads((out / 'metrics.json').read_text())
    kept = sorted(p.stem for p in (out / 'results').glob('*.json'))
    not_run = [b['name'] for b in metrics['not_run']]
    assert metrics['status'] == 'partial' and metrics['stopped_by'] == signal.Signals(sig).name
    assert kept and not_run and sorted(kept + not_run) == [f'slow_{i}' for i in range(4)]
    assert (metrics['bags_total'], metrics['bags_ok'], metrics['bags_failed']) == \
        (4, len(kept), 0)
    assert [b['name'] for b in metrics['per_model'][0]['per_bag']] == kept
    assert metrics['per_model'][0]['frames'] == 2 * len(kept)
    lines = [line for line in error.splitlines() if line.startswith('seg-perception')]
    assert 'Traceback' not in error and lines == [
        f'seg-perception bag-eval: stopped by {signal.Signals(sig).name} ({len(kept)} of 4 '
        f'bags done, partial report in {out}; --resume runs the other {len(not_run)})']
    assert f'{len(not_run)} of 4 bags not run' in (out / 'report.md').read_text()
    # the bag given to the worker that finished first was stopped there, its output closed
    started = [n for n in not_run if (out / 'bags' / n / 'metrics.json').is_file()]
    assert started
    for name in started:
        assert per_bag_metrics(out, name)['error'] == 'RunStopped: stopped by SIGTERM'
        assert (out / 'bags' / name / f'{name}_segmentation' / 'metadata.yaml').is_file()
    stamps = {n: (out / 'results' / f'{n}.json').stat().st_mtime_ns for n in kept}
    resumed = run_fleet([str(folder)], [bh.model_path()], str(out), options=OPTIONS,
                        resume=True, workers=1, progress=False)
    assert resumed['resumed'] == kept and resumed['status'] == 'complete'
    assert (resumed['bags_ok'], resumed['not_run'], resumed['per_model'][0]['frames']) == \
        (4, [], 8)
    assert stamps == {n: (out / 'results' / f'{n}.json').stat().st_mtime_ns for n in kept}


def test_pooled_scores_sum_the_pixels_each_bag_left_out():
    """Bags kept from a run before not_scored existed pool to None, not to a wrong share."""
    from seg_perception.replay.aggregate import _pooled_metrics

    def summary(not_scored):
        truth = {'kind': 'drivable', **({'not_scored': not_scored} if not_scored else {})}
        return {'ground_truth': truth, 'confusion_matrix': [[5, 1], [1, 3]], 'num_images': 1,
                'class_names': ['not drivable', 'drivable'], 'drivable_ids': [1]}
    rule = 'label values other than 0 and 255'
    a = {'pixels': 10, 'labelled': 100, 'fraction': 0.1, 'rule': rule}
    b = {'pixels': 30, 'labelled': 100, 'fraction': 0.3, 'rule': rule}
    assert _pooled_metrics([summary(a), summary(b)])['not_scored'] == {
        'pixels': 40, 'labelled': 200, 'fraction': 0.2, 'rule': rule}
    assert _pooled_metrics([summary(a), summary(None)])['not_scored'] is None
