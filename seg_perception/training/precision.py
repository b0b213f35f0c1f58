"""Training precision: which autocast dtype (and whether a GradScaler) ``train.amp`` means
on this device."""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import torch

from seg_perception.errors import InvalidValueError

LOGGER = logging.getLogger('seg_perception.training')


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 / AMX)."""
    probe = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolve_amp(mode: str, device: torch.device) -> Tuple[Optional[torch.dtype], bool, str]:
    """(autocast dtype or None, use a GradScaler, description) for ``train.amp``.

    auto: fp16 + GradScaler on a GPU, bf16 on a CPU that supports it, else fp32.
    fp16 on a CPU falls back to bf16 (or fp32): CPU fp16 autocast is slow and has no
    GradScaler; the fallback is logged.
    """
    if mode == 'off':
        return None, False, 'fp32'
    if device.type == 'cuda':
        if mode == 'bf16':
            if not torch.cuda.is_bf16_supported():
                raise InvalidValueError('train.amp is bf16 but this GPU has no bf16 support; '
                                        'use fp16 or auto')
            return torch.bfloat16, False, 'bf16 autocast'
        return torch.float16, True, 'fp16 autocast + GradScaler'
    bf16 = cpu_supports_bf16()
    if mode in ('auto', 'fp16', 'bf16') and bf16:
        if mode == 'fp16':
            LOGGER.warning('train.amp=fp16 needs a CUDA GPU; using bf16 autocast on this CPU')
        return torch.bfloat16, False, 'bf16 autocast (CPU)'
    if mode in ('fp16', 'bf16'):
        LOGGER.warning('train.amp=%s: this CPU has no native bf16/fp16 support; '
                       'training in fp32', mode)
    return None, False, 'fp32'
