"""`seg-perception evaluate` end to end on tiny synthetic datasets, and write_metrics.

The model (see eval_models.py) predicts each pixel's class from its colour, so the
expected confusion matrix is known from the synthetic images and masks alone.
"""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from colour_net import ARCHITECTURE, ColourNet
from no_torch import NO_TORCH_CLI
from eval_models import (NAMES4, PALETTE4, palette_info, run_cli, save_palette_checkpoint,
                         synthetic_folder)
from seg_perception.evaluation import metrics
from seg_perception.evaluation.evaluate import TorchPredictor, evaluate, evaluate_dataset
from seg_perception.labels import LabelSpace
from seg_perception.evaluation.tables import REQUIRED_KEYS, write_metrics


@pytest.mark.usefixtures('colour_net_name')
def test_evaluate_checkpoint_end_to_end(tmp_path, capsys):
    expected = synthetic_folder(tmp_path / 'data')
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', palette_info(NAMES4, PALETTE4))
    out = tmp_path / 'eval'
    assert run_cli('--checkpoint', checkpoint, '--dataset', 'folder', '--root',
                   tmp_path / 'data', '--output', out, '--device', 'cpu') == 0
    result = json.loads((out / 'metrics.json').read_text())
    assert set(REQUIRED_KEYS) <= set(result)
    np.testing.assert_array_equal(result['confusion_matrix'], expected)
    assert result['miou'] == pytest.approx(metrics.mean_iou(expected))
    assert result['per_class_iou']['grass'] == pytest.approx(metrics.per_class_iou(expected)[1])
    assert result['pixel_accuracy'] == pytest.approx(np.trace(expected) / expected.sum())
    assert result['fw_iou'] == pytest.approx(metrics.frequency_weighted_iou(expected))
    assert result['mean_accuracy'] == pytest.approx(metrics.mean_accuracy(expected))
    assert result['drivable_iou'] == pytest.approx(metrics.binary_iou(expected, [0]))
    assert (result['num_images'], result['dataset'], result['split']) == (3, 'folder', 'val')
    assert result['model'] == checkpoint
    markdown = (out / 'metrics.md').read_text()
    assert '| grass |' in markdown and f'{100 * result["miou"]:.2f}' in markdown
    plot = cv2.imread(str(out / 'confusion_matrix.png'))
    assert plot is not None and plot.shape[0] > 100
    assert 'mIoU' in capsys.readouterr().out


@pytest.mark.usefixtures('colour_net_name')
def test_slide_mode_scales_and_flip_and_saved_predictions(tmp_path):
    # 45×77 images: not a multiple of the 32×64 window, so windows overlap unevenly
    expected = synthetic_folder(tmp_path / 'data', count=2, shape=(45, 77))
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', palette_info(NAMES4, PALETTE4))
    out = tmp_path / 'eval'
    assert run_cli('--checkpoint', checkpoint, '--dataset', 'folder', '--root',
                   tmp_path / 'data', '--output', out, '--mode', 'slide', '--flip',
                   '--save-predictions', '--limit', 1) == 0
    result = json.loads((out / 'metrics.json').read_text())
    assert result['num_images'] == 1
    # a per-pixel model gives exact labels in slide mode at scale 1, flipped or not
    first = synthetic_folder(tmp_path / 'one', count=1, shape=(45, 77))
    np.testing.assert_array_equal(result['confusion_matrix'], first)
    saved = cv2.imread(str(out / 'predictions' / 'frame0.png'), cv2.IMREAD_UNCHANGED)
    assert saved.shape == (45, 77) and saved[0, 0] == 2 and saved[-1, -1] == 0
    # several scales still evaluate every pixel; interiors stay right
    assert run_cli('--checkpoint', checkpoint, '--dataset', 'folder', '--root',
                   tmp_path / 'data', '--output', out, '--mode', 'slide', '--scales',
                   0.75, 1.0, 1.5) == 0
    result = json.loads((out / 'metrics.json').read_text())
    assert np.sum(result['confusion_matrix']) == expected.sum()
    assert result['miou'] > 0.6


