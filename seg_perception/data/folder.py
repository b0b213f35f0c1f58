"""A generic dataset: a folder of images and a folder of single-channel masks.

::

    <root>/<image_dir>/<split>/<name>.<jpg|png|...>
    <root>/<mask_dir>/<split>/<name><mask_suffix>.png

Images and masks are matched by file stem (``mask_suffix`` is stripped from mask
names first, e.g. ``_mask``). An empty ``split`` reads ``<root>/<image_dir>`` directly.
Mask values are the class ids of the configured label space, or its ignore id;
``id_map`` ({raw value: class id or ignore id}) translates other encodings, and
then only the values it names are accepted.
"""
from __future__ import annotations

from typing import List, Mapping, Optional

from seg_perception.labels import LabelSpace
from seg_perception.data.common import (LabelMapper, SegmentationDataset, list_images, pair_or_fail,
                                        require_dir)


class FolderDataset(SegmentationDataset):
    """Images + masks matched by file stem, in a label space given by the config."""

    name = 'folder'

    def __init__(self, root, split: str, label_space: LabelSpace, transform=None,
                 skip_corrupt: bool = False, image_dir: str = 'images', mask_dir: str = 'masks',
                 mask_suffix: str = '', id_map: Optional[Mapping[int, int]] = None):
        self.image_dir, self.mask_dir, self.mask_suffix = image_dir, mask_dir, mask_suffix
        if id_map:
            self._mapper = LabelMapper({int(k): int(v) for k, v in id_map.items()},
                                       label_space.ignore_index, f'{label_space.name} id_map')
        else:
            self._mapper = LabelMapper.identity(label_space)
        super().__init__(root, split, label_space, transform, skip_corrupt)

    def _find_samples(self) -> List:
        what = f'folder dataset {self.split or "(no split)"}'
        images_root = self.root / self.image_dir
        masks_root = self.root / self.mask_dir
        image_dir = require_dir(images_root / self.split if self.split else images_root,
                                f'{what} images')
        mask_dir = require_dir(masks_root / self.split if self.split else masks_root,
                               f'{what} masks')
        masks = {}
        for path in list_images(mask_dir):
            stem = path.stem
            if self.mask_suffix:
                if not stem.endswith(self.mask_suffix):
                    continue
                stem = stem[:-len(self.mask_suffix)]
            # a PNG mask wins over a lossy copy with the same stem
            if stem not in masks or path.suffix.lower() == '.png':
                masks[stem] = path
        images = list_images(image_dir)
        return pair_or_fail(
            images, lambda image: masks.get(image.stem,
                                            mask_dir / f'{image.stem}{self.mask_suffix}.png'),
            image_dir, what)

    def mapper_for(self, label_path: str) -> LabelMapper:
        return self._mapper
