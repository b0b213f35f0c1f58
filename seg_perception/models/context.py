"""Dilated front-end + context module (Yu & Koltun, "Multi-Scale Context Aggregation
by Dilated Convolutions", ICLR 2016).

Front-end: a classifier with its last strides turned into dilation, scoring
the C classes at 1/8 of the input resolution.

* ``'vgg16'`` (the paper's): VGG-16 without pool4 and pool5; conv5 dilated by
  2, fc6 (7×7, 4096) dilated by 4, fc7 (1×1, 4096), then a 1×1 convolution to
  C scores. About 134 M parameters. (The paper also dropped the padding of
  intermediate maps and reflect-padded the input instead; here convolutions
  are zero-padded so the output aligns with the input.)
* ``'resnet18'`` (default, quick on a CPU) or any other backbone of
  ``models.backbones`` (resnet50, resnet101, efficientnet_lite0,
  mobilenet_v3_large), dilated to output stride 8, then dropout and a 1×1
  convolution to C scores.

Context module (the paper's Table 1), on the C score maps:

====================  ==  ==  ==  ==  ===  ===  ===  ==
layer                 1   2   3   4   5    6    7    8
====================  ==  ==  ==  ==  ===  ===  ===  ==
convolution           3×3 3×3 3×3 3×3 3×3  3×3  3×3  1×1
dilation              1   1   2   4   8    16   1    1
ReLU (truncation)     yes yes yes yes yes  yes  yes  no
channels, basic       C   C   C   C   C    C    C    C
channels, large       2C  2C  4C  8C  16C  32C  32C  C
====================  ==  ==  ==  ==  ===  ===  ===  ==

Identity initialisation (the paper's): basic, the centre tap of output map b
is 1 for input map b, all else 0; large, the centre tap is C / c_out where
floor(a C / c_in) == floor(b C / c_out), plus N(0, sigma²) noise elsewhere
with sigma = ``init_noise`` × C / c_out (``init_noise`` 0.001 for large, 0 for
basic; the noise breaks the symmetry of the replicated maps). Biases start at
0. A freshly built module therefore passes ReLU(x) through unchanged (exactly
for basic; for large up to the noise), so training starts from the
front-end's prediction.

The C output maps are upsampled bilinearly to the input size.
``size_multiple`` is 8 (the front-end's stride).
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.models import register_model
from seg_perception.model_info import IMAGENET_MEAN, IMAGENET_STD
from seg_perception.models.backbones import (BACKBONES, Normalization, backbone_normalization,
                                             create_backbone)
from seg_perception.models.base import SegmentationModel
from seg_perception.models.classic_backbones import (load_vgg16_weights, vgg16_features,
                                                     vgg16_fc_layers)
from seg_perception.models.pretrained import PretrainedArg, resolve_pretrained

CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
CONTEXT_VARIANTS = {'basic': (1, 1, 1, 1, 1, 1, 1), 'large': (2, 2, 4, 8, 16, 32, 32)}
FRONT_ENDS = ('vgg16',) + tuple(BACKBONES)


@torch.no_grad()
def identity_init_(conv: nn.Conv2d, classes: int, noise_std: float = 0.0) -> None:
    """The paper's identity initialisation of one context layer (see the module doc)."""
    c_out, c_in = conv.weight.shape[:2]
    scale = classes / c_out
    weight = torch.zeros_like(conv.weight)
    if noise_std > 0:
        weight.normal_(0.0, noise_std * scale)
    group_in = torch.arange(c_in, device=weight.device) * classes // c_in
    group_out = torch.arange(c_out, device=weight.device) * classes // c_out
    centre = conv.kernel_size[0] // 2
    matched = (group_out[:, None] == group_in[None, :]).to(weight.dtype)
    weight[:, :, centre, centre] = torch.where(matched > 0, matched * scale,
                                               weight[:, :, centre, centre])
    conv.weight.copy_(weight)
    nn.init.zeros_(conv.bias)


