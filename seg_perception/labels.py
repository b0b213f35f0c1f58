"""Label spaces: class names, colour palette, ignore id and drivable classes.

Every dataset, checkpoint and exported model names one of these (or carries its
own copy in the model metadata), so the class ids mean the same thing from the
training loss to the ROS topic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError, UnknownNameError

Color = Tuple[int, int, int]
# The id of the ego vehicle's own pixels (bonnet, mirrors) in a model's labels: outside every
# class range, the 255 that LabelInfo also uses for "unlabelled".
EGO_ID = 255
EGO_NAME = 'ego_vehicle'


@dataclass(frozen=True)
class LabelSpace:
    """A set of classes with their colours; ids are positions in ``class_names``."""

    name: str
    class_names: Tuple[str, ...]
    palette: Tuple[Color, ...]
    drivable_ids: Tuple[int, ...]
    ignore_index: int = 255
    description: str = field(default='', compare=False)

    def __post_init__(self):
        if len(self.class_names) < 2:
            raise InvalidValueError(f'label space {self.name!r}: needs at least 2 classes')
        if len(self.palette) != len(self.class_names):
            raise InvalidValueError(
                f'label space {self.name!r}: {len(self.palette)} colours for '
                f'{len(self.class_names)} classes')
        bad = [i for i in self.drivable_ids if not 0 <= i < len(self.class_names)]
        if bad:
            raise InvalidValueError(f'label space {self.name!r}: drivable ids {bad} out of range')
        if 0 <= self.ignore_index < len(self.class_names):
            raise InvalidValueError(f'label space {self.name!r}: ignore id {self.ignore_index} '
                                    'is also a class id')

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_id(self, name: str) -> int:
        """Return the id of a class by name (case-insensitive)."""
        lowered = [n.lower() for n in self.class_names]
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise UnknownNameError(f'no class {name!r} in {self.name}; classes: '
                                   f'{", ".join(self.class_names)}') from None

    def with_drivable(self, ids_or_names: Sequence) -> 'LabelSpace':
        """Return a copy whose drivable classes are ``ids_or_names``."""
        ids = tuple(sorted({self.class_id(x) if isinstance(x, str) else int(x)
                            for x in ids_or_names}))
        return LabelSpace(self.name, self.class_names, self.palette, ids,
                          self.ignore_index, self.description)

    def palette_array(self) -> np.ndarray:
        """A 256×3 uint8 lookup table: class id → RGB (ids without a class are black)."""
        lut = np.zeros((256, 3), np.uint8)
        lut[:self.num_classes] = np.asarray(self.palette, np.uint8)
        return lut

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Map an H×W uint8 class-id image to H×W×3 RGB."""
        return self.palette_array()[labels]

    def to_dict(self) -> dict:
        return {'name': self.name, 'class_names': list(self.class_names),
                'palette': [list(c) for c in self.palette],
                'drivable_ids': list(self.drivable_ids), 'ignore_index': self.ignore_index}

    @classmethod
    def from_dict(cls, d: dict) -> 'LabelSpace':
        return cls(d['name'], tuple(d['class_names']),
                   tuple(tuple(int(v) for v in c) for c in d['palette']),
                   tuple(int(i) for i in d['drivable_ids']), int(d.get('ignore_index', 255)))


CITYSCAPES = LabelSpace(
    name='cityscapes',
    class_names=('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                 'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                 'truck', 'bus', 'train', 'motorcycle', 'bicycle'),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
             (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
             (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    # Parking is not among the 19 train ids (it maps to ignore), so road alone is drivable.
    drivable_ids=(0,),
    ignore_index=255,
    description='Cityscapes 19 evaluation classes (trainIds); also BDD100K sem_seg',
)

CAMVID = LabelSpace(
    name='camvid',
    class_names=('sky', 'building', 'pole', 'road', 'pavement', 'tree', 'sign_symbol',
                 'fence', 'car', 'pedestrian', 'bicyclist'),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192)),
    drivable_ids=(3,),
    ignore_index=11,
    description='CamVid 11 classes in the SegNet layout; 11 = unlabelled',
)

BDD100K_DRIVABLE = LabelSpace(
    name='bdd100k_drivable',
    class_names=('direct', 'alternative', 'background'),
    palette=((219, 94, 86), (86, 211, 219), (0, 0, 0)),
    drivable_ids=(0, 1),
    ignore_index=255,
    description='BDD100K drivable area: 0 direct, 1 alternative, 2 background',
)

# BDD100K's semantic segmentation uses the 19 Cityscapes train ids, names and colours.
BDD100K_SEM_SEG = LabelSpace(
    name='bdd100k_sem_seg',
    class_names=CITYSCAPES.class_names,
    palette=CITYSCAPES.palette,
    drivable_ids=CITYSCAPES.drivable_ids,
    ignore_index=255,
    description='BDD100K sem_seg: the 19 Cityscapes train ids',
)

LABEL_SPACES: Dict[str, LabelSpace] = {
    space.name: space for space in (CITYSCAPES, CAMVID, BDD100K_DRIVABLE, BDD100K_SEM_SEG)}
# Other spellings of the same spaces (contracts of imported models use these).
LABEL_SPACE_ALIASES: Dict[str, str] = {'cityscapes19': 'cityscapes', 'camvid11': 'camvid'}


def get_label_space(name: str) -> LabelSpace:
    """Return a registered label space; an unknown name lists the known ones."""
    try:
        return LABEL_SPACES[LABEL_SPACE_ALIASES.get(name.lower(), name.lower())]
    except KeyError:
        raise UnknownNameError(f'unknown label space {name!r}; known: '
                               f'{", ".join(sorted(LABEL_SPACES))}') from None
