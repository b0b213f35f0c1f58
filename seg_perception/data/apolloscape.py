"""ApolloScape scene parsing, read into the Cityscapes-19 label space.

Layout of the official download (one folder per road, ``Camera 5`` / ``Camera 6``
with a space)::

    <root>/road02_ins/ColorImage/Record001/Camera 5/<stamp>_Camera_5.jpg
    <root>/road02_ins/Label/Record001/Camera 5/<stamp>_Camera_5_bin.png

The ``*_bin.png`` files hold one ApolloScape class id per pixel (table below).
Classes with a Cityscapes counterpart take its trainId; ``*_group`` regions (crowds
of one class) take the class of their members, as Cityscapes does for its groups;
the rest (tricycle, traffic cone, road pile, dustbin, billboard, bridge, tunnel,
overpass, rover, others, unlabeled) become 255 = ignore. The dataset's label space
is therefore :data:`seg_perception.labels.CITYSCAPES` (terrain and train never occur).

ApolloScape ships no split folders. The split is taken from, in this order:

1. a list file ``<root>/<split>.lst`` or ``<root>/<split>.txt``: one
   ``image<TAB>label`` pair per line, paths relative to ``<root>`` (two paths
   separated by spaces also work);
2. ``records={split: ["road02_ins/Record001", "Record002", ...]}`` (config key
   ``records``): the records, optionally prefixed with their road folder, of each split;
3. otherwise a fixed record-level hold-out: records sorted by road and name, every
   fifth one (positions 4, 9, ...) is ``val``, the others ``train``; ``all`` is everything.
   Splitting by record keeps near-identical neighbouring frames out of both sides.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from seg_perception.errors import InvalidValueError
from seg_perception.labels import CITYSCAPES
from seg_perception.data.common import (LabelMapper, MissingDataError, SegmentationDataset,
                                        list_images, pair_or_fail, read_list_file)

# (ApolloScape class name, ApolloScape id, Cityscapes trainId or None = ignore).
# Ids from the ApolloScape scene parsing class list (apolloscape.auto, and the label
# tables of github.com/ApolloScapeAuto/dataset-api). Trainids: labels.CITYSCAPES order.
APOLLO_CLASSES: Tuple[Tuple[str, int, Optional[int]], ...] = (
    ('others', 0, None),
    ('rover', 1, None),            # the recording vehicle itself
    ('sky', 17, 10),
    ('car', 33, 13),
    ('motorbicycle', 34, 17),
    ('bicycle', 35, 18),
    ('person', 36, 11),
    ('rider', 37, 12),
    ('truck', 38, 14),
    ('bus', 39, 15),
    ('tricycle', 40, None),        # no Cityscapes class
    ('road', 49, 0),
    ('sidewalk', 50, 1),
    ('traffic_cone', 65, None),
    ('road_pile', 66, None),
    ('fence', 67, 4),
    ('traffic_light', 81, 6),
    ('pole', 82, 5),
    ('traffic_sign', 83, 7),
    ('wall', 84, 3),
    ('dustbin', 85, None),
    ('billboard', 86, None),
    ('building', 97, 2),
    ('bridge', 98, None),          # Cityscapes ignores bridge and tunnel too
    ('tunnel', 99, None),
    ('overpass', 100, None),
    ('vegetation', 113, 8),
    ('car_groups', 161, 13),
    ('motorbicycle_group', 162, 17),
    ('bicycle_group', 163, 18),
    ('person_group', 164, 11),
    ('rider_group', 165, 12),
    ('truck_group', 166, 14),
    ('bus_group', 167, 15),
    ('tricycle_group', 168, None),
    ('unlabeled', 255, None),
)


def apollo_to_cityscapes() -> Dict[int, int]:
    """ApolloScape id → Cityscapes trainId (255 where no class corresponds)."""
    ignore = CITYSCAPES.ignore_index
    return {apollo_id: ignore if train_id is None else train_id
            for _, apollo_id, train_id in APOLLO_CLASSES}


def _label_for(root: Path, image: Path) -> Path:
    """<road>/ColorImage/<record>/<camera>/<stem>.jpg → <road>/Label/.../<stem>_bin.png."""
    road, _color_dir, *inner = image.relative_to(root).parts
    return root.joinpath(road, 'Label', *inner[:-1], image.stem + '_bin.png')


def _parse_list_line(line: str) -> Tuple[str, str]:
    if '\t' in line:
        parts = [p.strip() for p in line.split('\t') if p.strip()]
    else:  # "Camera 5" holds a space: split after the image's extension instead
        match = re.match(r'^(.+?\.(?:jpg|jpeg|png))\s+(.+)$', line.strip(), re.IGNORECASE)
        parts = list(match.groups()) if match else [line.strip()]
    if len(parts) != 2:
        raise InvalidValueError(f'expected "image<TAB>label", got {line.strip()!r}')
    return parts[0], parts[1]


class ApolloScapeDataset(SegmentationDataset):
    """ApolloScape scene parsing in the Cityscapes-19 label space; see the module docstring."""

    name = 'apolloscape'

    def __init__(self, root, split: str = 'train', transform=None, skip_corrupt: bool = False,
                 label_space=CITYSCAPES, records: Optional[Mapping[str, Sequence[str]]] = None):
        self.records = {k: list(v) for k, v in (records or {}).items()}
        self._mapper = LabelMapper(apollo_to_cityscapes(), CITYSCAPES.ignore_index,
                                   'ApolloScape scene parsing')
        super().__init__(root, split, label_space, transform, skip_corrupt)

    def _find_samples(self) -> List:
        what = f'ApolloScape {self.split}'
        for suffix in ('.lst', '.txt'):
            list_file = self.root / (self.split + suffix)
            if list_file.is_file():
                return self._from_list(list_file)
        roads = sorted(p for p in self.root.glob('road*') if (p / 'ColorImage').is_dir())
        if not roads:
            raise MissingDataError(f'{what}: no road*/ColorImage folder in {self.root}')
        groups = []   # one per record: (road/record, images)
        for road in roads:
            if not (road / 'Label').is_dir():
                raise MissingDataError(f'{what}: folder {road / "Label"} not found '
                                       f'(labels for {road / "ColorImage"})')
            for record in sorted(p for p in (road / 'ColorImage').iterdir() if p.is_dir()):
                images = list_images(record, recursive=True)
                if images:
                    groups.append((f'{road.name}/{record.name}', images))
        chosen = self._choose_records(groups)
        images = [image for _, group in chosen for image in group]
        return pair_or_fail(images, lambda image: _label_for(self.root, image), self.root,
                            what)

    def _choose_records(self, groups):
        if self.split in self.records:
            wanted = self.records[self.split]
            chosen = [(key, imgs) for key, imgs in groups
                      if key in wanted or key.split('/', 1)[1] in wanted]
            unknown = [w for w in wanted
                       if not any(w in (key, key.split('/', 1)[1]) for key, _ in groups)]
            if unknown:
                raise MissingDataError(f'ApolloScape {self.split}: records {unknown} not found '
                                       f'under {self.root}/road*/ColorImage')
            return chosen
        if self.records:
            raise InvalidValueError(f'ApolloScape: split {self.split!r} is not among the '
                                    f'configured records ({", ".join(self.records)})')
        if self.split == 'all':
            return groups
        if self.split not in ('train', 'val'):
            raise InvalidValueError(f'ApolloScape: split {self.split!r} needs a list file '
                                    f'{self.root}/{self.split}.lst or a "records" entry')
        want_val = self.split == 'val'
        chosen = [g for i, g in enumerate(groups) if (i % 5 == 4) == want_val]
        if not chosen:
            raise MissingDataError(
                f'ApolloScape {self.split}: only {len(groups)} records under {self.root}, too '
                'few for the default hold-out (every 5th record is val); give a list file '
                'or "records"')
        return chosen

    def _from_list(self, list_file: Path) -> List:
        def parse(line: str) -> Tuple[Path, Path]:
            image, label = _parse_list_line(line)
            return self.root / image, self.root / label

        return read_list_file(list_file, parse, f'ApolloScape {self.split}')

    def mapper_for(self, label_path: str) -> LabelMapper:
        return self._mapper
