"""Backbones of the classic networks (FCN, dilated front-end): VGG-16 and plain ResNets.

Both return features named after FCN's VGG-16 pooling layers:
``{'pool3': 1/8, 'pool4': 1/16, 'pool5': 1/32}`` (undilated), with the channel
counts in ``channels``. The VGG-16 layer layout (and so every state-dict key
under ``features.``) is torchvision's, so torchvision's ImageNet state dict
loads from a local file; its fully connected fc6/fc7 are turned into the
7×7 and 1×1 convolutions of FCN ("convolutionalised").

Weights only ever come from a local file (``pretrained=<path>``); nothing is
downloaded. Loading and its errors are those of ``models.pretrained``.
"""
from __future__ import annotations

from typing import Dict, List, Union

import torch
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.models.pretrained import (PretrainedArg, PretrainedWeightsError,
                                              fit_state_dict, load_classifier_weights,
                                              read_state_dict, resolve_pretrained)

# VGG-16 (configuration "D"): channels of each 3×3 conv, 'M' = 2×2 max-pool.
VGG16_LAYOUT: List[Union[int, str]] = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M',
                                       512, 512, 512, 'M', 512, 512, 512, 'M']
VGG_BACKBONES = ('vgg16', 'vgg16_bn')
RESNET_BACKBONES = ('resnet18', 'resnet34', 'resnet50', 'resnet101')
CLASSIC_BACKBONES = VGG_BACKBONES + RESNET_BACKBONES


def vgg16_features(batch_norm: bool = False) -> nn.Sequential:
    """VGG-16 convolutional layers with torchvision's module indices (pool5 included)."""
    layers: List[nn.Module] = []
    in_ch = 3
    for item in VGG16_LAYOUT:
        if item == 'M':
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU(inplace=True))
        in_ch = int(item)
    return nn.Sequential(*layers)


def vgg16_fc_layers(dilation: int = 1, dropout: float = 0.5) -> nn.Sequential:
    """fc6 (7×7 conv, 512 -> 4096) and fc7 (1×1, 4096 -> 4096), each ReLU + dropout."""
    return nn.Sequential(
        nn.Conv2d(512, 4096, kernel_size=7, padding=3 * dilation, dilation=dilation),
        nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        nn.Conv2d(4096, 4096, kernel_size=1), nn.ReLU(inplace=True), nn.Dropout2d(dropout))


def load_vgg16_weights(features: nn.Sequential, fc: nn.Sequential, path: str,
                       network: str) -> None:
    """Load a torchvision VGG-16 state dict: ``features.*`` as is, classifier fc6/fc7
    reshaped into the convolutions of ``fc`` (its ``classifier.6`` 1000-class layer is
    not used)."""
    source = read_state_dict(path)
    fitted = fit_state_dict(source, features.state_dict(), path, network, prefix='features.')
    features.load_state_dict(fitted, strict=True)
    fc_state = {}
    for src_index, dst_index in ((0, 0), (3, 3)):
        weight = source.get(f'classifier.{src_index}.weight')
        bias = source.get(f'classifier.{src_index}.bias')
        target = fc[dst_index].weight
        if weight is None or bias is None or weight.numel() != target.numel():
            raise PretrainedWeightsError(
                f'{path} does not fit torchvision {network}: classifier.{src_index} '
                f'(fc{6 + src_index // 3}) must hold {target.numel()} weights')
        fc_state[f'{dst_index}.weight'] = weight.reshape(target.shape)
        fc_state[f'{dst_index}.bias'] = bias
    fc.load_state_dict(fc_state, strict=True)


class VGG16Backbone(nn.Module):
    """VGG-16 conv layers split at pool3 / pool4 / pool5 (strides 8, 16, 32)."""

    def __init__(self, batch_norm: bool = False):
        super().__init__()
        features = vgg16_features(batch_norm)
        pools = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
        self.to_pool3 = features[:pools[2] + 1]
        self.to_pool4 = features[pools[2] + 1:pools[3] + 1]
        self.to_pool5 = features[pools[3] + 1:]
        self.channels = {'pool3': 256, 'pool4': 512, 'pool5': 512}

    def all_features(self) -> nn.Sequential:
        """The three parts as one Sequential with torchvision's indices (for loading)."""
        return nn.Sequential(*self.to_pool3, *self.to_pool4, *self.to_pool5)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        return {'pool3': pool3, 'pool4': pool4, 'pool5': self.to_pool5(pool4)}


class ResNetStages(nn.Module):
    """torchvision ResNet without avgpool/fc: layer2 (1/8), layer3 (1/16), layer4 (1/32)."""

    def __init__(self, name: str, pretrained: PretrainedArg = False):
        super().__init__()
        import torchvision
        network = getattr(torchvision.models, name)(weights=None)
        path = resolve_pretrained(name, pretrained)
        if path is not None:
            load_classifier_weights(network, path, name)
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool,
                                  network.layer1)
        self.layer2, self.layer3, self.layer4 = network.layer2, network.layer3, network.layer4
        expansion = 4 if name in ('resnet50', 'resnet101') else 1
        self.channels = {'pool3': 128 * expansion, 'pool4': 256 * expansion,
                         'pool5': 512 * expansion}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        pool3 = self.layer2(self.stem(x))
        pool4 = self.layer3(pool3)
        return {'pool3': pool3, 'pool4': pool4, 'pool5': self.layer4(pool4)}


def check_classic_backbone(name: str) -> str:
    """Return ``name`` if it is one of ``CLASSIC_BACKBONES``, else raise naming them."""
    if name not in CLASSIC_BACKBONES:
        raise InvalidValueError(f'unknown backbone {name!r}; known: {", ".join(CLASSIC_BACKBONES)}')
    return name


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Per-channel (diagonal) bilinear interpolation kernel for a transposed convolution."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    kernel_2d = taps[:, None] * taps[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel_2d
    return weight
