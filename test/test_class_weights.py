"""Class weights: median-frequency and ENet against hand-computed values; cache; CLI."""
import json
import logging

import numpy as np
import pytest
from PIL import Image

from seg_perception.training import class_weights as cw
from seg_perception.cli import main
from seg_perception.data.camvid import CamVidDataset
from seg_perception.labels import LabelSpace

SPACE = LabelSpace('three', ('a', 'b', 'c'), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), (0,), 255)
# Image A: three a, one b. Image B: one a, two c, one ignored pixel.
LABELS = [np.array([[0, 0], [0, 1]], np.uint8), np.array([[0, 2], [2, 255]], np.uint8)]
# By hand: pixels a=4, b=1, c=2 (7 labelled). a is in A and B (7 px), b only in A (4 px),
# c only in B (3 px): freq = 4/7, 1/4, 2/3; median 4/7 → weights 1, 16/7, 6/7.
MEDIAN_FREQ = [1.0, 2.285714, 0.857143]
# ENet: p = 4/7, 1/7, 2/7 → 1/ln(1.02 + p)
ENET = [2.152241, 6.627782, 3.748825]


class TinyDataset:
    label_space = SPACE

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def read_label(self, index):
        return self.labels[index]


@pytest.mark.parametrize('method, expected', [('median_freq', MEDIAN_FREQ), ('enet', ENET)])
def test_hand_computed_weights(method, expected):
    weights = cw.compute_class_weights(TinyDataset(LABELS), method, 3, 255)
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_defaults_from_label_space_and_ignore_index_respected():
    weights = cw.compute_class_weights(TinyDataset(LABELS), 'median_freq')
    np.testing.assert_allclose(weights, MEDIAN_FREQ, atol=1e-6)
    # with 2 as the ignore id and 2 classes, image B has a single labelled pixel of a
    labels = [np.where(x == 255, 0, x) for x in LABELS]
    counts = cw.count_pixels(TinyDataset(labels), 2, ignore_index=2)
    assert counts['pixels'].tolist() == [5, 1] and counts['image_pixels'].tolist() == [6, 4]


def test_absent_class_gets_zero_median_weight_and_a_warning(caplog):
    labels = [np.array([[0, 0, 1]], np.uint8), np.array([[0, 1, 1]], np.uint8)]
    with caplog.at_level(logging.WARNING):
        weights = cw.compute_class_weights(TinyDataset(labels), 'median_freq')
    assert weights[2] == 0 and weights[0] > 0 and weights[1] > 0
    assert 'never seen' in caplog.text and ': c' in caplog.text
    assert cw.compute_class_weights(TinyDataset(labels), 'enet')[2] == pytest.approx(
        50.4983, abs=1e-3)   # 1 / ln(1.02)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='unknown class-weight method'):
        cw.compute_class_weights(TinyDataset(LABELS), 'inverse')
    with pytest.raises(ValueError, match=r'sample 0: class ids \[5\] outside 0..2'):
        cw.compute_class_weights(TinyDataset([np.array([[5]], np.uint8)]), 'enet')
    with pytest.raises(ValueError, match='no labelled pixels'):
        cw.compute_class_weights(TinyDataset([np.array([[255]], np.uint8)]), 'enet')


def camvid(root):
    for split, values in (('train', [(0, 3), (3, 3)]), ('val', [(1, 1)])):
        (root / split).mkdir(parents=True)
        (root / f'{split}annot').mkdir()
        for i, (left, right) in enumerate(values):
            label = np.zeros((4, 6), np.uint8)
            label[:, :3], label[:, 3:] = left, right
            Image.fromarray(label).save(root / f'{split}annot' / f'{i}.png')
            Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / split / f'{i}.png')
    return root


