"""BDD100K sem_seg (10K) and drivable area (100K) in the official layout."""
import numpy as np
import pytest
from PIL import Image

from seg_perception.data import LabelValueError, MissingDataError, build_dataset
from seg_perception.data.bdd100k import BDD100KDrivableDataset, BDD100KSemSegDataset
from seg_perception.labels import BDD100K_DRIVABLE, CITYSCAPES

H, W = 16, 24


def rows(values):
    out = np.zeros((H, W), np.uint8)
    for value, r in zip(values, np.array_split(np.arange(H), len(values))):
        out[r] = value
    return out


def write(root, image_set, task, split, name, mask=None):
    image_dir = root / 'images' / image_set / split
    mask_dir = root / 'labels' / task / 'masks' / split
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(image_dir / f'{name}.jpg')
    if mask is not None:
        Image.fromarray(mask, 'L').save(mask_dir / f'{name}.png')


def test_sem_seg_ids_are_cityscapes_train_ids(tmp_path):
    write(tmp_path, '10k', 'sem_seg', 'train', '0004a4c0-d4dff0ad', rows([0, 13, 18, 255]))
    write(tmp_path, '10k', 'sem_seg', 'train', '00054602-3bf57337', rows([10]))
    ds = build_dataset({'dataset': 'bdd100k', 'root': str(tmp_path)}, 'train')
    assert isinstance(ds, BDD100KSemSegDataset) and ds.label_space is CITYSCAPES
    assert len(ds) == 2
    assert ds.samples[0][0].endswith('images/10k/train/0004a4c0-d4dff0ad.jpg')
    assert ds.samples[0][1].endswith('labels/sem_seg/masks/train/0004a4c0-d4dff0ad.png')
    assert np.array_equal(ds.read_label(0), rows([0, 13, 18, 255]))
    image, mask = ds[1]
    assert tuple(image.shape) == (3, H, W)
    assert set(mask.unique().tolist()) == {10}


def test_sem_seg_value_19_is_an_error(tmp_path):
    write(tmp_path, '10k', 'sem_seg', 'val', 'abc', rows([0, 19]))
    with pytest.raises(LabelValueError, match=r'sem_seg/masks/val/abc.png: ids \[19\]'):
        BDD100KSemSegDataset(tmp_path, 'val').read_label(0)


def test_drivable_ids(tmp_path):
    # doc.bdd100k.com/format.html: 0 direct, 1 alternative, 2 background
    write(tmp_path, '100k', 'drivable', 'val', 'b1c66a42-6f7d68ca', rows([2, 0, 1]))
    ds = build_dataset({'dataset': 'bdd100k_drivable', 'root': str(tmp_path),
                        'val_split': 'val'}, 'val')
    assert isinstance(ds, BDD100KDrivableDataset)
    assert ds.label_space is BDD100K_DRIVABLE
    assert ds.label_space.class_names[:2] == ('direct', 'alternative')
    assert np.array_equal(ds.read_label(0), rows([2, 0, 1]))


def test_drivable_value_3_is_an_error(tmp_path):
    write(tmp_path, '100k', 'drivable', 'train', 'x', rows([0, 3]))
    with pytest.raises(LabelValueError, match=r'x.png: ids \[3\]'):
        BDD100KDrivableDataset(tmp_path, 'train').read_label(0)


def test_drivable_does_not_read_the_10k_images(tmp_path):
    write(tmp_path, '10k', 'sem_seg', 'train', 'a', rows([0]))
    with pytest.raises(MissingDataError, match=r'images[/\\]100k[/\\]train'):
        BDD100KDrivableDataset(tmp_path, 'train')


def test_missing_masks_folder_and_missing_mask(tmp_path):
    write(tmp_path, '10k', 'sem_seg', 'test', 'a')
    (tmp_path / 'labels' / 'sem_seg' / 'masks' / 'test').rmdir()
    with pytest.raises(MissingDataError, match=r'masks[/\\]test not found'):
        BDD100KSemSegDataset(tmp_path, 'test')
    write(tmp_path, '10k', 'sem_seg', 'train', 'with_mask', rows([1]))
    write(tmp_path, '10k', 'sem_seg', 'train', 'without_mask')
    with pytest.raises(MissingDataError, match=r'without_mask.jpg has no label'):
        BDD100KSemSegDataset(tmp_path, 'train')
