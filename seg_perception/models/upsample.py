"""Learnable 2× (or s×) upsampling layers for decoders that offer a choice.

``make_upsample(mode, in_ch, out_ch, scale)`` builds one of:

``'transpose'``
    Transposed convolution with kernel size == stride == ``scale``. The
    kernel windows do not overlap, so every output pixel receives exactly one
    tap from exactly one input pixel: no checkerboard pattern, whatever the
    weights. It starts as nearest-neighbour upsampling of a 1×1 convolution
    (the same random 1×1 weights copied to every tap), so a constant map stays
    constant until training makes the taps differ.
``'bilinear'``
    Bilinear interpolation (``align_corners=False``) followed by a 3×3
    convolution (padding 1) that mixes channels and smooths.
``'unpool'``
    A 1×1 convolution to ``out_ch`` at the low resolution, then max-unpooling
    with the argmax indices of the matching max-pool (``IndexedMaxPool2d``):
    each value returns to the position its window's maximum came from, the
    rest of the window is zero (SegNet-style). ``out_ch`` must be the channel
    count of the pooled map whose indices are used.

All three share one call: ``up(x, indices=None, output_size=None)``;
``indices`` is needed (and only used) by ``'unpool'``.

ONNX: all three export with the torch.export-based exporter
(``torch.onnx.export(..., dynamo=True)``, the default since torch 2.9) with
dynamic height and width. Max-unpooling is not emitted as the ONNX
``MaxUnpool`` operator but decomposed into a ``ScatterND`` scatter of the
values at the stored indices, which ONNX Runtime (and TensorRT) run. The
legacy TorchScript tracer (``dynamo=False``, ``torch.jit.trace``) cannot trace
``max_unpool2d`` at all in this torch version; ``UnpoolUpsample`` raises a
clear error in that case instead of the tracer's obscure one.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.errors import InvalidValueError

UPSAMPLE_MODES = ('transpose', 'bilinear', 'unpool')


class IndexedMaxPool2d(nn.Module):
    """Max-pool (kernel == stride == ``scale``) that also returns the argmax indices.

    ``forward(x) -> (pooled, indices)``; the indices feed the ``'unpool'``
    upsampler of the matching decoder level.
    """

    def __init__(self, scale: int = 2):
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return F.max_pool2d(x, self.scale, self.scale, return_indices=True)


class Upsample(nn.Module):
    """Base of the upsamplers: ``forward(x, indices=None, output_size=None)``."""

    needs_indices = False

    def __init__(self, in_ch: int, out_ch: int, scale: int):
        super().__init__()
        self.in_ch = _check_channels('in_ch', in_ch)
        self.out_ch = _check_channels('out_ch', out_ch)
        self.scale = _check_scale(scale)


class TransposeUpsample(Upsample):
    """Transposed convolution, kernel == stride == scale (no overlap, no checkerboard)."""

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2):
        super().__init__(in_ch, out_ch, scale)
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=scale, stride=scale)
        self.reset_nearest()

    @torch.no_grad()
    def reset_nearest(self) -> None:
        """Initialise as nearest-neighbour upsampling of a random 1×1 convolution."""
        one_tap = torch.empty(self.in_ch, self.out_ch, 1, 1, device=self.conv.weight.device)
        # Same scale as a 1×1 Conv2d(in_ch, out_ch) with He init (fan_in = in_ch).
        nn.init.kaiming_uniform_(one_tap.transpose(0, 1), nonlinearity='relu')
        self.conv.weight.copy_(one_tap.expand_as(self.conv.weight))
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, indices: Optional[torch.Tensor] = None,
                output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        return self.conv(x)


class BilinearUpsample(Upsample):
    """Bilinear interpolation by ``scale``, then a 3×3 convolution in_ch -> out_ch."""

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2):
        super().__init__(in_ch, out_ch, scale)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, indices: Optional[torch.Tensor] = None,
                output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=float(self.scale), mode='bilinear',
                          align_corners=False)
        return self.conv(x)


class UnpoolUpsample(Upsample):
    """1×1 convolution to ``out_ch``, then max-unpooling at the stored argmax indices."""

    needs_indices = True

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2):
        super().__init__(in_ch, out_ch, scale)
        self.project = nn.Conv2d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch \
            else nn.Identity()

    def forward(self, x: torch.Tensor, indices: Optional[torch.Tensor] = None,
                output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if indices is None:
            raise InvalidValueError("upsample='unpool' needs the indices of the matching max-pool "
                                    '(IndexedMaxPool2d); none were given')
        if torch.jit.is_tracing():
            raise RuntimeError(
                "upsample='unpool' (max_unpool2d) cannot be traced by the TorchScript tracer "
                '(torch.jit.trace, torch.onnx.export(..., dynamo=False)); export with the '
                'torch.export-based exporter, torch.onnx.export(..., dynamo=True), which '
                'writes it as a ScatterND, or choose upsample=\'transpose\' or \'bilinear\'')
        x = self.project(x)
        if not torch.compiler.is_compiling() and x.shape != indices.shape:
            raise InvalidValueError(f"upsample='unpool': values {tuple(x.shape)} and pooling "
                                    f'indices {tuple(indices.shape)} differ in shape')
        if output_size is None:
            output_size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        # The aten op directly: F.max_unpool2d refuses an output larger than scale × input
        # plus one stride, which valid-padding U-Net needs for centre-cropped indices.
        # (Contiguous: the backward pass views the indices, which may be a crop.)
        return torch.ops.aten.max_unpool2d(x.contiguous(), indices.contiguous(),
                                           list(output_size)[-2:])


_BUILDERS = {'transpose': TransposeUpsample, 'bilinear': BilinearUpsample,
             'unpool': UnpoolUpsample}


def make_upsample(mode: str, in_ch: int, out_ch: int, scale: int = 2) -> Upsample:
    """Build an upsampler: ``mode`` is one of ``UPSAMPLE_MODES`` (see the module doc)."""
    check_upsample_mode(mode)
    return _BUILDERS[mode](in_ch, out_ch, scale)


def check_upsample_mode(mode: str, allowed: Sequence[str] = UPSAMPLE_MODES) -> str:
    """Return ``mode`` if it is in ``allowed``, else raise a ValueError naming the choices."""
    if mode not in allowed:
        raise InvalidValueError(f'unknown upsample mode {mode!r}; choose one of '
                                f'{", ".join(allowed)}')
    return mode


def _check_channels(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValueError(f'{name} must be a positive integer, got {value!r}')
    return value


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise InvalidValueError(f'upsampling/pooling scale must be an integer >= 2, got {scale!r}')
    return scale
