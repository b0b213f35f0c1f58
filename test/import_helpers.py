"""Small foreign graphs for the import-model tests, exported by torch as a user would."""
import warnings

import numpy as np
import torch
from torch import nn


class TwoHeads(nn.Module):
    """A BDD100K-style multi-task toy: class logits, drivable and lane heads at 1/4 scale."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.seg = nn.Conv2d(8, classes, 1)
        self.da = nn.Conv2d(8, 2, 1)
        self.ll = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        features = self.body(x)
        return self.seg(features), self.da(features), self.ll(features)


def export(model: nn.Module, path, size=(64, 96), input_names=('input',),
           output_names=('seg', 'da', 'll'), layout='NCHW', dynamic=('batch',)) -> str:
    """torch.onnx.export with a dynamic batch, as the families' documentation does.
    ``dynamic``: the input axes left free, of 'batch', 'height', 'width' (none: all fixed)."""
    shape = (1, 3) + tuple(size) if layout == 'NCHW' else (1,) + tuple(size) + (3,)
    axes = {'batch': 0, 'height': 2 if layout == 'NCHW' else 1,
            'width': 3 if layout == 'NCHW' else 2}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model.eval(), torch.randn(shape), str(path), dynamo=False,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes={input_names[0]: {axes[a]: a for a in dynamic}}
                          if dynamic else None,
                          opset_version=17)
    return str(path)


def blocky_frame(height: int = 120, width: int = 200, seed: int = 0) -> np.ndarray:
    """A frame of flat 8-pixel blocks: edges without the near-ties of pixel noise."""
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 8 + 1, width // 8 + 1, 3),
                                                  dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(blocks, 8, 0), 8, 1)[:height, :width])
