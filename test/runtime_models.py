"""The runtime tests' model and pictures: a ColourNet exported with the real export_onnx.

The ColourNet (colour_net.py) of these tests knows five classes by colour, so the
class of a flat-coloured patch is known in advance: red → 0 'road', green → 1
'grass', blue → 2 'sky', black → 3 'car', white → 4 'building'. ``painted_frame``
paints pictures in those colours and ``expected_labels`` gives their labels.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
from colour_net import ARCHITECTURE, ColourNet

from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo

CLASS_NAMES = ['road', 'grass', 'sky', 'car', 'building']
PALETTE = [[128, 64, 128], [0, 200, 0], [70, 130, 180], [0, 0, 142], [70, 70, 70]]
# Class colours in RGB: what a flat patch of each class looks like.
COLOURS = {'road': (255, 0, 0), 'grass': (0, 255, 0), 'sky': (0, 0, 255),
           'car': (0, 0, 0), 'building': (255, 255, 255)}
INPUT_SIZE = (32, 64)


def class_colours():
    """COLOURS in class order: the colours ColourNet is given."""
    return [list(COLOURS[name]) for name in CLASS_NAMES]


def colour_info(input_size=INPUT_SIZE, texture: float = 0.0) -> ModelInfo:
    """The ModelInfo of a ColourNet."""
    return ModelInfo(architecture=ARCHITECTURE, num_classes=len(CLASS_NAMES),
                     class_names=list(CLASS_NAMES), palette=[list(c) for c in PALETTE],
                     drivable_ids=[0], input_size=tuple(input_size), mean=LITE0_MEAN,
                     std=LITE0_STD, arch_config={'colours': class_colours(), 'texture': texture},
                     label_space='colours')


def build_colour_net(texture: float = 0.0):
    """(model, info) for a ColourNet."""
    model = ColourNet(len(CLASS_NAMES), class_colours(), texture).eval()
    return model, colour_info(texture=texture)


def export_colour_net(path: str, *, texture: float = 0.0, output_resolution: str = 'network',
                      with_confidence: bool = False) -> ModelInfo:
    """Export a ColourNet to ``path`` with seg_perception.deploy.export.export_onnx."""
    from seg_perception.deploy.export import export_onnx
    model, info = build_colour_net(texture)
    return export_onnx(model, info, path, with_confidence=with_confidence,
                       output_resolution=output_resolution)


def save_colour_checkpoint(path: str, texture: float = 0.0) -> str:
    """A seg_perception checkpoint of a ColourNet."""
    from seg_perception.models.checkpoint import make_checkpoint, save_checkpoint
    model, info = build_colour_net(texture)
    return save_checkpoint(path, make_checkpoint(model, info))


def painted_frame(height: int, width: int, layout=None) -> np.ndarray:
    """An RGB frame: 'building' on top, 'road' at the bottom, a 'car' box on the road.

    ``layout``: list of (class name, y0, y1, x0, x1) as fractions, painted in order.
    """
    if layout is None:
        layout = [('building', 0, 1, 0, 1), ('sky', 0, 0.3, 0, 1), ('road', 0.55, 1, 0, 1),
                  ('grass', 0.55, 1, 0, 0.15), ('car', 0.6, 0.8, 0.6, 0.8)]
    frame = np.zeros((height, width, 3), np.uint8)
    for name, y0, y1, x0, x1 in layout:
        frame[int(y0 * height):int(y1 * height), int(x0 * width):int(x1 * width)] = \
            COLOURS[name]
    return frame


_EXPORTED = {}


def exported(output_resolution: str = 'network', with_confidence: bool = False,
             texture: float = 0.3) -> str:
    """Path of a ColourNet exported once per test process with these settings."""
    key = (output_resolution, with_confidence, texture)
    if key not in _EXPORTED:
        folder = tempfile.mkdtemp(prefix='seg_runtime_test_')
        atexit.register(shutil.rmtree, folder, True)
        path = os.path.join(folder, f'colour_{output_resolution}_{int(with_confidence)}.onnx')
        export_colour_net(path, texture=texture, output_resolution=output_resolution,
                          with_confidence=with_confidence)
        _EXPORTED[key] = path
    return _EXPORTED[key]


def expected_labels(layout_frame: np.ndarray) -> np.ndarray:
    """Class ids of a frame painted only in class colours (no texture)."""
    labels = np.full(layout_frame.shape[:2], 255, np.uint8)
    for class_id, name in enumerate(CLASS_NAMES):
        labels[(layout_frame == COLOURS[name]).all(axis=2)] = class_id
    return labels
