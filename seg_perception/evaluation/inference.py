"""Test-time inference of a torch model on one image: whole, sliding window, scales, flip.

All functions take the image as H×W×3 uint8 RGB (as read from disk) or as an
already normalised 1×3×H×W tensor, and return logits at the image's resolution, so
the labels can be compared with the full-resolution ground truth.

- ``whole``: the image is resized to ``scale × input_size`` (the network input size,
  what the deployed graph does), the logits are resized back (bilinear).
- ``slide``: the image is resized by ``scale`` only (so scale 1.0 is the native
  resolution), and windows of ``input_size`` cover it with a stride of
  ``(1 - overlap) × input_size``; where windows overlap their logits are averaged.
  An image smaller than a window is padded (with 0, the normalised mean) and cropped back.

With several scales and/or ``flip`` (horizontal), the logits of all passes are averaged.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from seg_perception.errors import InvalidValueError

MODES = ('whole', 'slide')


def to_model_input(image: np.ndarray, mean: Sequence[float], std: Sequence[float],
                   device='cpu') -> torch.Tensor:
    """H×W×3 uint8 RGB → 1×3×H×W float tensor normalised with mean/std (0..1 scale)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidValueError(f'expected an H×W×3 uint8 RGB image, got shape {image.shape} '
                                f'dtype {image.dtype}')
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    tensor = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    mean_t = torch.tensor([float(v) for v in mean], device=device).view(1, 3, 1, 1)
    std_t = torch.tensor([float(v) for v in std], device=device).view(1, 3, 1, 1)
    return (tensor - mean_t) / std_t


def _resize(tensor: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode='bilinear', align_corners=False)


def _run(model, batch: torch.Tensor) -> torch.Tensor:
    out = model(batch)
    if isinstance(out, dict):          # a model left in training mode with an aux head
        out = out['out']
    return out.float()


def window_starts(length: int, window: int, stride: int) -> List[int]:
    """Start offsets of windows of ``window`` covering ``length`` (last one flush right)."""
    if length <= window:
        return [0]
    count = int(math.ceil((length - window) / stride)) + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


@torch.no_grad()
def sliding_window_logits(model, image: torch.Tensor, window: Tuple[int, int],
                          overlap: float = 1 / 3) -> torch.Tensor:
    """Logits of a normalised 1×3×H×W image from overlapping windows, averaged."""
    if not 0.0 <= overlap < 1.0:
        raise InvalidValueError(f'overlap must be in [0, 1), got {overlap}')
    win_h, win_w = int(window[0]), int(window[1])
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, win_h - height), max(0, win_w - width)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
    full_h, full_w = image.shape[-2:]
    stride_h = max(1, int(round(win_h * (1.0 - overlap))))
    stride_w = max(1, int(round(win_w * (1.0 - overlap))))
    total = None
    counts = torch.zeros((1, 1, full_h, full_w), device=image.device)
    for top in window_starts(full_h, win_h, stride_h):
        for left in window_starts(full_w, win_w, stride_w):
            crop = image[..., top:top + win_h, left:left + win_w]
            logits = _run(model, crop)
            if total is None:
                total = torch.zeros((1, logits.shape[1], full_h, full_w), device=image.device)
            total[..., top:top + win_h, left:left + win_w] += logits
            counts[..., top:top + win_h, left:left + win_w] += 1
    return (total / counts)[..., :height, :width]


@torch.no_grad()
def predict_logits(model, image: torch.Tensor, input_size: Tuple[int, int], *,
                   mode: str = 'whole', scales: Iterable[float] = (1.0,), flip: bool = False,
                   overlap: float = 1 / 3) -> torch.Tensor:
    """Averaged 1×C×H×W logits of a normalised 1×3×H×W image at its own resolution."""
    if mode not in MODES:
        raise InvalidValueError(f'mode must be one of {MODES}, got {mode!r}')
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise InvalidValueError(f'scales must be positive numbers, got {scales}')
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise InvalidValueError(f'expected a 1×3×H×W image tensor, got {tuple(image.shape)}')
    height, width = image.shape[-2:]
    in_h, in_w = int(input_size[0]), int(input_size[1])
    total, passes = None, 0
    for scale in scales:
        if mode == 'whole':
            size = (max(1, round(in_h * scale)), max(1, round(in_w * scale)))
        else:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = _resize(image, size)
        for flipped in ((False, True) if flip else (False,)):
            batch = torch.flip(scaled, dims=[3]) if flipped else scaled
            if mode == 'whole':
                logits = _run(model, batch)
            else:
                logits = sliding_window_logits(model, batch, (in_h, in_w), overlap)
            if flipped:
                logits = torch.flip(logits, dims=[3])
            logits = _resize(logits, (height, width))
            total = logits if total is None else total + logits
            passes += 1
    return total / passes


def predict_labels(model, image: np.ndarray, input_size: Tuple[int, int], mean, std, *,
                   device='cpu', **options) -> np.ndarray:
    """H×W uint8 class ids of an H×W×3 uint8 RGB image (see ``predict_logits``)."""
    tensor = to_model_input(image, mean, std, device)
    logits = predict_logits(model, tensor, input_size, **options)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