def test_cache_written_reused_and_invalidated(tmp_path, monkeypatch):
    root = camvid(tmp_path / 'camvid')
    ds = CamVidDataset(root, 'train')
    first = cw.cached_class_weights(ds, 'median_freq', dataset_name='camvid')
    assert not first['cached'] and first['cache_path'] == str(root / 'class_weights.json')
    # by hand: sky 12 px in a 24-px image (freq 1/2), road 36 px in 48 (3/4); median 5/8
    np.testing.assert_allclose(first['weights'][[0, 3]], [1.25, 0.833333], atol=1e-6)
    assert first['weights'].sum() == pytest.approx(1.25 + 0.833333, abs=1e-6)
    stored = json.loads((root / 'class_weights.json').read_text())
    assert 'camvid/train/median_freq' in stored['entries']

    def no_counting(*args, **kwargs):
        raise AssertionError('counted again')

    monkeypatch.setattr(cw, 'count_pixels', no_counting)
    again = cw.cached_class_weights(ds, 'median_freq', dataset_name='camvid')
    assert again['cached'] and np.array_equal(again['weights'], first['weights'])
    enet = cw.cached_class_weights(ds, 'enet', dataset_name='camvid')   # counts reused
    assert not enet['cached'] and enet['weights'][3] < enet['weights'][0]
    monkeypatch.undo()
    # a changed label file is noticed through the fingerprint (names and sizes)
    Image.fromarray(np.full((4, 6), 5, np.uint8)).save(root / 'trainannot' / '0.png',
                                                       compress_level=0)
    changed = cw.cached_class_weights(ds, 'median_freq', dataset_name='camvid')
    assert not changed['cached'] and changed['pixels'][5] == 24


def test_given_output_path_and_corrupt_cache(tmp_path, caplog):
    root = camvid(tmp_path / 'camvid')
    output = tmp_path / 'out' / 'weights.json'
    output.parent.mkdir()
    output.write_text('{not json')
    with caplog.at_level(logging.WARNING):
        result = cw.cached_class_weights(CamVidDataset(root, 'val'), 'enet',
                                         dataset_name='camvid', cache_path=output)
    assert 'ignoring unreadable class-weight cache' in caplog.text
    assert result['cache_path'] == str(output) and not (root / 'class_weights.json').exists()
    assert json.loads(output.read_text())['entries']['camvid/val/enet']['num_images'] == 1


def test_cli_dataset_and_config(tmp_path, capsys, monkeypatch):
    root = camvid(tmp_path / 'camvid')
    output = tmp_path / 'cw.json'
    assert main(['class-weights', '--dataset', 'camvid', '--root', str(root),
                 '--method', 'enet', '--output', str(output), '--workers', '1']) == 0
    printed = capsys.readouterr().out
    assert 'camvid/train/enet: 2 images, written to' in printed and 'road' in printed
    config = tmp_path / 'train.yaml'
    config.write_text(f'data:\n  dataset: camvid\n  root: {root}\n  train_split: val\n')
    assert main(['class-weights', '--config', str(config), '--output', str(output)]) == 0
    assert 'camvid/val/median_freq: 1 images' in capsys.readouterr().out
    assert set(json.loads(output.read_text())['entries']) == {'camvid/train/enet',
                                                              'camvid/val/median_freq'}
    # a bare data section with a root relative to the config file's folder
    (tmp_path / 'data.yaml').write_text('dataset: camvid\nroot: camvid\n')
    monkeypatch.chdir(tmp_path / 'camvid' / 'train')
    assert main(['class-weights', '--config', str(tmp_path / 'data.yaml'),
                 '--output', str(output), '--method', 'enet']) == 0
    assert 'camvid/train/enet: 2 images, cached in' in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(['class-weights', '--dataset', 'camvid', '--root', str(tmp_path / 'no')]) == 2
    assert 'camvid root: folder' in capsys.readouterr().err
    assert main(['class-weights', '--dataset', 'camvid']) == 2
    assert '--dataset needs --root' in capsys.readouterr().err
    assert main(['class-weights', '--config', str(tmp_path / 'missing.yaml')]) == 2
    assert 'missing.yaml not found' in capsys.readouterr().err


def test_unreadable_label_skipped_and_counted_with_skip_corrupt(tmp_path, caplog):
    root = camvid(tmp_path / 'camvid')
    (root / 'trainannot' / '1.png').write_bytes(b'broken')
    with pytest.raises(ValueError, match=r'cannot read label .*trainannot[/\\]1.png'):
        cw.compute_class_weights(CamVidDataset(root, 'train'), 'enet')
    with caplog.at_level(logging.WARNING):
        counts = cw.count_pixels(CamVidDataset(root, 'train', skip_corrupt=True), 11, 11)
    assert counts['skipped'] == 1 and counts['num_images'] == 1
    assert counts['pixels'][[0, 3]].tolist() == [12, 12]
    assert 'skipping unreadable label (1 so far)' in caplog.text