@pytest.mark.slow
@pytest.mark.usefixtures('colour_net_name')
def test_evaluate_onnx_model_through_the_pipeline(tmp_path):
    pytest.importorskip('seg_perception.runtime.pipeline')
    from seg_perception.deploy.export import export_onnx
    expected = synthetic_folder(tmp_path / 'data')
    info = palette_info(NAMES4, PALETTE4)
    model_path = str(tmp_path / 'model.onnx')
    export_onnx(ColourNet(4, PALETTE4).eval(), info, model_path)
    out = tmp_path / 'eval'
    assert run_cli('--model', model_path, '--dataset', 'folder', '--root', tmp_path / 'data',
                   '--output', out, '--backend', 'onnxruntime') == 0
    result = json.loads((out / 'metrics.json').read_text())
    np.testing.assert_array_equal(result['confusion_matrix'], expected)
    assert result['inference']['kind'] == 'onnx'
    assert result['miou'] == pytest.approx(metrics.mean_iou(expected))


@pytest.mark.slow
@pytest.mark.usefixtures('colour_net_name')
def test_evaluate_network_resolution_onnx_model_on_larger_frames(tmp_path):
    pytest.importorskip('seg_perception.runtime.pipeline')
    from seg_perception.deploy.export import export_onnx
    expected = synthetic_folder(tmp_path / 'data', count=2, shape=(45, 77))
    model_path = str(tmp_path / 'model.onnx')
    export_onnx(ColourNet(4, PALETTE4).eval(), palette_info(NAMES4, PALETTE4), model_path,
                output_resolution='network')
    out = tmp_path / 'eval'
    assert run_cli('--model', model_path, '--dataset', 'folder', '--root', tmp_path / 'data',
                   '--output', out, '--backend', 'onnxruntime') == 0
    result = json.loads((out / 'metrics.json').read_text())
    # labels come back at camera resolution: every labelled pixel is scored
    assert np.sum(result['confusion_matrix']) == expected.sum()
    assert result['miou'] > 0.6


