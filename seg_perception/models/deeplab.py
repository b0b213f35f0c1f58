"""DeepLabV3 and DeepLabV3+ on a dilated backbone (see backbones.py).

Two decoder widths:

* ``decoder='light'`` (default, for the vehicle): ASPP of 128 channels whose
  atrous branches are depthwise-separable, a 32-channel projection of the 1/4
  feature, and two depthwise-separable 3×3 convolutions of 128 channels.
* ``decoder='textbook'``: the published widths: ASPP of 256 channels with
  full 3×3 atrous convolutions, a 48-channel projection, two 3×3 of 256.

Counted (not timed) at 512×1024 on EfficientNet-Lite0, output stride 16, 19 classes,
and asserted by test_models_deeplab: DeepLabV3+ light about 3.3 M parameters / 9 GMAC,
textbook about 6.96 M / 55 GMAC.

Only Conv, BatchNorm, ReLU (the backbone's own activations), mean, concat and
bilinear resize are used, so the graph exports to ONNX with dynamic H×W and
quantises to INT8 in TensorRT.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.models import register_model
from seg_perception.models.backbones import (Normalization, backbone_normalization,
                                             check_backbone_name, check_output_stride,
                                             create_backbone)
from seg_perception.models.base import Output, SegmentationModel
from seg_perception.models.pretrained import PretrainedArg

DEFAULT_RATES_OS16 = (6, 12, 18)
# Per decoder: ASPP width, low-level projection width, decoder width, separable convs.
DECODERS: Dict[str, Tuple[int, int, int, bool]] = {
    'light': (128, 32, 128, True),
    'textbook': (256, 48, 256, False),
}


class ConvBNReLU(nn.Sequential):
    """k×k convolution (optionally dilated or depthwise), BatchNorm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1,
                 groups: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel - 1) // 2,
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True))


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3×3 (dilated) + BN + ReLU, then pointwise 1×1 + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__(
            ConvBNReLU(in_ch, in_ch, 3, dilation=dilation, groups=in_ch),
            ConvBNReLU(in_ch, out_ch, 1))


def conv3x3(in_ch: int, out_ch: int, separable: bool, dilation: int = 1) -> nn.Module:
    """A 3×3 block, depthwise-separable or full."""
    if separable:
        return SeparableConvBNReLU(in_ch, out_ch, dilation)
    return ConvBNReLU(in_ch, out_ch, 3, dilation=dilation)


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global mean, 1×1 conv + ReLU, spread back over H×W.

    No BatchNorm here: on a 1×1 map it fails for a training batch of one and adds
    nothing a bias cannot do. The mean over the spatial axes and a resize to the
    feature's size keep the graph valid for any input size.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return F.interpolate(pooled, size=x.shape[-2:], mode='nearest')


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, one 3×3 per rate, image pooling; concat, 1×1."""

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int], separable: bool,
                 dropout: float = 0.1):
        super().__init__()
        branches = [ConvBNReLU(in_ch, out_ch, 1)]
        branches += [conv3x3(in_ch, out_ch, separable, dilation=rate) for rate in rates]
        branches.append(ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNReLU(out_ch * len(branches), out_ch, 1),
                                     nn.Dropout(dropout))
        self.rates = tuple(rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode='bilinear', align_corners=False)


def check_rates(atrous_rates: Optional[Sequence[int]], output_stride: int) -> Tuple[int, ...]:
    """The ASPP rates: given ones checked, or (6, 12, 18) at stride 16, doubled at 8."""
    if atrous_rates is None:
        return tuple(r * 16 // output_stride for r in DEFAULT_RATES_OS16)
    rates = tuple(atrous_rates)
    if not rates or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise InvalidValueError(f'atrous_rates must be positive integers, got {atrous_rates!r}')
    return rates


class DeepLab(SegmentationModel):
    """DeepLabV3 (``plus=False``) or DeepLabV3+ (``plus=True``, 1/4 skip)."""

    def __init__(self, num_classes: int, *, plus: bool, backbone: str = 'efficientnet_lite0',
                 output_stride: int = 16, pretrained: PretrainedArg = False,
                 decoder: str = 'light', atrous_rates: Optional[Sequence[int]] = None,
                 aux: bool = False):
        super().__init__(num_classes)
        check_backbone_name(backbone)
        check_output_stride(output_stride)
        if decoder not in DECODERS:
            raise InvalidValueError(f'unknown decoder {decoder!r}; known: {", ".join(DECODERS)}')
        rates = check_rates(atrous_rates, output_stride)
        aspp_ch, low_ch, dec_ch, separable = DECODERS[decoder]
        self.backbone = create_backbone(backbone, output_stride=output_stride,
                                        pretrained=pretrained)
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.decoder_name = decoder
        self.plus = plus
        # With H, W multiples of the output stride every stride-2 layer halves
        # exactly, so the 1/4 and 1/output_stride features align pixel for pixel.
        self.size_multiple = output_stride
        self.aspp = ASPP(self.backbone.out_channels, aspp_ch, rates, separable)
        if plus:
            self.low_project = ConvBNReLU(self.backbone.low_channels, low_ch, 1)
            self.fuse = nn.Sequential(conv3x3(aspp_ch + low_ch, dec_ch, separable),
                                      conv3x3(dec_ch, dec_ch, separable))
        else:
            self.low_project = None
            self.fuse = conv3x3(aspp_ch, dec_ch, separable)
        self.classifier = nn.Conv2d(dec_ch, num_classes, 1)
        self.aux_head = None
        if aux:
            aux_width = dec_ch // 2
            self.aux_head = nn.Sequential(
                ConvBNReLU(self.backbone.aux_channels, aux_width, 3),
                nn.Dropout(0.1),
                nn.Conv2d(aux_width, num_classes, 1))

    @property
    def normalization(self) -> Normalization:
        """(mean, std) on the 0..1 RGB scale for ModelInfo: what the backbone expects."""
        return backbone_normalization(self.backbone_name)

    def forward_padded(self, x: torch.Tensor) -> Output:
        features = self.backbone(x)
        y = self.aspp(features['out'])
        if self.plus:
            low = self.low_project(features['low'])
            y = torch.cat([resize_to(y, low), low], dim=1)
        logits = resize_to(self.classifier(self.fuse(y)), x)
        if self.aux_head is not None and self.training:
            return {'out': logits, 'aux': resize_to(self.aux_head(features['aux']), x)}
        return logits


@register_model('deeplabv3')
def deeplabv3(num_classes: int, *, backbone: str = 'efficientnet_lite0', output_stride: int = 16,
              pretrained: PretrainedArg = False, decoder: str = 'light',
              atrous_rates: Optional[Sequence[int]] = None, aux: bool = False) -> DeepLab:
    """DeepLabV3: backbone, ASPP, one 3×3 block, classifier, upsampled to the input."""
    return DeepLab(num_classes, plus=False, backbone=backbone, output_stride=output_stride,
                   pretrained=pretrained, decoder=decoder, atrous_rates=atrous_rates, aux=aux)


@register_model('deeplabv3plus')
def deeplabv3plus(num_classes: int, *, backbone: str = 'efficientnet_lite0',
                  output_stride: int = 16, pretrained: PretrainedArg = False,
                  decoder: str = 'light', atrous_rates: Optional[Sequence[int]] = None,
                  aux: bool = False) -> DeepLab:
    """DeepLabV3+: DeepLabV3's ASPP, fused with the 1/4 feature by two 3×3 blocks."""
    return DeepLab(num_classes, plus=True, backbone=backbone, output_stride=output_stride,
                   pretrained=pretrained, decoder=decoder, atrous_rates=atrous_rates, aux=aux)
