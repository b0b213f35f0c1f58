"""bag-eval over many bags (#25): parallel workers, failures, --resume, Ray, A/B."""
import json
import os

import numpy as np
import pytest

import bag_helpers as bh
import fleet_hooks
from seg_perception import cli
from seg_perception.replay.fleet import find_bags, run_fleet

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
    assert 'labels differ on 0.000% of the pixels' in capsys.readouterr().out


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