@pytest.mark.slow
@pytest.mark.usefixtures('colour_net_name')
def test_evaluate_onnx_model_where_torch_cannot_be_imported(tmp_path):
    """A vehicle scores a model on its own recordings with the runtime dependencies alone."""
    pytest.importorskip('seg_perception.runtime.pipeline')
    from seg_perception.deploy.export import export_onnx
    expected = synthetic_folder(tmp_path / 'data')
    model_path = str(tmp_path / 'model.onnx')
    export_onnx(ColourNet(4, PALETTE4).eval(), palette_info(NAMES4, PALETTE4), model_path)
    out = tmp_path / 'eval'
    done = subprocess.run(
        [sys.executable, '-c', NO_TORCH_CLI, 'evaluate', '--model', model_path, '--dataset',
         'folder', '--root', str(tmp_path / 'data'), '--output', str(out)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'BLOCKED-LOADED []' in done.stdout
    result = json.loads((out / 'metrics.json').read_text())
    np.testing.assert_array_equal(result['confusion_matrix'], expected)


# -- ego masks ---------------------------------------------------------------------------

def _expected_with_ego(root, ego):
    """The C×(C+1) matrix and drivable IoU (road = 0) of a synthetic folder whose model
    labels the ``ego`` pixels ego vehicle: truth unchanged, ego pixels in the last column."""
    expected = np.zeros((4, 5), np.int64)
    intersection = union = 0
    for index in range(3):
        image = cv2.imread(str(root / 'images' / 'val' / f'frame{index}.png'))[:, :, ::-1]
        colour_class = np.argmin([np.abs(image.astype(int) - c).sum(2) for c in PALETTE4], 0)
        truth = cv2.imread(str(root / 'masks' / 'val' / f'frame{index}.png'),
                           cv2.IMREAD_UNCHANGED)
        predicted = np.where(ego, 4, colour_class)
        keep = truth != 255
        np.add.at(expected, (truth[keep].astype(int), predicted[keep]), 1)
        intersection += np.count_nonzero((truth == 0) & (predicted == 0))
        union += np.count_nonzero(keep & ((truth == 0) | (predicted == 0)))
    return expected, intersection / union


@pytest.mark.usefixtures('colour_net_name')
def test_checkpoint_evaluation_with_an_ego_mask_png(tmp_path, capsys):
    synthetic_folder(tmp_path / 'data')
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', palette_info(NAMES4, PALETTE4))
    small = np.zeros((8, 16), np.uint8)          # a quarter of the image size: scaled up
    small[-2:] = 7                               # non-zero = ego: the bottom quarter
    cv2.imwrite(str(tmp_path / 'bonnet.png'), small)
    ego = np.zeros((32, 64), bool)
    ego[-8:] = True                              # half of the road rows
    expected, drivable_iou = _expected_with_ego(tmp_path / 'data', ego)
    out = tmp_path / 'eval'
    assert run_cli('--checkpoint', checkpoint, '--dataset', 'folder', '--root',
                   tmp_path / 'data', '--output', out, '--ego-mask', tmp_path / 'bonnet.png',
                   '--save-predictions') == 0
    result = json.loads((out / 'metrics.json').read_text())
    np.testing.assert_array_equal(result['confusion_matrix'], expected)
    assert result['confusion_columns'] == NAMES4 + ['ego_vehicle']
    assert result['ego_mask'] == str(tmp_path / 'bonnet.png')
    # truly drivable ego pixels are misses: the IoU counts them as such
    assert result['drivable_iou'] == pytest.approx(drivable_iou)
    assert drivable_iou < 0.6
    assert result['miou'] == pytest.approx(metrics.mean_iou(expected))
    saved = cv2.imread(str(out / 'predictions' / 'frame0.png'), cv2.IMREAD_UNCHANGED)
    assert (saved[-8:] == 255).all() and (saved[-9] == 0).all()
    assert 'predicted as ego vehicle' in (out / 'metrics.md').read_text()
    assert (out / 'confusion_matrix.png').is_file()


@pytest.mark.slow
@pytest.mark.usefixtures('colour_net_name')
def test_onnx_evaluation_gives_the_pipeline_an_ego_polygon(tmp_path):
    pytest.importorskip('seg_perception.runtime.pipeline')
    from seg_perception.deploy.export import export_onnx
    from seg_perception.ground.ego import EgoMask
    synthetic_folder(tmp_path / 'data')
    model_path = str(tmp_path / 'model.onnx')
    export_onnx(ColourNet(4, PALETTE4).eval(), palette_info(NAMES4, PALETTE4), model_path)
    polygon = [0.25, 0.5, 0.75, 0.5, 1.0, 1.0, 0.0, 1.0]      # a bonnet-like trapezoid
    expected, drivable_iou = _expected_with_ego(
        tmp_path / 'data', EgoMask.from_polygon(polygon).at((32, 64)))
    out = tmp_path / 'eval'
    assert run_cli('--model', model_path, '--dataset', 'folder', '--root', tmp_path / 'data',
                   '--output', out, '--backend', 'onnxruntime',
                   '--ego-polygon', ','.join(map(str, polygon))) == 0
    result = json.loads((out / 'metrics.json').read_text())
    np.testing.assert_array_equal(result['confusion_matrix'], expected)
    assert result['drivable_iou'] == pytest.approx(drivable_iou)
    assert result['ego_mask'] == '--ego-polygon'


def test_confusion_ego_column():
    confusion = metrics.ConfusionMatrix(3, ignore_index=255, ego_id=255)
    truth = np.array([0, 0, 0, 1, 1, 2, 255])
    predicted = np.array([0, 255, 1, 255, 1, 2, 255])
    confusion.update(predicted, truth)
    np.testing.assert_array_equal(confusion.matrix, [[1, 1, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]])
    # road (0): 1 hit, its ego pixel a miss; grass's ego pixel is a correct "not road"
    assert confusion.drivable_iou([0]) == pytest.approx(1 / 3)
    np.testing.assert_allclose(confusion.iou(), [1 / 3, 1 / 3, 1.0])
    assert confusion.pixel_accuracy() == pytest.approx(3 / 6)
    np.testing.assert_allclose(metrics.per_class_accuracy(confusion.matrix), [1 / 3, 1 / 2, 1])
    with pytest.raises(ValueError, match=r'predicted ids \[3\]'):    # not taken for ego
        confusion.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match='is one of the classes'):
        metrics.ConfusionMatrix(3, ego_id=2)
    with pytest.raises(ValueError, match='C×C'):
        metrics.mean_iou(np.zeros((2, 4)))


# -- errors ------------------------------------------------------------------------------

@pytest.mark.usefixtures('colour_net_name')
def test_command_line_errors(tmp_path, capsys):
    synthetic_folder(tmp_path / 'data', count=1)
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', palette_info(NAMES4, PALETTE4))
    data = ['--checkpoint', checkpoint, '--dataset', 'folder', '--root', tmp_path / 'data']
    not_an_image = tmp_path / 'not-an-image.png'
    not_an_image.write_text('a bonnet')
    cases = [
        (['--checkpoint', checkpoint, '--dataset', 'folder'], '--dataset folder needs --root'),
        (['--checkpoint', checkpoint], 'no data given'),
        (['--checkpoint', checkpoint, '--dataset', 'folder', '--root', tmp_path / 'data',
          '--config', tmp_path / 'x.yaml'], 'either --config or --dataset'),
        (['--checkpoint', tmp_path / 'missing.pt', '--dataset', 'folder', '--root',
          tmp_path / 'data'], 'checkpoint not found'),
        (['--model', tmp_path / 'm.onnx', '--flip', '--dataset', 'folder', '--root',
          tmp_path / 'data'], 'apply to --checkpoint only'),
        (['--checkpoint', checkpoint, '--dataset', 'camvid', '--root', tmp_path / 'data'],
         'folder'),                       # the camvid layout is missing: names the folder
        (data + ['--ego-mask', tmp_path / 'missing.png'], 'missing.png: no such file'),
        (data + ['--ego-mask', not_an_image], 'not-an-image.png: cannot be read as an image'),
        (data + ['--ego-polygon', '0,0,1,0,1'], 'odd number'),
        (data + ['--ego-polygon', '0,0,1,0,a,b'], '--ego-polygon: expected comma-separated'),
        (data + ['--ego-polygon', '0,0,640,0,640,480'], 'pixels?'),
    ]
    for argv, message in cases:
        assert run_cli(*argv) == 2, argv
        assert message in capsys.readouterr().err, argv


@pytest.mark.usefixtures('colour_net_name')
def test_label_space_mismatch_is_reported(tmp_path, capsys):
    synthetic_folder(tmp_path / 'data', count=1)
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt',
                                         palette_info(NAMES4[:3], PALETTE4[:3]))
    four = {'name': 'p', 'class_names': NAMES4, 'palette': PALETTE4, 'drivable_ids': [0]}
    with pytest.raises(ValueError, match='the model predicts 3 classes .* the dataset has 4'):
        evaluate(TorchPredictor(checkpoint), {'dataset': 'folder', 'root': str(tmp_path / 'data'),
                                              'label_space': four})
    # a folder without a label space takes the model's (3 classes); its masks hold id 3
    assert run_cli('--checkpoint', checkpoint, '--dataset', 'folder', '--root',
                   tmp_path / 'data', '--drivable-classes', 'road') == 2
    assert 'ids [3]' in capsys.readouterr().err


