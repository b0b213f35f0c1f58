"""An exponential moving average of the weights (``train.ema_decay``), through timm's
ModelEmaV3.

The average is what the run evaluates, what best.pt's metrics describe and what a
checkpoint deploys (checkpoints hold it as ``ema`` beside the raw ``model`` weights, and
models.checkpoint rebuilds from it when present). BatchNorm statistics are averaged too,
so the averaged network is complete on its own.
"""
from __future__ import annotations

from typing import Optional

import torch


def build_ema(model: torch.nn.Module, decay: Optional[float]):
    """timm's ModelEmaV3 of ``model``, or None when ``decay`` is None (off).

    With warmup the decay starts near 0 and rises towards ``decay`` (1 - k^-2/3 at step k),
    so an evaluation early in a run shows the averaged network, not the initial weights
    that a fixed decay of 0.999 would still hold for a thousand steps.
    """
    if decay is None:
        return None
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=float(decay), use_warmup=True)
