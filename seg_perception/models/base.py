"""The base every segmentation network shares: pad to a valid size, crop back."""
from __future__ import annotations

from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError

Output = Union[torch.Tensor, Dict[str, torch.Tensor]]


class SegmentationModel(nn.Module):
    """Takes a normalised N×3×H×W float batch, returns N×C×H×W logits.

    Subclasses implement ``forward_padded`` for inputs whose height and width are
    multiples of ``size_multiple`` (the network's total stride, or what its
    pooling and valid convolutions need). ``forward`` pads any other size with
    zeros (the normalised mean) at the bottom and right, and crops the logits
    back, so every model takes every input size.

    A model built with an auxiliary head returns ``{'out': logits, 'aux': logits}``
    in training mode; in eval mode (and so in export) it always returns a tensor.
    """

    size_multiple: int = 32

    def __init__(self, num_classes: int):
        super().__init__()
        if int(num_classes) < 2:
            raise InvalidValueError(f'num_classes must be at least 2, got {num_classes}')
        self.num_classes = int(num_classes)

    def forward_padded(self, x: torch.Tensor) -> Output:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Output:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InvalidValueError(f'expected an N×3×H×W batch, got shape {tuple(x.shape)}')
        height, width = x.shape[-2:]
        m = self.size_multiple
        pad_h = (m - height % m) % m
        pad_w = (m - width % m) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        out = self.forward_padded(x)
        if pad_h or pad_w:
            if isinstance(out, dict):
                out = {k: v[..., :height, :width] for k, v in out.items()}
            else:
                out = out[..., :height, :width]
        return out
