"""CamVid in the SegNet layout (folders and list files), and the real copy in ../shared."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg_perception.data import LabelValueError, MissingDataError, build_dataset
from seg_perception.data.camvid import CamVidDataset
from seg_perception.labels import CAMVID

H, W = 16, 24
REAL_CAMVID = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'camvid'


def write(root, split, name, label=None):
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f'{split}annot').mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / split / f'{name}.png')
    if label is not None:
        Image.fromarray(np.full((H, W), label, np.uint8) if np.isscalar(label) else label,
                        'L').save(root / f'{split}annot' / f'{name}.png')


def test_segnet_folders(tmp_path):
    write(tmp_path, 'train', '0001TP_006690', 3)
    write(tmp_path, 'train', '0001TP_006720', 11)
    write(tmp_path, 'val', '0016E5_07959', 8)
    train = build_dataset({'dataset': 'camvid', 'root': str(tmp_path)}, 'train')
    val = build_dataset({'dataset': 'camvid', 'root': str(tmp_path)}, 'val')
    assert isinstance(train, CamVidDataset) and train.label_space is CAMVID
    assert len(train) == 2 and len(val) == 1
    assert [Path(i).parent.name + '/' + Path(a).parent.name for i, a in train.samples] == \
        ['train/trainannot'] * 2
    assert np.unique(train.read_label(1)).tolist() == [11]     # ignore id kept as 11
    image, mask = train[0]
    assert tuple(image.shape) == (3, H, W) and mask.unique().tolist() == [3]


def test_list_file_with_segnet_absolute_paths(tmp_path):
    write(tmp_path, 'train', 'a', 1)
    write(tmp_path, 'train', 'b', 2)
    write(tmp_path, 'train', 'not_listed', 4)
    (tmp_path / 'train.txt').write_text(
        '/SegNet/CamVid/train/b.png /SegNet/CamVid/trainannot/b.png\n'
        'train/a.png trainannot/a.png\n')
    ds = CamVidDataset(tmp_path, 'train')
    assert [Path(i).name for i, _ in ds.samples] == ['b.png', 'a.png']
    assert np.unique(ds.read_label(0)).tolist() == [2]


def test_list_file_errors_name_the_line(tmp_path):
    write(tmp_path, 'val', 'a', 1)
    (tmp_path / 'val.txt').write_text('val/a.png valannot/missing.png\n')
    with pytest.raises(MissingDataError, match=r'val.txt:1: image .*a.png has no label'):
        CamVidDataset(tmp_path, 'val')
    (tmp_path / 'val.txt').write_text('val/a.png\n')
    with pytest.raises(ValueError, match=r'val.txt:1: expected "image label"'):
        CamVidDataset(tmp_path, 'val')
    # comments and blank lines are skipped, and still counted in the line numbers
    (tmp_path / 'val.txt').write_text('# image label\n\nval/gone.png valannot/a.png\n')
    with pytest.raises(MissingDataError, match=r'val.txt:3: image .*gone.png not found'):
        CamVidDataset(tmp_path, 'val')
    (tmp_path / 'val.txt').write_text('# nothing listed yet\n')
    with pytest.raises(MissingDataError, match=r'CamVid val: .*val.txt lists no images'):
        CamVidDataset(tmp_path, 'val')


def test_label_value_12_is_an_error(tmp_path):
    write(tmp_path, 'train', 'x', np.array([[0, 12, 40]] * 2, np.uint8))
    ds = CamVidDataset(tmp_path, 'train')
    with pytest.raises(LabelValueError, match=r'trainannot[/\\]x.png: ids \[12, 40\]'):
        ds.read_label(0)


def test_missing_folders_and_labels(tmp_path):
    with pytest.raises(MissingDataError, match=r'CamVid train images .*train not found'):
        CamVidDataset(tmp_path, 'train')
    write(tmp_path, 'train', 'with_label', 1)
    write(tmp_path, 'train', 'without_label')
    with pytest.raises(MissingDataError, match=r'without_label.png has no label'):
        CamVidDataset(tmp_path, 'train')
    with pytest.raises(MissingDataError, match='root'):
        CamVidDataset(tmp_path / 'nowhere', 'train')


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f'{REAL_CAMVID} not present')
def test_real_camvid_split_sizes_and_label_range():
    train = CamVidDataset(REAL_CAMVID, 'train')
    val = CamVidDataset(REAL_CAMVID, 'val')
    assert (len(train), len(val)) == (367, 101)
    seen = set()
    for ds in (train, val):
        for index in range(0, len(ds), 10):   # every 10th label keeps this fast
            seen.update(np.unique(ds.read_label(index)).tolist())
    assert seen <= set(range(12)) and 11 in seen and 3 in seen
    image, mask = train[0]
    assert tuple(image.shape) == (3, 360, 480) and tuple(mask.shape) == (360, 480)
