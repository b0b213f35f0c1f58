"""BDD100K semantic segmentation and drivable area, in the layout of the official download.

Semantic segmentation (the 10K image set)::

    <root>/images/10k/<split>/<name>.jpg
    <root>/labels/sem_seg/masks/<split>/<name>.png     ids 0..18 (Cityscapes trainIds), 255

Drivable area (the 100K image set)::

    <root>/images/100k/<split>/<name>.jpg
    <root>/labels/drivable/masks/<split>/<name>.png    ids 0 direct, 1 alternative, 2 background

Class ids as documented in the BDD100K label format page
(https://doc.bdd100k.com/format.html, "Semantic Segmentation" and "Drivable Area"):
sem_seg uses the 19 Cityscapes evaluation classes in trainId order with 255 for
"unknown"; drivable area uses 0 = direct, 1 = alternative, 2 = background. (The
2018 release's ``drivable_maps/labels/*_drivable_id.png`` files use a different
order, 0 = background, and are not read here.) The masks are single-channel PNGs
(the ``colormaps/`` folders next to ``masks/`` are for viewing only).
"""
from __future__ import annotations

from typing import List

from seg_perception.labels import BDD100K_DRIVABLE, CITYSCAPES
from seg_perception.data.common import (LabelMapper, SegmentationDataset, list_images, pair_or_fail,
                                        require_dir)


class BDD100KSemSegDataset(SegmentationDataset):
    """BDD100K 10K semantic segmentation (Cityscapes-19 label space)."""

    name = 'bdd100k'
    image_set = '10k'
    label_task = 'sem_seg'

    def __init__(self, root, split: str = 'train', transform=None, skip_corrupt: bool = False,
                 label_space=None):
        base = CITYSCAPES if self.label_task == 'sem_seg' else BDD100K_DRIVABLE
        space = label_space or base
        self._mapper = LabelMapper.identity(base, f'BDD100K {self.label_task}')
        super().__init__(root, split, space, transform, skip_corrupt)

    def _find_samples(self) -> List:
        what = f'BDD100K {self.label_task} {self.split}'
        image_dir = require_dir(self.root / 'images' / self.image_set / self.split,
                                f'{what} images')
        mask_dir = require_dir(self.root / 'labels' / self.label_task / 'masks' / self.split,
                               f'{what} masks')
        images = list_images(image_dir)
        return pair_or_fail(images, lambda image: mask_dir / (image.stem + '.png'),
                            image_dir, what)

    def mapper_for(self, label_path: str) -> LabelMapper:
        return self._mapper


class BDD100KDrivableDataset(BDD100KSemSegDataset):
    """BDD100K 100K drivable area: 0 direct, 1 alternative, 2 background."""

    name = 'bdd100k_drivable'
    image_set = '100k'
    label_task = 'drivable'
