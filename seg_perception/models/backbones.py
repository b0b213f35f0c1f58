"""Feature extractors for the DeepLab family, dilated to output stride 16 or 8.

Every backbone returns ``{'low': 1/4 feature, 'aux': 1/16 (or 1/8) feature,
'out': high-level feature at 1/output_stride}`` and records the channel
counts in ``low_channels``, ``aux_channels`` and ``out_channels``. Deeper
stages keep their weights; their stride-2 convolutions become stride 1 and
the convolutions after them are dilated instead, so the receptive field
stays what the pretrained weights learned.

For inputs whose height and width are multiples of ``output_stride`` the
features align exactly: 'low' is output_stride/4 times the size of 'out'.

=====================  ===========  ====  =====  ===========
backbone               low (1/4)    aux   out    weights expect
=====================  ===========  ====  =====  ===========
efficientnet_lite0     24           112   320    mean = std = 0.5
resnet18               64           256   512    ImageNet mean/std
resnet50, resnet101    256          1024  2048   ImageNet mean/std
mobilenet_v3_large     24           112   960    ImageNet mean/std
=====================  ===========  ====  =====  ===========
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.model_info import IMAGENET_MEAN, IMAGENET_STD, LITE0_MEAN, LITE0_STD
from seg_perception.models.pretrained import (LITE0_TIMM_NAME, PretrainedArg,
                                              load_classifier_weights, load_lite0_imagenet_weights,
                                              resolve_pretrained)

BACKBONES = ('efficientnet_lite0', 'resnet18', 'resnet50', 'resnet101', 'mobilenet_v3_large')
OUTPUT_STRIDES = (8, 16)
Normalization = Tuple[Tuple[float, float, float], Tuple[float, float, float]]


def check_backbone_name(name: str) -> str:
    """Return ``name`` if it is a known backbone, else raise listing the known ones."""
    if name not in BACKBONES:
        raise InvalidValueError(f'unknown backbone {name!r}; known: {", ".join(BACKBONES)}')
    return name


def check_output_stride(output_stride: int) -> int:
    """Return ``output_stride`` if supported (8 or 16), else raise."""
    if output_stride not in OUTPUT_STRIDES:
        raise InvalidValueError(f'output_stride must be 8 or 16, got {output_stride!r}')
    return int(output_stride)


def backbone_normalization(name: str) -> Normalization:
    """(mean, std) on the 0..1 RGB scale that the backbone's pretrained weights expect."""
    check_backbone_name(name)
    if name == 'efficientnet_lite0':
        return tuple(LITE0_MEAN), tuple(LITE0_STD)
    return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)


class Backbone(nn.Module):
    """Base of the feature extractors: ``forward(x) -> {'low', 'aux', 'out'}``."""

    low_channels: int
    aux_channels: int
    out_channels: int

    def __init__(self, name: str, output_stride: int):
        super().__init__()
        self.name = name
        self.output_stride = output_stride

    @property
    def normalization(self) -> Normalization:
        """(mean, std) the input must be normalised with."""
        return backbone_normalization(self.name)


class EfficientNetLite0Backbone(Backbone):
    """timm ``tf_efficientnet_lite0`` (features_only): blocks 1, 4 and 6."""

    low_channels, aux_channels, out_channels = 24, 112, 320

    def __init__(self, output_stride: int = 16, pretrained: PretrainedArg = False):
        super().__init__('efficientnet_lite0', output_stride)
        import timm
        # feature_info indices: 0 blocks.0 (1/2), 1 blocks.1 (1/4), 2 blocks.2 (1/8),
        # 3 blocks.4 (1/16), 4 blocks.6 (1/32 undilated).
        self.body = timm.create_model(LITE0_TIMM_NAME, pretrained=False, features_only=True,
                                      output_stride=output_stride, out_indices=(1, 3, 4))
        path = resolve_pretrained(self.name, pretrained)
        if path is not None:
            load_lite0_imagenet_weights(self.body, path)
        replace_dynamic_same_padding(self.body)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        low, aux, out = self.body(x)
        return {'low': low, 'aux': aux, 'out': out}


class EvenInputSameConv2d(nn.Conv2d):
    """A stride-2 TF-"SAME" convolution with its padding fixed for even input sizes.

    timm pads such convolutions by an amount computed from the input size at run
    time, which exports as a chain of Shape/Ceil/Sub ops in front of a Pad. The
    model pads its input to a multiple of the output stride, so every stride-2
    convolution sees an even size and the padding is the constant computed here:
    the same numbers, and a plain Pad + Conv in ONNX/TensorRT.
    """

    def __init__(self, source: nn.Conv2d):
        super().__init__(source.in_channels, source.out_channels, source.kernel_size,
                         stride=source.stride, padding=0, dilation=source.dilation,
                         groups=source.groups, bias=source.bias is not None)
        self.weight = source.weight
        if source.bias is not None:
            self.bias = source.bias
        pads = []
        for kernel, stride, dilation in zip(self.kernel_size, self.stride, self.dilation):
            total = max((kernel - 1) * dilation + 1 - stride, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        self.same_pad = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(F.pad(x, self.same_pad), self.weight, self.bias)


def replace_dynamic_same_padding(network: nn.Module) -> int:
    """Swap timm's run-time "SAME" convolutions for ``EvenInputSameConv2d``; return the count."""
    from timm.layers import Conv2dSame
    targets = [name for name, module in network.named_modules()
               if isinstance(module, Conv2dSame)]
    for name in targets:
        parent_name, _, child = name.rpartition('.')
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, EvenInputSameConv2d(getattr(parent, child)))
    return len(targets)


