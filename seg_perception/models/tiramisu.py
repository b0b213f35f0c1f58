"""FC-DenseNet 56 / 67 / 103 (Jégou, Drozdzal, Vazquez, Romero & Bengio, "The One
Hundred Layers Tiramisu: Fully Convolutional DenseNets for Semantic
Segmentation", CVPRW 2017).

Settings from the paper (its Section 4 and Table 2):

* first layer: 3×3 convolution, 48 feature maps;
* dense block layer: BN, ReLU, 3×3 convolution (``growth_rate`` maps),
  dropout p = 0.2; each layer sees the concatenation of the block input and
  all earlier layers' outputs;
* transition down: BN, ReLU, 1×1 convolution (same number of maps), dropout
  0.2, 2×2 max-pool; five of them (total stride 32);
* transition up: 3×3 transposed convolution, stride 2, applied only to the
  NEW feature maps of the dense block below (not its input - that keeps the
  upsampling path from exploding), with as many filters as those maps; its
  output is concatenated with the skip connection of the same resolution;
* the last dense block's input and new maps go to a 1×1 convolution to the
  classes (softmax in the loss);
* FC-DenseNet56: 4 layers per block, growth 12; FC-DenseNet67: 5 layers per
  block, growth 16; FC-DenseNet103: blocks of 4, 5, 7, 10, 12 layers down, 15
  at the bottleneck, 12, 10, 7, 5, 4 up, growth 16.

The paper reports 1.5 M, 3.5 M and 9.4 M parameters. Built faithfully (for
11 classes) these networks count about 1.38 M, 3.46 M and 9.32 M; the paper
rounds 56 up, and nothing is padded to reach its figure.

The paper initialised with HeUniform; so do these (``kaiming_uniform_``).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.models import register_model
from seg_perception.models.base import SegmentationModel

TIRAMISU_CONFIGS = {
    # name: (layers per dense block: 5 down, bottleneck, 5 up; growth rate)
    'fcdensenet56': ((4,) * 11, 12),
    'fcdensenet67': ((5,) * 11, 16),
    'fcdensenet103': ((4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4), 16),
}


class DenseLayer(nn.Sequential):
    """BN, ReLU, 3×3 convolution to ``growth_rate`` maps, dropout."""

    def __init__(self, in_ch: int, growth_rate: int, dropout: float):
        super().__init__(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(in_ch, growth_rate, 3, padding=1),
                         nn.Dropout(dropout))


class DenseBlock(nn.Module):
    """``n_layers`` dense layers; returns (input + new maps, new maps only)."""

    def __init__(self, in_ch: int, n_layers: int, growth_rate: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_ch + i * growth_rate, growth_rate, dropout)
                                    for i in range(n_layers))
        self.new_channels = n_layers * growth_rate
        self.out_channels = in_ch + self.new_channels

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        new_maps: List[torch.Tensor] = []
        for layer in self.layers:
            new_maps.append(layer(x))
            x = torch.cat([x, new_maps[-1]], dim=1)
        return x, torch.cat(new_maps, dim=1)


class TransitionDown(nn.Sequential):
    """BN, ReLU, 1×1 convolution (same width), dropout, 2×2 max-pool."""

    def __init__(self, channels: int, dropout: float):
        super().__init__(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1), nn.Dropout(dropout),
                         nn.MaxPool2d(2, 2))


class TransitionUp(nn.Module):
    """3×3 transposed convolution, stride 2, to exactly twice the size."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1,
                                       output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FCDenseNet(SegmentationModel):
    """Fully convolutional DenseNet ("Tiramisu"); see the module doc."""

    def __init__(self, num_classes: int, *, block_layers: Sequence[int], growth_rate: int,
                 first_channels: int = 48, dropout: float = 0.2):
        super().__init__(num_classes)
        block_layers = tuple(int(n) for n in block_layers)
        if len(block_layers) % 2 != 1 or len(block_layers) < 3 or min(block_layers) < 1:
            raise InvalidValueError('block_layers must be an odd number (>= 3) of positive layer '
                                    'counts: down blocks, bottleneck, up blocks; got '
                                    f'{block_layers!r}')
        n_pools = len(block_layers) // 2
        self.size_multiple = 2 ** n_pools
        self.block_layers, self.growth_rate = block_layers, int(growth_rate)
        self.first_conv = nn.Conv2d(3, first_channels, 3, padding=1)

        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        channels = first_channels
        skip_channels = []
        for n_layers in block_layers[:n_pools]:
            block = DenseBlock(channels, n_layers, growth_rate, dropout)
            self.down_blocks.append(block)
            channels = block.out_channels
            skip_channels.append(channels)
            self.transitions_down.append(TransitionDown(channels, dropout))
        self.bottleneck = DenseBlock(channels, block_layers[n_pools], growth_rate, dropout)

        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        upsampled = self.bottleneck.new_channels
        for n_layers, skip in zip(block_layers[n_pools + 1:], reversed(skip_channels)):
            self.transitions_up.append(TransitionUp(upsampled))
            block = DenseBlock(upsampled + skip, n_layers, growth_rate, dropout)
            self.up_blocks.append(block)
            upsampled = block.new_channels
        self.classifier = nn.Conv2d(block.out_channels, num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(module.weight, nonlinearity='relu')
                nn.init.zeros_(module.bias)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x, _ = block(x)
            skips.append(x)
            x = down(x)
        _, new_maps = self.bottleneck(x)
        for up, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips)):
            x, new_maps = block(torch.cat([up(new_maps), skip], dim=1))
        # The last block passes its input and new maps (``x``) to the classifier.
        return self.classifier(x)


def _builder(name: str):
    block_layers, growth_rate = TIRAMISU_CONFIGS[name]

    def build(num_classes: int, **config) -> FCDenseNet:
        config.setdefault('block_layers', block_layers)
        config.setdefault('growth_rate', growth_rate)
        return FCDenseNet(num_classes, **config)

    build.__name__ = name
    build.__doc__ = f'{name}: dense blocks {block_layers}, growth rate {growth_rate}.'
    return register_model(name)(build)


fcdensenet56 = _builder('fcdensenet56')
fcdensenet67 = _builder('fcdensenet67')
fcdensenet103 = _builder('fcdensenet103')