class ContextModule(nn.Module):
    """Seven dilated 3×3 layers and a 1×1 layer on C maps; C in, C out."""

    def __init__(self, channels: int, variant: str = 'basic',
                 init_noise: Optional[float] = None):
        super().__init__()
        if variant not in CONTEXT_VARIANTS:
            raise InvalidValueError(f'unknown context module variant {variant!r}; choose one of '
                                    f'{", ".join(CONTEXT_VARIANTS)}')
        self.channels, self.variant = int(channels), variant
        widths = [self.channels * factor for factor in CONTEXT_VARIANTS[variant]]
        layers: List[nn.Conv2d] = []
        in_ch = self.channels
        for width, dilation in zip(widths, CONTEXT_DILATIONS):
            layers.append(nn.Conv2d(in_ch, width, 3, padding=dilation, dilation=dilation))
            in_ch = width
        self.layers = nn.ModuleList(layers)
        self.final = nn.Conv2d(in_ch, self.channels, 1)
        if init_noise is None:
            init_noise = 0.001 if variant == 'large' else 0.0
        self.reset_identity(init_noise)

    def reset_identity(self, init_noise: float = 0.0) -> None:
        """(Re)apply the identity initialisation with relative noise ``init_noise``."""
        for conv in list(self.layers) + [self.final]:
            identity_init_(conv, self.channels, init_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.layers:
            x = F.relu(conv(x))
        return self.final(x)


class DilatedVGG16FrontEnd(nn.Module):
    """VGG-16 with pool4/pool5 removed, conv5 dilated 2, fc6 dilated 4; stride 8."""

    def __init__(self, num_classes: int, pretrained: PretrainedArg = False,
                 dropout: float = 0.5):
        super().__init__()
        path = resolve_pretrained('vgg16', pretrained)   # fail before 134 M weights
        features = vgg16_features()
        pools = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
        for index in pools[3:]:
            features[index] = nn.Identity()   # keeps torchvision's indices for loading
        for layer in features[pools[3]:]:
            if isinstance(layer, nn.Conv2d):
                layer.dilation, layer.padding = (2, 2), (2, 2)
        self.features = features
        self.fc = vgg16_fc_layers(dilation=4, dropout=dropout)
        if path is not None:
            load_vgg16_weights(self.features, self.fc, path, 'vgg16')
        self.score = nn.Conv2d(4096, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.fc(self.features(x)))


class BackboneFrontEnd(nn.Module):
    """A ``models.backbones`` network at output stride 8, dropout, 1×1 scores."""

    def __init__(self, name: str, num_classes: int, pretrained: PretrainedArg = False,
                 dropout: float = 0.1):
        super().__init__()
        self.backbone = create_backbone(name, output_stride=8, pretrained=pretrained)
        self.dropout = nn.Dropout2d(dropout)
        self.score = nn.Conv2d(self.backbone.out_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.dropout(self.backbone(x)['out']))


class DilatedContextNet(SegmentationModel):
    """Front-end (stride 8) + context module + bilinear upsampling to the input size."""

    size_multiple = 8

    def __init__(self, num_classes: int, *, variant: str = 'basic',
                 backbone: str = 'resnet18', pretrained: PretrainedArg = False,
                 init_noise: Optional[float] = None):
        super().__init__(num_classes)
        if backbone not in FRONT_ENDS:
            raise InvalidValueError(f'unknown front-end backbone {backbone!r}; known: '
                                    f'{", ".join(FRONT_ENDS)}')
        self.backbone_name = backbone
        self.front_end = DilatedVGG16FrontEnd(num_classes, pretrained) if backbone == 'vgg16' \
            else BackboneFrontEnd(backbone, num_classes, pretrained)
        self.context = ContextModule(num_classes, variant, init_noise)

    @property
    def normalization(self) -> Normalization:
        """(mean, std) on the 0..1 RGB scale that the front-end's weights expect."""
        if self.backbone_name == 'vgg16':
            return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
        return backbone_normalization(self.backbone_name)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.context(self.front_end(x))
        return F.interpolate(scores, size=x.shape[-2:], mode='bilinear', align_corners=False)


@register_model('dilated_context')
def dilated_context(num_classes: int, **config) -> DilatedContextNet:
    """Yu & Koltun: dilated front-end + context module (variant 'basic' or 'large')."""
    return DilatedContextNet(num_classes, **config)
