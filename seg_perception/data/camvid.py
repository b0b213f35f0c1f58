"""CamVid in the SegNet layout (11 classes, id 11 = unlabelled = ignore).

::

    <root>/train/*.png      <root>/trainannot/*.png     (same file names)
    <root>/val/*.png        <root>/valannot/*.png
    <root>/test/*.png       <root>/testannot/*.png
    <root>/train.txt        "image label" per line (optional; used when present)

Paths in the list files are relative to ``<root>``; the absolute ``/SegNet/CamVid/...``
paths of the original SegNet lists are resolved by their last two components
(``train/x.png``). Label PNGs hold ids 0..10 and 11; any other value is an error.
CamVid is for research and non-commercial use: never copy its files into this project.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from seg_perception.labels import CAMVID
from seg_perception.data.common import (LabelMapper, SegmentationDataset, list_images,
                                        pair_or_fail, read_list_file, require_dir)


class CamVidDataset(SegmentationDataset):
    """CamVid, SegNet layout; see the module docstring."""

    name = 'camvid'

    def __init__(self, root, split: str = 'train', transform=None, skip_corrupt: bool = False,
                 label_space=CAMVID):
        self._mapper = LabelMapper.identity(CAMVID, 'CamVid (0..10, 11 = unlabelled)')
        super().__init__(root, split, label_space, transform, skip_corrupt)

    def _find_samples(self) -> List:
        list_file = self.root / f'{self.split}.txt'
        if list_file.is_file():
            return self._from_list(list_file)
        what = f'CamVid {self.split}'
        image_dir = require_dir(self.root / self.split, f'{what} images (and no {list_file.name})')
        label_dir = require_dir(self.root / f'{self.split}annot', f'{what} labels')
        images = list_images(image_dir)
        by_stem = {p.stem: p for p in list_images(label_dir)}
        return pair_or_fail(images, lambda image: by_stem.get(image.stem,
                                                              label_dir / image.name),
                            image_dir, what)

    def _resolve(self, entry: str) -> Path:
        path = Path(entry)
        if not path.is_absolute():
            return self.root / path
        if path.is_file():
            return path
        return self.root.joinpath(*path.parts[-2:])  # /SegNet/CamVid/train/x.png

    def _from_list(self, list_file: Path) -> List:
        def parse(line: str) -> Tuple[Path, Path]:
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f'expected "image label", got {line.strip()!r}')
            return self._resolve(parts[0]), self._resolve(parts[1])

        return read_list_file(list_file, parse, f'CamVid {self.split}')

    def mapper_for(self, label_path: str) -> LabelMapper:
        return self._mapper