class ResNetBackbone(Backbone):
    """torchvision ResNet with ``replace_stride_with_dilation``; layer1, layer3, layer4."""

    def __init__(self, depth: int, output_stride: int = 16, pretrained: PretrainedArg = False):
        super().__init__(f'resnet{depth}', output_stride)
        import torchvision
        builder = getattr(torchvision.models, self.name)
        dilate = [False, output_stride == 8, True]
        network = builder(weights=None, replace_stride_with_dilation=dilate) if depth >= 50 \
            else _resnet_basic_dilated(builder, dilate)
        path = resolve_pretrained(self.name, pretrained)
        if path is not None:
            load_classifier_weights(network, path, self.name)
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
        self.layer1, self.layer2 = network.layer1, network.layer2
        self.layer3, self.layer4 = network.layer3, network.layer4
        expansion = 4 if depth >= 50 else 1
        self.low_channels = 64 * expansion
        self.aux_channels = 256 * expansion
        self.out_channels = 512 * expansion

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        low = self.layer1(self.stem(x))
        aux = self.layer3(self.layer2(low))
        return {'low': low, 'aux': aux, 'out': self.layer4(aux)}


def _resnet_basic_dilated(builder, dilate: Sequence[bool]) -> nn.Module:
    """ResNet-18 with dilation: torchvision's BasicBlock refuses dilation > 1, so build
    it undilated and convert its stride-2 stages afterwards (same weights, same names)."""
    network = builder(weights=None)
    dilation = 1
    for stage, dilate_stage in zip((network.layer2, network.layer3, network.layer4), dilate):
        if not dilate_stage:
            continue
        for block_index, block in enumerate(stage):
            if block_index == 0:
                # conv1 keeps the dilation of the stage before; 1×1 downsample loses stride.
                block.conv1.stride = (1, 1)
                _set_dilation(block.conv1, dilation)
                block.downsample[0].stride = (1, 1)
                dilation *= 2
                _set_dilation(block.conv2, dilation)
            else:
                _set_dilation(block.conv1, dilation)
                _set_dilation(block.conv2, dilation)
    return network


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Dilate a k×k convolution and keep its output size (symmetric 'same' padding)."""
    kernel = conv.kernel_size[0]
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation * (kernel - 1) // 2,) * 2


def dilate_sequential(stages: Sequence[nn.Module], output_stride: int) -> None:
    """Turn stride-2 convolutions past ``output_stride`` into stride 1 plus dilation.

    Walks the convolutions in order. The convolution that loses its stride keeps
    the dilation in force before it (its taps keep their spacing on the input);
    every k×k convolution after it is dilated by the accumulated factor.
    """
    stride = 1
    dilation = 1
    for stage in stages:
        for conv in (m for m in stage.modules() if isinstance(m, nn.Conv2d)):
            conv_stride = conv.stride[0]
            if conv_stride > 1 and stride * conv_stride > output_stride:
                conv.stride = (1, 1)
                if conv.kernel_size[0] > 1:
                    _set_dilation(conv, dilation)
                dilation *= conv_stride
                continue
            stride *= conv_stride
            if conv.kernel_size[0] > 1 and dilation > 1:
                _set_dilation(conv, dilation)


class MobileNetV3LargeBackbone(Backbone):
    """torchvision MobileNetV3-Large, dilated: features[:4], [4:13], [13:]."""

    low_channels, aux_channels, out_channels = 24, 112, 960

    def __init__(self, output_stride: int = 16, pretrained: PretrainedArg = False):
        super().__init__('mobilenet_v3_large', output_stride)
        import torchvision
        network = torchvision.models.mobilenet_v3_large(weights=None)
        path = resolve_pretrained(self.name, pretrained)
        if path is not None:
            load_classifier_weights(network, path, self.name)
        features = network.features
        # features[3] ends the 1/4 stage (24 ch); features[12] the 1/16 stage (112 ch).
        self.low = nn.Sequential(*features[:4])
        self.mid = nn.Sequential(*features[4:13])
        self.high = nn.Sequential(*features[13:])
        dilate_sequential([self.low, self.mid, self.high], output_stride)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        low = self.low(x)
        aux = self.mid(low)
        return {'low': low, 'aux': aux, 'out': self.high(aux)}


def create_backbone(name: str, *, output_stride: int = 16,
                    pretrained: PretrainedArg = False) -> Backbone:
    """Build a backbone by name (see ``BACKBONES``), dilated to ``output_stride`` (8 or 16).

    ``pretrained``: False, True (only efficientnet_lite0 has a known local
    source) or the path of a local state dict (for torchvision backbones: the
    torchvision ImageNet classifier's state dict).
    """
    check_backbone_name(name)
    check_output_stride(output_stride)
    if name == 'efficientnet_lite0':
        return EfficientNetLite0Backbone(output_stride, pretrained)
    if name == 'mobilenet_v3_large':
        return MobileNetV3LargeBackbone(output_stride, pretrained)
    return ResNetBackbone(int(name[len('resnet'):]), output_stride, pretrained)
