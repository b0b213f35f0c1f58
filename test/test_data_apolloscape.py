"""ApolloScape scene parsing: road*_ins layout, id table into Cityscapes-19, splits."""
import numpy as np
import pytest
from PIL import Image

from seg_perception.data import LabelValueError, MissingDataError, build_dataset
from seg_perception.data.apolloscape import APOLLO_CLASSES, ApolloScapeDataset
from seg_perception.labels import CITYSCAPES

H, W = 16, 24
# ApolloScape id → Cityscapes trainId, by class meaning
KNOWN = {49: 0, 50: 1, 17: 10, 33: 13, 161: 13, 36: 11, 113: 8, 40: 255, 0: 255, 255: 255}


def columns(values):
    out = np.zeros((H, W), np.uint8)
    for value, c in zip(values, np.array_split(np.arange(W), len(values))):
        out[:, c] = value
    return out


def write(root, road, record, camera, stamp, label=None):
    image_dir = root / f'{road}_ins' / 'ColorImage' / record / camera
    label_dir = root / f'{road}_ins' / 'Label' / record / camera
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    cam = camera.replace(' ', '_')
    Image.fromarray(np.full((H, W, 3), 40, np.uint8)).save(image_dir / f'{stamp}_{cam}.jpg')
    if label is not None:
        Image.fromarray(label, 'L').save(label_dir / f'{stamp}_{cam}_bin.png')
    return f'{road}_ins/ColorImage/{record}/{camera}/{stamp}_{cam}.jpg', \
        f'{road}_ins/Label/{record}/{camera}/{stamp}_{cam}_bin.png'


def five_records(root):
    for i in range(1, 6):
        write(root, 'road02', f'Record00{i}', 'Camera 5', f'17092706381{i}', columns([49]))


def test_table_names_and_ids_are_unique_and_map_into_cityscapes():
    names = [name for name, _, _ in APOLLO_CLASSES]
    ids = [apollo_id for _, apollo_id, _ in APOLLO_CLASSES]
    assert len(set(names)) == len(names) and len(set(ids)) == len(ids)
    alias = {'motorbicycle': 'motorcycle'}
    for name, _, train_id in APOLLO_CLASSES:
        if train_id is not None:
            # same meaning: a class or a group of it maps to the Cityscapes class of that name
            base = name.replace('_groups', '').replace('_group', '')
            assert alias.get(base, base) == CITYSCAPES.class_names[train_id].replace(' ', '_')


def test_ids_mapped_to_cityscapes(tmp_path):
    write(tmp_path, 'road02', 'Record001', 'Camera 5', '170927_063811892', columns(list(KNOWN)))
    ds = ApolloScapeDataset(tmp_path, 'all')
    assert ds.label_space is CITYSCAPES and len(ds) == 1
    assert ds.samples[0][1].endswith('Label/Record001/Camera 5/170927_063811892_Camera_5_bin.png')
    assert np.array_equal(ds.read_label(0), columns([KNOWN[k] for k in KNOWN]))
    image, mask = ds[0]
    assert tuple(image.shape) == (3, H, W) and tuple(mask.shape) == (H, W)


def test_unknown_id_is_an_error(tmp_path):
    write(tmp_path, 'road03', 'Record001', 'Camera 6', '1', columns([49, 2, 120]))
    with pytest.raises(LabelValueError, match=r'1_Camera_6_bin.png: ids \[2, 120\]'):
        ApolloScapeDataset(tmp_path, 'all').read_label(0)


def test_default_record_holdout(tmp_path):
    five_records(tmp_path)
    train = ApolloScapeDataset(tmp_path, 'train')
    val = ApolloScapeDataset(tmp_path, 'val')
    assert len(train) == 4 and len(val) == 1
    assert '/Record005/' in val.samples[0][0]
    assert not {s[0] for s in train.samples} & {s[0] for s in val.samples}


def test_records_from_config(tmp_path):
    five_records(tmp_path)
    cfg = {'dataset': 'apolloscape', 'root': str(tmp_path),
           'records': {'train': ['road02_ins/Record001', 'Record002'], 'val': ['Record003']}}
    assert len(build_dataset(cfg, 'train')) == 2
    assert '/Record003/' in build_dataset(cfg, 'val').samples[0][0]
    cfg['records']['val'] = ['Record009']
    with pytest.raises(MissingDataError, match='Record009'):
        build_dataset(cfg, 'val')


def test_list_file_with_tabs_or_spaces(tmp_path):
    pair1 = write(tmp_path, 'road02', 'Record001', 'Camera 5', '1', columns([33]))
    pair2 = write(tmp_path, 'road02', 'Record001', 'Camera 6', '2', columns([113]))
    (tmp_path / 'train.lst').write_text(f'{pair1[0]}\t{pair1[1]}\n{pair2[0]} {pair2[1]}\n')
    ds = ApolloScapeDataset(tmp_path, 'train')
    assert [s[0] for s in ds.samples] == [str(tmp_path / pair1[0]), str(tmp_path / pair2[0])]
    assert np.array_equal(ds.read_label(1), columns([8]))


def test_missing_label_and_missing_layout(tmp_path):
    with pytest.raises(MissingDataError, match='no road\\*/ColorImage'):
        ApolloScapeDataset(tmp_path, 'all')
    write(tmp_path, 'road02', 'Record001', 'Camera 5', '1', columns([49]))
    write(tmp_path, 'road02', 'Record001', 'Camera 5', '2')
    with pytest.raises(MissingDataError, match=r'2_Camera_5.jpg has no label'):
        ApolloScapeDataset(tmp_path, 'all')