def test_wrong_prediction_shape_names_the_image(tmp_path):
    from seg_perception.data import build_dataset
    synthetic_folder(tmp_path / 'data', count=1)
    dataset = build_dataset({'dataset': 'folder', 'root': str(tmp_path / 'data'),
                             'label_space': {'name': 'p', 'class_names': NAMES4,
                                             'palette': PALETTE4, 'drivable_ids': [0]}}, 'val')
    with pytest.raises(ValueError, match=r'frame0.png: prediction is 3x2 but the label is 64x32'):
        evaluate_dataset(lambda image: np.zeros((2, 3), np.uint8), dataset, 4)
    with pytest.raises(ValueError, match=r'frame0.png: predicted ids \[9\]'):
        evaluate_dataset(lambda image: np.full(image.shape[:2], 9, np.uint8), dataset, 4)


# -- write_metrics -------------------------------------------------------------------------

def test_write_metrics_format(tmp_path):
    matrix = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    info = palette_info(NAMES4[:3], PALETTE4[:3], drivable=(0, 1))
    result = write_metrics(str(tmp_path), matrix, info,
                           {'num_images': 2, 'model': 'm.onnx', 'dataset': 'x', 'split': 'val'})
    on_disk = json.loads((tmp_path / 'metrics.json').read_text())
    assert on_disk == result
    assert set(REQUIRED_KEYS) <= set(result)
    assert result['per_class_iou'] == {'road': 0.75, 'grass': 2 / 3, 'sky': None}
    assert result['drivable_iou'] == 1.0
    assert 'sky | n/a' in (tmp_path / 'metrics.md').read_text()
    # keys are present even when the caller knows nothing about the run
    space = LabelSpace('p', tuple(NAMES4[:3]), tuple(tuple(c) for c in PALETTE4[:3]), (0,))
    bare = write_metrics(str(tmp_path / 'bare'), metrics.ConfusionMatrix(3), space, plot=False)
    assert bare['miou'] is None and bare['num_images'] is None
    with pytest.raises(ValueError, match='overwrite computed metrics'):
        write_metrics(str(tmp_path), matrix, info, {'miou': 1.0})
    with pytest.raises(ValueError, match='3 class names for a 2-class'):
        write_metrics(str(tmp_path), np.eye(2), info)


