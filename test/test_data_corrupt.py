"""Unreadable files: clear errors naming the file, or skipped and counted with skip_corrupt."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from seg_perception.data import CorruptFileError, build_dataset
from seg_perception.data.camvid import CamVidDataset

H, W = 16, 24


def camvid(root, names, label_values=None):
    (root / 'train').mkdir(parents=True, exist_ok=True)
    (root / 'trainannot').mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((H, W, 3), 10 * i, np.uint8)).save(root / 'train' / f'{name}.png')
        value = i if label_values is None else label_values[i]
        Image.fromarray(np.full((H, W), value, np.uint8)).save(root / 'trainannot' / f'{name}.png')
    return root


def test_garbage_image_names_the_file(tmp_path):
    camvid(tmp_path, ['a', 'b'])
    (tmp_path / 'train' / 'b.png').write_bytes(b'this is not a png')
    ds = CamVidDataset(tmp_path, 'train')
    ds[0]
    with pytest.raises(CorruptFileError, match=r'cannot read image .*train[/\\]b.png'):
        ds[1]


@pytest.mark.parametrize('fmt, ext', [('JPEG', '.jpg'), ('PNG', '.png')])
def test_truncated_image_is_not_silently_accepted(tmp_path, fmt, ext):
    camvid(tmp_path, ['a'])
    (tmp_path / 'train' / 'a.png').unlink()
    path = tmp_path / 'train' / f'a{ext}'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptFileError, match=f'train[/\\\\]a{ext}'):
        CamVidDataset(tmp_path, 'train')[0]


def test_colour_label_png_is_rejected_with_its_mode(tmp_path):
    camvid(tmp_path, ['a'])
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / 'trainannot' / 'a.png')
    with pytest.raises(CorruptFileError, match=r"trainannot[/\\]a.png: PIL mode 'RGB'"):
        CamVidDataset(tmp_path, 'train').read_label(0)


def test_image_and_label_size_mismatch_names_both(tmp_path):
    camvid(tmp_path, ['a'])
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(tmp_path / 'trainannot' / 'a.png')
    with pytest.raises(CorruptFileError, match=r'train[/\\]a.png is 24x16 but its label .*26x16'):
        CamVidDataset(tmp_path, 'train')[0]


def test_skip_corrupt_serves_the_next_sample_and_counts(tmp_path, caplog):
    camvid(tmp_path, ['a', 'b', 'c'])
    (tmp_path / 'train' / 'b.png').write_bytes(b'\x89PNG broken')
    ds = build_dataset({'dataset': 'camvid', 'root': str(tmp_path), 'skip_corrupt': True},
                       'train')
    with caplog.at_level(logging.WARNING):
        _, mask = ds[1]
    assert mask.unique().tolist() == [2]          # sample c stands in for b
    assert list(ds.skipped) == [str(tmp_path / 'train' / 'b.png')]
    assert '1 skipped so far' in caplog.text and 'b.png' in caplog.text
    _, mask = ds[1]                                # known bad: skipped without re-reading
    assert mask.unique().tolist() == [2] and len(ds.skipped) == 1


def test_skip_corrupt_with_nothing_readable(tmp_path):
    camvid(tmp_path, ['a'])
    (tmp_path / 'train' / 'a.png').write_bytes(b'')
    ds = CamVidDataset(tmp_path, 'train', skip_corrupt=True)
    with pytest.raises(CorruptFileError, match='all 1 samples .* are unreadable'):
        ds[0]


def test_error_in_a_dataloader_worker_names_the_file(tmp_path):
    camvid(tmp_path, ['a', 'b'])
    (tmp_path / 'train' / 'a.png').write_bytes(b'junk')
    loader = torch.utils.data.DataLoader(CamVidDataset(tmp_path, 'train'), batch_size=2,
                                         num_workers=1)
    with pytest.raises(Exception, match=r'cannot read image .*train[/\\]a.png'):
        next(iter(loader))
