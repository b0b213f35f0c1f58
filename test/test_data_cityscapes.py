"""Cityscapes in its official layout: labelIds → trainIds, labelTrainIds, palette PNGs, errors."""
import numpy as np
import pytest
from PIL import Image

from seg_perception.data import MissingDataError, LabelValueError, build_dataset
from seg_perception.data.cityscapes import CityscapesDataset, official_label_table
from seg_perception.labels import CITYSCAPES

H, W = 16, 24
# labelId → expected trainId, known from the Cityscapes label definition
KNOWN = {7: 0, 8: 1, 26: 13, 33: 18, 23: 10, 0: 255, 9: 255, 14: 255}


def stripes(values):
    """An H×W uint8 image with one vertical stripe per value."""
    columns = np.array_split(np.arange(W), len(values))
    out = np.zeros((H, W), np.uint8)
    for value, cols in zip(values, columns):
        out[:, cols] = value
    return out


def write_frame(root, split, city, frame, label_ids=None, train_ids=None, palette=False):
    stem = f'{city}_000000_{frame:06d}'
    image_dir = root / 'leftImg8bit' / split / city
    label_dir = root / 'gtFine' / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(frame)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
        image_dir / f'{stem}_leftImg8bit.png')
    if label_ids is not None:
        img = Image.fromarray(label_ids, 'L')
        if palette:
            img = Image.fromarray(label_ids, 'P')
            # a palette whose colours are not the indices: only the indices may be read
            img.putpalette([(3 * i + c * 50) % 256 for i in range(256) for c in range(3)])
        img.save(label_dir / f'{stem}_gtFine_labelIds.png')
    if train_ids is not None:
        Image.fromarray(train_ids, 'L').save(label_dir / f'{stem}_gtFine_labelTrainIds.png')
    return stem


def test_official_table_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels
    table = official_label_table()
    for label in labels:
        if label.id < 0:
            assert label.id not in table
            continue
        expected = label.trainId if 0 <= label.trainId < 19 else 255
        assert table[label.id] == expected, label.name
    for label_id, train_id in KNOWN.items():
        assert table[label_id] == train_id


def test_label_ids_mapped_to_train_ids(tmp_path):
    ids = list(KNOWN)
    write_frame(tmp_path, 'train', 'aachen', 19, label_ids=stripes(ids))
    ds = CityscapesDataset(tmp_path, 'train')
    assert len(ds) == 1 and ds.label_space is CITYSCAPES
    assert ds.samples[0][1].endswith('_gtFine_labelIds.png')
    assert np.array_equal(ds.read_label(0), stripes([KNOWN[i] for i in ids]))
    image, mask = ds[0]
    assert image.shape == (3, H, W) and str(image.dtype) == 'torch.float32'
    assert str(mask.dtype) == 'torch.int64'
    assert np.array_equal(mask.numpy(), stripes([KNOWN[i] for i in ids]))


def test_train_ids_file_preferred_when_present(tmp_path):
    write_frame(tmp_path, 'val', 'bremen', 1, label_ids=stripes([7, 26]),
                train_ids=stripes([2, 255]))
    write_frame(tmp_path, 'val', 'bremen', 2, label_ids=stripes([33]))
    ds = CityscapesDataset(tmp_path, 'val')
    assert [s[1].rsplit('_', 1)[1] for s in ds.samples] == ['labelTrainIds.png', 'labelIds.png']
    assert np.array_equal(ds.read_label(0), stripes([2, 255]))   # from the trainIds file
    assert np.array_equal(ds.read_label(1), stripes([18]))       # mapped from labelIds


def test_palette_label_png_read_as_indices(tmp_path):
    write_frame(tmp_path, 'train', 'aachen', 5, label_ids=stripes([7, 26, 24]), palette=True)
    ds = CityscapesDataset(tmp_path, 'train')
    assert Image.open(ds.samples[0][1]).mode == 'P'
    assert np.array_equal(ds.read_label(0), stripes([0, 13, 11]))


def test_build_dataset_from_config_with_drivable_classes(tmp_path):
    write_frame(tmp_path, 'train', 'aachen', 19, label_ids=stripes([7]))
    ds = build_dataset({'dataset': 'cityscapes', 'root': str(tmp_path),
                        'drivable_classes': ['road', 'sidewalk']}, 'train')
    assert ds.label_space.drivable_ids == (0, 1)


def test_missing_gtfine_folder_named(tmp_path):
    write_frame(tmp_path, 'train', 'aachen', 19)
    with pytest.raises(MissingDataError, match=r'gtFine[/\\]train'):
        CityscapesDataset(tmp_path, 'train')


def test_image_without_label_named(tmp_path):
    write_frame(tmp_path, 'train', 'aachen', 1, label_ids=stripes([7]))
    stem = write_frame(tmp_path, 'train', 'aachen', 2)
    with pytest.raises(MissingDataError, match=f'{stem}_leftImg8bit.png has no label') as info:
        CityscapesDataset(tmp_path, 'train')
    assert '1 of 2 images' in str(info.value)


def test_unknown_label_id_is_an_error(tmp_path):
    write_frame(tmp_path, 'train', 'aachen', 3, label_ids=stripes([7, 34, 200]))
    ds = CityscapesDataset(tmp_path, 'train')
    with pytest.raises(LabelValueError, match=r'aachen_000000_000003_gtFine_labelIds.png') as info:
        ds.read_label(0)
    assert '[34, 200]' in str(info.value)


def test_train_ids_file_with_bad_value(tmp_path):
    write_frame(tmp_path, 'train', 'aachen', 4, label_ids=stripes([7]), train_ids=stripes([19]))
    with pytest.raises(LabelValueError, match=r'ids \[19\]'):
        CityscapesDataset(tmp_path, 'train').read_label(0)
