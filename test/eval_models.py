"""Shared pieces of the evaluate tests: a model whose predictions are known in advance.

The model is a ColourNet (colour_net.py) given the label palette as its colours: a
pixel painted in class k's palette colour is predicted as k, so the confusion matrix
of a synthetic dataset follows from its images and masks alone.
"""
import os

import cv2
import numpy as np
from colour_net import ARCHITECTURE, ColourNet

from seg_perception.cli import main as cli_main
from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo

PALETTE4 = [[200, 0, 0], [0, 200, 0], [0, 0, 200], [250, 250, 250]]
NAMES4 = ['road', 'grass', 'sky', 'wall']
SIZE = (32, 64)                # network input size (H, W)


def palette_info(names, palette, drivable=(0,), label_space='palette4', ignore=255):
    """The ModelInfo of a ColourNet whose colours are the label palette."""
    return ModelInfo(architecture=ARCHITECTURE, num_classes=len(names), class_names=list(names),
                     palette=[list(c) for c in palette], drivable_ids=list(drivable),
                     input_size=SIZE, mean=LITE0_MEAN, std=LITE0_STD,
                     arch_config={'colours': [list(c) for c in palette]},
                     label_space=label_space, ignore_index=ignore, dataset='synthetic')


def save_palette_checkpoint(path, info):
    from seg_perception.models.checkpoint import make_checkpoint, save_checkpoint
    model = ColourNet(info.num_classes, info.palette).eval()
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
