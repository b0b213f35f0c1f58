"""#21 in bag-eval and evaluate: a model's extra masks and class probabilities."""
import json

import numpy as np
import pytest

import bag_helpers as bh
from eval_models import run_cli, synthetic_folder
from import_helpers import TwoHeads, blocky_frame, export
from seg_perception import cli
from seg_perception.replay.bag_eval import evaluate_bag
from seg_perception.runtime.pipeline import SegmentationPipeline

NAMES = ['road', 'sidewalk', 'car', 'pedestrian', 'sky']


@pytest.fixture(scope='module')
def heads_model(tmp_path_factory):
    """A wrapped model with a 'lane_lines' mask and the probabilities of car and road."""
    from seg_perception.deploy.contract import parse_contract
    from seg_perception.deploy.import_model import import_model
    folder = tmp_path_factory.mktemp('heads')
    graph = export(TwoHeads(), folder / 'two.onnx')
    contract = {'input': {'size': [64, 96], 'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.3, 0.25]},
                'classes': {'output': 'seg', 'names': NAMES, 'drivable': ['road']},
                'masks': {'lane_lines': {'output': 'll', 'positive': 1}},
                'probabilities': ['car', 'road']}
    path = str(folder / 'heads.onnx')
    import_model(graph, parse_contract(contract), path, blocky_frame())
    return path


def _bag(tmp_path, count=3):
    store = bh.typestore()
    messages = [('/cam_front/image_raw',
                 bh.image_msg(store, blocky_frame(48, 64, seed=i), bh.START_NS + i * bh.PERIOD_NS),
                 bh.START_NS + i * bh.PERIOD_NS) for i in range(count)]
    return bh.write_rosbag2(tmp_path / 'in', messages), messages


def _pixels(msg):
    pixels = np.asarray(msg.data).reshape(msg.height, msg.width, -1)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def test_masks_always_and_asked_probabilities_go_to_the_output_bag_and_report(
        heads_model, tmp_path):
    bag, messages = _bag(tmp_path)
    summary = evaluate_bag(str(bag), heads_model, str(tmp_path / 'out'), progress=False,
                           overlays=0, probabilities=['car'])
    written = bh.read_bag(tmp_path / 'out' / 'in_segmentation')
    assert '/cam_front/segmentation/probability/road' not in written     # not asked for
    pipeline = SegmentationPipeline(heads_model, backend='onnxruntime',
                                    output_resolution='camera')
    on = pixels = 0
    for (_, msg, log), (mask_log, mask), (_, car) in zip(
            messages, written['/cam_front/segmentation/lane_lines'],
            written['/cam_front/segmentation/probability/car']):
        (expected,) = pipeline.process([_pixels(msg)], ['rgb8'])
        assert mask_log == log and mask.encoding == car.encoding == 'mono8'
        assert bh.stamp_ns(mask) == bh.stamp_ns(msg)
        np.testing.assert_array_equal(_pixels(mask), expected.masks['lane_lines'])
        np.testing.assert_array_equal(_pixels(car), expected.probabilities['car'])
        on += int((expected.masks['lane_lines'] == 255).sum())
        pixels += expected.masks['lane_lines'].size
    assert 0 < on < pixels
    extra = json.loads((tmp_path / 'out' / 'metrics.json').read_text())['extra_outputs']
    assert extra == summary['extra_outputs']
    lane = extra['masks']['lane_lines']['cam_front']
    assert lane == {'topic': '/cam_front/segmentation/lane_lines', 'messages': 3,
                    'on_fraction': pytest.approx(on / pixels, abs=1e-6)}
    assert extra['probabilities'] == {'car': {'cam_front': {
        'topic': '/cam_front/segmentation/probability/car', 'messages': 3}}}
    assert '/cam_front/segmentation/lane_lines' in summary['cameras']['cam_front'][
        'output_topics']
    report = (tmp_path / 'out' / 'report.md').read_text()
    assert '## Masks and probabilities' in report
    assert f'| lane_lines | cam_front | /cam_front/segmentation/lane_lines | 3 | ' \
           f'{100 * on / pixels:.2f}' in report
    assert '/cam_front/segmentation/probability/car | 3' in report


def test_a_model_without_extras_writes_none_and_the_report_says_nothing(tmp_path):
    bag, _ = _bag(tmp_path, count=1)
    summary = evaluate_bag(str(bag), bh.model_path(), str(tmp_path / 'out'), progress=False,
                           overlays=0)
    assert summary['extra_outputs'] == {'masks': {}, 'probabilities': {}}
    assert 'Masks and probabilities' not in (tmp_path / 'out' / 'report.md').read_text()


def test_an_unknown_probability_class_is_one_line_listing_the_models(
        heads_model, tmp_path, capsys):
    bag, _ = _bag(tmp_path, count=1)
    assert cli.main(['bag-eval', '--bag', str(bag), '--model', heads_model, '--output',
                     str(tmp_path / 'out'), '--no-progress', '--probabilities',
                     'car,pedestrian']) == 2
    error = capsys.readouterr().err.strip()
    assert '\n' not in error
    assert ("--probabilities: pedestrian not among the model's probability outputs "
            '(it has: car, road)') in error
    assert not (tmp_path / 'out' / 'in_segmentation').exists()


def test_evaluate_scores_the_labels_and_says_the_masks_are_not_scored(
        heads_model, tmp_path, caplog):
    synthetic_folder(tmp_path / 'data', count=1)
    with caplog.at_level('WARNING'):
        assert run_cli('--model', heads_model, '--dataset', 'folder', '--root',
                       tmp_path / 'data', '--output', tmp_path / 'eval',
                       '--backend', 'onnxruntime') == 0
    result = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert result['masks_not_scored'] == ['lane_lines']
    assert "masks (lane_lines) are not scored" in caplog.text
    assert result['num_images'] == 1 and np.sum(result['confusion_matrix']) > 0
