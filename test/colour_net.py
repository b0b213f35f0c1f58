"""The nearest-colour test network: its labels follow from the colours of a picture.

``ColourNet`` gives each class a colour and labels a pixel with the class whose colour
is nearest (one 1×1 convolution with set weights), so a flat patch painted in class
k's colour is labelled k and the labels of a synthetic picture are known in advance.
``texture`` mixes in a fixed random 3×3 convolution, so that the labels also depend on
neighbours and resizing matters, as in a real network.

conftest's ``colour_net_name`` fixture registers it as ARCHITECTURE, so checkpoints of
it rebuild by name: a ModelInfo for it names ``colours`` (and ``texture``) in
``arch_config`` and normalises with mean = std = 0.5 (LITE0_MEAN, LITE0_STD).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from seg_perception.models.base import SegmentationModel

ARCHITECTURE = 'test_colour_net'


class ColourNet(SegmentationModel):
    """Nearest of ``colours`` (RGB, one per class), plus ``texture`` × a random 3×3 convolution."""

    size_multiple = 1

    def __init__(self, num_classes: int, colours: Sequence[Sequence[int]], texture: float = 0.0):
        super().__init__(num_classes)
        if len(colours) != num_classes:
            raise ValueError(f'ColourNet: {len(colours)} colours for {num_classes} classes')
        self.texture = float(texture)
        self.classify = nn.Conv2d(3, num_classes, 1)
        # Colours on the normalised scale (mean = std = 0.5: -1 .. 1).
        prototypes = torch.tensor(colours, dtype=torch.float32) / 127.5 - 1
        with torch.no_grad():
            # -|x - p|^2 up to a term shared by all classes: 2 p.x - |p|^2.
            self.classify.weight.copy_((2 * prototypes).view(num_classes, 3, 1, 1))
            self.classify.bias.copy_(-(prototypes ** 2).sum(1))
        self.neighbours = None
        if self.texture:
            self.neighbours = nn.Conv2d(3, num_classes, 3, padding=1)
            with torch.no_grad():
                generator = torch.Generator().manual_seed(1)
                self.neighbours.weight.copy_(torch.randn(self.neighbours.weight.shape,
                                                         generator=generator))
                self.neighbours.bias.zero_()

    def forward_padded(self, x):
        logits = self.classify(x)
        if self.neighbours is not None:
            logits = logits + self.texture * self.neighbours(x)
        return logits
