"""Tiny models for the runtime tests: exported with the real export_onnx.

``ColourNet`` is a nearest-colour classifier (one 1×1 convolution with set
weights), so the class of a flat-coloured patch is known in advance: red → 0
'road', green → 1 'grass', blue → 2 'sky', black → 3 'car', white → 4 'building'.
A second, random 3×3 convolution can be mixed in (``texture``) so that the
labels also depend on neighbours and resizing matters, as in a real network.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile

import numpy as np
import torch
from torch import nn

from seg_perception import models
from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo
from seg_perception.models.base import SegmentationModel

CLASS_NAMES = ['road', 'grass', 'sky', 'car', 'building']
PALETTE = [[128, 64, 128], [0, 200, 0], [70, 130, 180], [0, 0, 142], [70, 70, 70]]
# Class colours in RGB: what a flat patch of each class looks like.
COLOURS = {'road': (255, 0, 0), 'grass': (0, 255, 0), 'sky': (0, 0, 255),
           'car': (0, 0, 0), 'building': (255, 255, 255)}
ARCHITECTURE = 'test_colour_net'
INPUT_SIZE = (32, 64)


class ColourNet(SegmentationModel):
    """Nearest-colour classifier, plus ``texture`` × a random 3×3 convolution."""

    size_multiple = 1

    def __init__(self, num_classes: int = 5, texture: float = 0.0):
        super().__init__(num_classes)
        self.texture = float(texture)
        self.classify = nn.Conv2d(3, num_classes, 1)
        self.neighbours = nn.Conv2d(3, num_classes, 3, padding=1)
        # Prototypes on the normalised scale (mean = std = 0.5: -1 .. 1).
        prototypes = torch.tensor([COLOURS[n] for n in CLASS_NAMES], dtype=torch.float32)
        prototypes = prototypes[:num_classes] / 127.5 - 1
        with torch.no_grad():
            # -|x - p|^2 up to a term shared by all classes: 2 p.x - |p|^2.
            self.classify.weight.copy_((2 * prototypes).view(num_classes, 3, 1, 1))
            self.classify.bias.copy_(-(prototypes ** 2).sum(1))
            generator = torch.Generator().manual_seed(1)
            self.neighbours.weight.copy_(torch.randn(self.neighbours.weight.shape,
                                                     generator=generator))
            self.neighbours.bias.zero_()

    def forward_padded(self, x):
        return self.classify(x) + self.texture * self.neighbours(x)


@contextlib.contextmanager
def registered():
    """ColourNet in the model registry while the block runs (checkpoints rebuild it by
    name), and out of it afterwards, so other tests see only the real architectures."""
    models.list_models()
    added = ARCHITECTURE not in models._REGISTRY
    if added:
        models.register_model(ARCHITECTURE)(
            lambda num_classes, texture=0.0: ColourNet(num_classes, texture))
    try:
        yield
    finally:
        if added:
            models._REGISTRY.pop(ARCHITECTURE, None)


def colour_info(input_size=INPUT_SIZE, texture: float = 0.0) -> ModelInfo:
    """The ModelInfo of a ColourNet."""
    return ModelInfo(architecture=ARCHITECTURE, num_classes=len(CLASS_NAMES),
                     class_names=list(CLASS_NAMES), palette=[list(c) for c in PALETTE],
                     drivable_ids=[0], input_size=tuple(input_size), mean=LITE0_MEAN,
                     std=LITE0_STD, arch_config={'texture': texture}, label_space='colours')


def build_colour_net(texture: float = 0.0):
    """(model, info) for a ColourNet."""
    return ColourNet(len(CLASS_NAMES), texture).eval(), colour_info(texture=texture)


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
