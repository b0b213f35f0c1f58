"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015) and the residual U-Net of
Drozdzal et al. ("The Importance of Skip Connections in Biomedical Image
Segmentation", DLMIA 2016).

Layout: ``depth`` max-pool levels; level k has ``base_width * 2**k`` channels
(the paper: base 64, depth 4, 1024 channels at the bottom). Each level is a
block of two 3×3 convolutions (ReLU; BatchNorm unless ``batch_norm=False`` -
the 2015 paper had none). The decoder upsamples (``upsample``: 'transpose'
= the paper's 2×2 up-convolution, 'bilinear' or 'unpool', see
``models.upsample``) to the level's width and merges the encoder feature map
of the same level (long skip connection), then applies a block.

``padding='same'`` (default): 3×3 convolutions are zero-padded, every level
keeps its size, inputs are padded to a multiple of ``2**depth`` by
``SegmentationModel``.

``padding='valid'``: the paper's unpadded convolutions; each block loses 4
pixels, so the output is smaller than the input (572 -> 388 in the paper).
Skip connections are centre-cropped to the decoder size. To still return
logits for every input pixel, the input is first mirrored outwards (the
paper's overlap-tile strategy): by ``6 * 2**depth - 4`` pixels on every side
(92 for depth 4), plus at the bottom/right what makes the output tile a size
the network can produce; the output is then cropped to the input size, so
output pixel (i, j) lies at input pixel (i, j). Where the input is narrower
than the margin, the mirror image is extended by repeating the edge. With
``'unpool'`` the pooling indices are centre-cropped like the skips.

'resunet' (Drozdzal et al.): the blocks are residual (short skips) - two
BN-ReLU-3×3 convolutions added to the block input (a 1×1 projection where the
width changes, a centre crop with valid padding) - and by default the long
skips are summed (``merge='sum'``) rather than concatenated, as in that
paper; ``merge='concat'`` is available for both networks.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError
from seg_perception.models import register_model
from seg_perception.models.base import SegmentationModel
from seg_perception.models.upsample import IndexedMaxPool2d, check_upsample_mode, make_upsample

PADDINGS = ('same', 'valid')
MERGES = ('concat', 'sum')


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre ``size`` (height, width) of ``x``'s last two dimensions."""
    top = (x.shape[-2] - size[0]) // 2
    left = (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def mirror_pad(x: torch.Tensor, left, right, top, bottom) -> torch.Tensor:
    """Mirror (reflect) padding of any width: reflection as far as the image allows
    (less than its size), the rest by repeating the edge."""
    height, width = x.shape[-2], x.shape[-1]
    reflect = [_smaller(left, width - 1), _smaller(right, width - 1),
               _smaller(top, height - 1), _smaller(bottom, height - 1)]
    x = F.pad(x, reflect, mode='reflect')
    rest = [left - reflect[0], right - reflect[1], top - reflect[2], bottom - reflect[3]]
    return F.pad(x, rest, mode='replicate')


def _smaller(a, b):
    """min(a, b) that stays a graph operation for dynamic sizes: torch.sym_min under
    torch.export (and for plain ints); a tensor minimum under the TorchScript tracer,
    where sizes are 0-d tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return torch.sym_min(a, b)


class ConvBlock(nn.Module):
    """Two 3×3 convolutions, each (BatchNorm) + ReLU; ``padding`` 1 or 0 (valid)."""

    def __init__(self, in_ch: int, out_ch: int, padding: int, batch_norm: bool):
        super().__init__()
        layers: List[nn.Module] = []
        for index in range(2):
            layers.append(nn.Conv2d(in_ch if index == 0 else out_ch, out_ch, 3,
                                    padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(ReLU(BN(conv(ReLU(BN(x)))))) (short skip)."""

    def __init__(self, in_ch: int, out_ch: int, padding: int, batch_norm: bool):
        super().__init__()

        def norm(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if batch_norm else nn.Identity()

        # The first block sees the normalised image: no BN-ReLU before its first conv.
        pre = [norm(in_ch), nn.ReLU()] if in_ch != 3 else []
        self.body = nn.Sequential(
            *pre, nn.Conv2d(in_ch, out_ch, 3, padding=padding),
            norm(out_ch), nn.ReLU(), nn.Conv2d(out_ch, out_ch, 3, padding=padding))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.valid = padding == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        skip = self.shortcut(x)
        if self.valid:
            skip = center_crop(skip, out.shape[-2:])
        return out + skip


class UNet(SegmentationModel):
    """U-Net / residual U-Net (see the module doc for every option)."""

    def __init__(self, num_classes: int, *, base_width: int = 64, depth: int = 4,
                 padding: str = 'same', upsample: str = 'transpose', batch_norm: bool = True,
                 residual: bool = False, merge: Optional[str] = None, dropout: float = 0.0):
        super().__init__(num_classes)
        if isinstance(base_width, bool) or not isinstance(base_width, int) or base_width < 1:
            raise InvalidValueError(f'base_width must be a positive integer, got {base_width!r}')
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 6:
            raise InvalidValueError(f'depth (number of poolings) must be an integer 1..6, '
                                    f'got {depth!r}')
        if padding not in PADDINGS:
            raise InvalidValueError(f'unknown padding {padding!r}; choose one of '
                                    f'{", ".join(PADDINGS)}')
        merge = merge or ('sum' if residual else 'concat')
        if merge not in MERGES:
            raise InvalidValueError(f'unknown merge {merge!r}; choose one of {", ".join(MERGES)}')
        check_upsample_mode(upsample)
        self.depth, self.padding, self.merge = depth, padding, merge
        self.upsample_mode = upsample
        # Valid padding pads the input itself (overlap-tile) for any size.
        self.size_multiple = 2 ** depth if padding == 'same' else 1
        conv_pad = 1 if padding == 'same' else 0
        block = ResidualBlock if residual else ConvBlock
        widths = [base_width * 2 ** level for level in range(depth + 1)]

        self.encoders = nn.ModuleList()
        in_ch = 3
        for width in widths:
            self.encoders.append(block(in_ch, width, conv_pad, batch_norm))
            in_ch = width
        self.pool = IndexedMaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(make_upsample(upsample, widths[level + 1], widths[level], 2))
            merged = 2 * widths[level] if merge == 'concat' else widths[level]
            self.decoders.append(block(merged, widths[level], conv_pad, batch_norm))
        # Pre-activation blocks end without a nonlinearity: normalise before scoring.
        self.final_norm = nn.Sequential(nn.BatchNorm2d(widths[0]) if batch_norm
                                        else nn.Identity(), nn.ReLU()) if residual \
            else nn.Identity()
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def valid_margins(self, height, width):
        """(top/left margin, bottom pad, right pad, output tile height, width) for valid
        padding: the mirror padding that makes the output cover ``height × width``."""
        tiles = 2 ** self.depth
        margin = 6 * tiles - 4
        # Output tile sizes the network can produce: tiles * (b - 4) + 4, b >= 1 the size
        # at the bottom level; take the smallest one not below the input size.
        out_h = tiles * ((height + 5 * tiles - 5) // tiles - 4) + 4
        out_w = tiles * ((width + 5 * tiles - 5) // tiles - 4) + 4
        return margin, margin + out_h - height, margin + out_w - width, out_h, out_w

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        if self.padding == 'valid':
            margin, bottom, right, _, _ = self.valid_margins(height, width)
            x = mirror_pad(x, margin, right, margin, bottom)
        skips, indices = [], []
        for encoder in self.encoders[:-1]:
            x = encoder(x)
            skips.append(x)
            x, index = self.pool(x)
            indices.append(index)
        x = self.dropout(self.encoders[-1](x))
        for up, decoder, skip, index in zip(self.ups, self.decoders, reversed(skips),
                                            reversed(indices)):
            x = self._upsample(up, x, skip, index)
            skip = center_crop(skip, x.shape[-2:]) if self.padding == 'valid' else skip
            x = torch.cat([skip, x], dim=1) if self.merge == 'concat' else x + skip
            x = decoder(x)
        logits = self.classifier(self.final_norm(x))
        if self.padding == 'valid':
            logits = logits[..., :height, :width]
        return logits

    def _upsample(self, up: nn.Module, x: torch.Tensor, skip: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
        if not up.needs_indices:
            return up(x)
        if self.padding == 'same':
            return up(x, index, skip.shape[-2:])
        # The indices address the uncropped encoder map: unpool the central cells into a
        # map of that size, then keep the centre that matches the 2× upsampled input.
        out = up(x, center_crop(index, x.shape[-2:]), skip.shape[-2:])
        return center_crop(out, (2 * x.shape[-2], 2 * x.shape[-1]))


@register_model('unet')
def unet(num_classes: int, **config) -> UNet:
    """U-Net (Ronneberger et al. 2015): base_width, depth, padding, upsample, batch_norm."""
    return UNet(num_classes, **config)


@register_model('resunet')
def resunet(num_classes: int, **config) -> UNet:
    """Residual U-Net (Drozdzal et al. 2016): residual blocks, summed long skips."""
    return UNet(num_classes, residual=True, **config)
