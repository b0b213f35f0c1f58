"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional
Networks for Semantic Segmentation", CVPR 2015 / TPAMI 2017).

A classification backbone scores every 1/32 cell (``score_fr``); FCN-16s adds
scores predicted from pool4 (1/16) to the 2× upsampled 1/32 scores, FCN-8s
then adds scores from pool3 (1/8) to the 2× upsampled sum. The last sum is
upsampled to the input size by bilinear interpolation (the paper's final
deconvolution is fixed to bilinear interpolation too).

Backbones (``backbone=``):

* ``'resnet18'`` (default: 11 M parameters, quick to test on a CPU),
  ``'resnet34'``, ``'resnet50'``, ``'resnet101'``: layer2 / layer3 / layer4
  are the pool3 / pool4 / pool5 equivalents; layer4 is scored directly.
* ``'vgg16'`` (the paper's) and ``'vgg16_bn'``: VGG-16 plus fc6 (7×7 conv,
  4096) and fc7 (1×1, 4096) as convolutions. FCN-8s on VGG-16 has about 134 M
  parameters, as in the paper. Unlike the Caffe original, the first
  convolution is not padded by 100 pixels (no crop layers are needed): every
  size is padded to a multiple of 32 by ``SegmentationModel``.

``pretrained``: False, or the path of a local torchvision ImageNet state dict
for the backbone (VGG-16's classifier fc6/fc7 are reshaped into the
convolutions). Nothing is downloaded.

``upsample`` chooses the 2× stages: ``'deconv'`` (default, the paper's
4×4 stride-2 transposed convolution initialised to bilinear interpolation and
learnable), or ``'transpose'`` / ``'bilinear'`` from ``models.upsample``.
``'unpool'`` is refused: score maps have no max-pool indices.

``dropout``: after fc6 and fc7 (VGG backbones only; the ResNets have no fc
layers to convolutionalise and score layer4 directly).

The skip scorers (score_pool4, score_pool3) start at zero, as in the paper, so
a fresh FCN-8s predicts what its FCN-32s part predicts.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.model_info import IMAGENET_MEAN, IMAGENET_STD
from seg_perception.models import register_model
from seg_perception.models.base import SegmentationModel
from seg_perception.models.classic_backbones import (ResNetStages, VGG16Backbone, bilinear_kernel,
                                                     check_classic_backbone, load_vgg16_weights,
                                                     vgg16_fc_layers)
from seg_perception.models.pretrained import PretrainedArg, resolve_pretrained
from seg_perception.models.upsample import check_upsample_mode, make_upsample

FCN_VARIANTS = ('32s', '16s', '8s')
FCN_UPSAMPLE_MODES = ('deconv', 'transpose', 'bilinear')


def _bilinear_deconv(channels: int) -> nn.ConvTranspose2d:
    """The paper's learnable 2× upsampler: 4×4 stride 2, bilinear at initialisation."""
    deconv = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1,
                                bias=False)
    with torch.no_grad():
        deconv.weight.copy_(bilinear_kernel(channels, 4))
    return deconv


class _Upsample2x(nn.Module):
    """2× upsampler of score maps: paper's bilinear deconvolution or a models.upsample one."""

    def __init__(self, mode: str, channels: int):
        super().__init__()
        self.layer = _bilinear_deconv(channels) if mode == 'deconv' \
            else make_upsample(mode, channels, channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class FCN(SegmentationModel):
    """FCN-32s / 16s / 8s on a VGG-16 or ResNet backbone (see the module doc)."""

    size_multiple = 32

    def __init__(self, num_classes: int, *, variant: str = '8s', backbone: str = 'resnet18',
                 pretrained: PretrainedArg = False, upsample: str = 'deconv',
                 dropout: float = 0.5):
        super().__init__(num_classes)
        if variant not in FCN_VARIANTS:
            raise InvalidValueError(f'unknown FCN variant {variant!r}; choose one of '
                                    f'{", ".join(FCN_VARIANTS)}')
        if upsample == 'unpool':
            raise InvalidValueError("FCN cannot use upsample='unpool': it upsamples class score "
                                    'maps, which have no max-pool indices; choose one of '
                                    f'{", ".join(FCN_UPSAMPLE_MODES)}')
        check_upsample_mode(upsample, FCN_UPSAMPLE_MODES)
        self.variant = variant
        self.backbone_name = check_classic_backbone(backbone)
        if backbone.startswith('vgg'):
            path = resolve_pretrained(backbone, pretrained)   # fail before 134 M weights
            self.backbone = VGG16Backbone(batch_norm=backbone == 'vgg16_bn')
            self.head: nn.Module = vgg16_fc_layers(dropout=dropout)
            head_channels = 4096
            if path is not None:
                load_vgg16_weights(self.backbone.all_features(), self.head, path, backbone)
        else:
            self.backbone = ResNetStages(backbone, pretrained)
            self.head = nn.Identity()
            head_channels = self.backbone.channels['pool5']
        channels = self.backbone.channels
        self.score_fr = nn.Conv2d(head_channels, num_classes, kernel_size=1)
        self.score_pool4: Optional[nn.Conv2d] = None
        self.score_pool3: Optional[nn.Conv2d] = None
        self.up_pool5: Optional[nn.Module] = None
        self.up_pool4: Optional[nn.Module] = None
        if variant in ('16s', '8s'):
            self.score_pool4 = _zero_conv(channels['pool4'], num_classes)
            self.up_pool5 = _Upsample2x(upsample, num_classes)
        if variant == '8s':
            self.score_pool3 = _zero_conv(channels['pool3'], num_classes)
            self.up_pool4 = _Upsample2x(upsample, num_classes)

    @property
    def normalization(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(mean, std) on the 0..1 RGB scale: ImageNet's, as for every torchvision backbone."""
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        scores = self.score_fr(self.head(features['pool5']))
        if self.score_pool4 is not None:
            scores = self.up_pool5(scores) + self.score_pool4(features['pool4'])
        if self.score_pool3 is not None:
            scores = self.up_pool4(scores) + self.score_pool3(features['pool3'])
        return F.interpolate(scores, size=x.shape[-2:], mode='bilinear', align_corners=False)


def _zero_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


@register_model('fcn32s')
def fcn32s(num_classes: int, **config) -> FCN:
    """FCN-32s: scores at 1/32 upsampled in one step."""
    return FCN(num_classes, variant='32s', **config)


@register_model('fcn16s')
def fcn16s(num_classes: int, **config) -> FCN:
    """FCN-16s: 1/32 scores, 2× upsampled, plus pool4 scores."""
    return FCN(num_classes, variant='16s', **config)


@register_model('fcn8s')
def fcn8s(num_classes: int, **config) -> FCN:
    """FCN-8s: FCN-16s's sum, 2× upsampled, plus pool3 scores."""
    return FCN(num_classes, variant='8s', **config)
