"""Cityscapes (fine annotations) in its official layout.

::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png  (optional)

Labels become the 19 evaluation classes (trainIds, 255 = ignore). The labelId →
trainId table is read from ``cityscapesscripts.helpers.labels``, the official one,
so ``createTrainIdLabelImgs`` need not have been run; where it has, the
``*_gtFine_labelTrainIds.png`` file next to a labelIds file is used instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from seg_perception.labels import CITYSCAPES
from seg_perception.data.common import (LabelMapper, MissingDataError, SegmentationDataset,
                                        list_images, pair_or_fail, require_dir)

IMAGE_SUFFIX = '_leftImg8bit.png'
LABEL_IDS_SUFFIX = '_gtFine_labelIds.png'
TRAIN_IDS_SUFFIX = '_gtFine_labelTrainIds.png'


def official_label_table() -> Dict[int, int]:
    """labelId → trainId from cityscapesscripts (ids without a train id → 255)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as exc:
        raise ImportError('the Cityscapes dataset needs the cityscapesscripts package '
                          '(pip install cityscapesscripts)') from exc
    table = {}
    for label in labels:
        if label.id < 0:  # license plate: never drawn into the label images
            continue
        train_id = label.trainId
        table[label.id] = train_id if 0 <= train_id < CITYSCAPES.num_classes else 255
    return table


class CityscapesDataset(SegmentationDataset):
    """Cityscapes gtFine; see the module docstring for the layout."""

    name = 'cityscapes'

    def __init__(self, root, split: str = 'train', transform=None, skip_corrupt: bool = False,
                 label_space=CITYSCAPES):
        self._label_ids = LabelMapper(official_label_table(), CITYSCAPES.ignore_index,
                                      'Cityscapes labelIds')
        self._train_ids = LabelMapper.identity(CITYSCAPES, 'Cityscapes trainIds')
        super().__init__(root, split, label_space, transform, skip_corrupt)

    def _find_samples(self) -> List:
        image_dir = require_dir(self.root / 'leftImg8bit' / self.split,
                                f'Cityscapes {self.split} images')
        label_dir = require_dir(self.root / 'gtFine' / self.split,
                                f'Cityscapes {self.split} labels')
        images = list_images(image_dir, recursive=True, suffix=IMAGE_SUFFIX)
        if not images:
            raise MissingDataError(f'Cityscapes {self.split}: no *{IMAGE_SUFFIX} images in '
                                   f'{image_dir}/<city>/')

        def label_for(image: Path) -> Path:
            # trainIds where cityscapesscripts made them, else the official labelIds
            city = image.parent.relative_to(image_dir)
            stem = image.name[:-len(IMAGE_SUFFIX)]
            train_ids = label_dir / city / (stem + TRAIN_IDS_SUFFIX)
            return train_ids if train_ids.is_file() else \
                label_dir / city / (stem + LABEL_IDS_SUFFIX)

        return pair_or_fail(images, label_for, image_dir, f'Cityscapes {self.split}')

    def mapper_for(self, label_path: str) -> LabelMapper:
        if Path(label_path).name.endswith(TRAIN_IDS_SUFFIX):
            return self._train_ids
        return self._label_ids