@pytest.mark.usefixtures('colour_net_name')
def test_torch_predictor_rejects_unknown_mode(tmp_path):
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', palette_info(NAMES4, PALETTE4))
    with pytest.raises(ValueError, match='--mode must be one of'):
        TorchPredictor(checkpoint, mode='tiles')


@pytest.mark.usefixtures('colour_net_name')
def test_evaluate_with_a_training_config(tmp_path):
    import yaml
    expected = synthetic_folder(tmp_path / 'data', count=2)
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', palette_info(NAMES4, PALETTE4))
    config = {'model': {'architecture': ARCHITECTURE},
              'data': {'dataset': 'folder', 'root': str(tmp_path / 'elsewhere'),
                       'label_space': {'name': 'p', 'class_names': NAMES4,
                                       'palette': PALETTE4, 'drivable_ids': [0, 1]}},
              'schedule': {'iterations': 1}, 'deploy': {'input_size': [32, 64]}}
    (tmp_path / 'train.yaml').write_text(yaml.safe_dump(config))
    out = tmp_path / 'eval'
    # --root replaces the config's data root
    assert run_cli('--checkpoint', checkpoint, '--config', tmp_path / 'train.yaml',
                   '--root', tmp_path / 'data', '--output', out) == 0
    result = json.loads((out / 'metrics.json').read_text())
    np.testing.assert_array_equal(result['confusion_matrix'], expected)
    assert result['drivable_ids'] == [0, 1]
    assert result['drivable_iou'] == pytest.approx(metrics.binary_iou(expected, [0, 1]))
