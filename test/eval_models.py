"""Shared pieces of the evaluate tests: a model whose predictions are known in advance.

``PaletteNet`` is a nearest-colour classifier (a 1×1 convolution with set weights): a
pixel painted in class k's palette colour is predicted as k, so the confusion matrix
of a synthetic dataset follows from its images and masks alone.
"""
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from seg_perception import models
from seg_perception.cli import main as cli_main
from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo
from seg_perception.models.base import SegmentationModel

ARCH = 'test_eval_palette_net'
PALETTE4 = [[200, 0, 0], [0, 200, 0], [0, 0, 200], [250, 250, 250]]
NAMES4 = ['road', 'grass', 'sky', 'wall']
SIZE = (32, 64)                # network input size (H, W)


class PaletteNet(SegmentationModel):
    """Logit_k = -|x - p_k|^2 + |x|^2 on the normalised scale: nearest palette colour."""

    size_multiple = 1

    def __init__(self, num_classes, palette):
        super().__init__(num_classes)
        self.classify = nn.Conv2d(3, num_classes, 1)
        prototypes = torch.tensor(palette, dtype=torch.float32) / 127.5 - 1   # mean=std=0.5
        with torch.no_grad():
            self.classify.weight.copy_((2 * prototypes).view(num_classes, 3, 1, 1))
            self.classify.bias.copy_(-(prototypes ** 2).sum(1))

    def forward_padded(self, x):
        return self.classify(x)


@pytest.fixture
def palette_arch():
    """Register PaletteNet while the test runs, so checkpoints can rebuild it."""
    models.list_models()
    models.register_model(ARCH)(lambda num_classes, palette: PaletteNet(num_classes, palette))
    try:
        yield ARCH
    finally:
        models._REGISTRY.pop(ARCH, None)


def palette_info(names, palette, drivable=(0,), label_space='palette4', ignore=255):
    return ModelInfo(architecture=ARCH, num_classes=len(names), class_names=list(names),
                     palette=[list(c) for c in palette], drivable_ids=list(drivable),
                     input_size=SIZE, mean=LITE0_MEAN, std=LITE0_STD,
                     arch_config={'palette': [list(c) for c in palette]},
                     label_space=label_space, ignore_index=ignore, dataset='synthetic')


def save_palette_checkpoint(path, info):
    from seg_perception.models.checkpoint import make_checkpoint, save_checkpoint
    model = PaletteNet(info.num_classes, info.palette).eval()
    save_checkpoint(str(path), make_checkpoint(model, info))
    return str(path)


def write_png(path, array):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)


def synthetic_folder(root, count=3, shape=SIZE, seed=0):
    """images/val + masks/val: blocks of palette colours; masks mostly agree.

    Returns the expected 4×4 confusion matrix (rows = mask class, cols = colour class).
    """
    rng = np.random.default_rng(seed)
    expected = np.zeros((4, 4), np.int64)
    height, width = shape
    for index in range(count):
        colour_class = np.zeros(shape, np.uint8)
        colour_class[:height // 3] = 2                               # sky on top
        colour_class[height // 3:2 * height // 3, :width // 2] = 3   # wall
        colour_class[height // 3:2 * height // 3, width // 2:] = 1   # grass
        colour_class[2 * height // 3:] = 0                           # road
        mask = colour_class.copy()
        # label noise: random pixels get another class, a strip is ignored
        flip = rng.random(shape) < 0.15
        mask[flip] = rng.integers(0, 4, int(flip.sum()))
        mask[:, index:index + 2] = 255
        image = np.asarray(PALETTE4, np.uint8)[colour_class]
        write_png(root / 'images' / 'val' / f'frame{index}.png', image)
        write_png(root / 'masks' / 'val' / f'frame{index}.png', mask)
        keep = mask != 255
        np.add.at(expected, (mask[keep].astype(int), colour_class[keep].astype(int)), 1)
    return expected


def run_cli(*argv):
    return cli_main(['evaluate', *[str(a) for a in argv]])
