"""The generic images + masks folder dataset, and the config-driven factory."""
import numpy as np
import pytest
from PIL import Image

from seg_perception.data import (LabelValueError, MissingDataError, build_dataset,
                                 label_space_for_config)
from seg_perception.data.folder import FolderDataset
from seg_perception.labels import CAMVID, LabelSpace

H, W = 16, 24
TWO_CLASS = LabelSpace('lanes', ('background', 'lane'), ((0, 0, 0), (255, 255, 255)), (1,),
                       ignore_index=255)


def write(root, split, stem, mask_value=None, suffix='', image_ext='.jpg'):
    image_dir, mask_dir = root / 'images' / split, root / 'masks' / split
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 7, np.uint8)).save(image_dir / f'{stem}{image_ext}')
    if mask_value is not None:
        Image.fromarray(np.full((H, W), mask_value, np.uint8)).save(
            mask_dir / f'{stem}{suffix}.png')


def test_matches_by_stem_with_label_space_by_name(tmp_path):
    write(tmp_path, 'train', 'frame_b', 5)
    write(tmp_path, 'train', 'frame_a', 11, image_ext='.png')
    cfg = {'dataset': 'folder', 'root': str(tmp_path), 'label_space': 'camvid'}
    ds = build_dataset(cfg, 'train')
    assert isinstance(ds, FolderDataset) and ds.label_space == CAMVID
    assert [s[0].rsplit('/', 1)[1] for s in ds.samples] == ['frame_a.png', 'frame_b.jpg']
    assert np.unique(ds.read_label(1)).tolist() == [5]


def test_mask_suffix_and_label_space_dict(tmp_path):
    write(tmp_path, 'val', 'x', 1, suffix='_mask')
    cfg = {'dataset': 'folder', 'root': str(tmp_path), 'label_space': TWO_CLASS.to_dict(),
           'mask_suffix': '_mask', 'val_split': 'val'}
    ds = build_dataset(cfg, 'val')
    assert ds.label_space == TWO_CLASS and ds.samples[0][1].endswith('x_mask.png')
    _, mask = ds[0]
    assert mask.unique().tolist() == [1]


def test_id_map_translates_and_rejects_other_values(tmp_path):
    write(tmp_path, 'train', 'a', 200)
    write(tmp_path, 'train', 'b', 0)
    write(tmp_path, 'train', 'c', 1)
    cfg = {'dataset': 'folder', 'root': str(tmp_path), 'label_space': TWO_CLASS.to_dict(),
           'id_map': {0: 0, 200: 1}}
    ds = build_dataset(cfg, 'train')
    assert np.unique(ds.read_label(0)).tolist() == [1]
    assert np.unique(ds.read_label(1)).tolist() == [0]
    with pytest.raises(LabelValueError, match=r'c.png: ids \[1\]'):
        ds.read_label(2)


def test_values_outside_the_label_space_are_errors(tmp_path):
    write(tmp_path, 'train', 'a', 2)
    ds = FolderDataset(tmp_path, 'train', TWO_CLASS)
    with pytest.raises(LabelValueError, match=r'masks[/\\]train[/\\]a.png: ids \[2\]'):
        ds.read_label(0)


def test_empty_split_reads_the_folders_directly(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'masks').mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / 'images' / 'a.png')
    Image.fromarray(np.ones((H, W), np.uint8)).save(tmp_path / 'masks' / 'a.png')
    assert len(FolderDataset(tmp_path, '', TWO_CLASS)) == 1


def test_missing_pieces_are_named(tmp_path):
    write(tmp_path, 'train', 'a', 1)
    write(tmp_path, 'train', 'lonely')
    with pytest.raises(MissingDataError, match=r'lonely.jpg has no label'):
        FolderDataset(tmp_path, 'train', TWO_CLASS)
    with pytest.raises(MissingDataError, match=r'images[/\\]val not found'):
        FolderDataset(tmp_path, 'val', TWO_CLASS)


def test_config_errors():
    with pytest.raises(ValueError, match='unknown dataset .*nuscenes'):
        build_dataset({'dataset': 'nuscenes', 'root': '/x'}, 'train')
    with pytest.raises(ValueError, match='"dataset" key'):
        build_dataset({'root': '/x'}, 'train')
    with pytest.raises(ValueError, match='"root"'):
        build_dataset({'dataset': 'camvid'}, 'train')
    with pytest.raises(ValueError, match='needs a "label_space"'):
        label_space_for_config({'dataset': 'folder', 'root': '/x'})
    with pytest.raises(KeyError, match='no class'):
        label_space_for_config({'dataset': 'camvid', 'drivable_classes': ['runway']})


def test_label_space_for_config_applies_drivable_classes():
    space = label_space_for_config({'dataset': 'camvid', 'drivable_classes': ['road', 4]})
    assert space.drivable_ids == (3, 4) and space.class_names == CAMVID.class_names
