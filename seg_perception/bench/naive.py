"""The pipeline a user would otherwise write, as the benchmark's point of comparison.

OpenCV resize to the network size, numpy normalisation, PyTorch eager forward,
bilinear upsampling of the logits to camera size, argmax: the textbook recipe.
Timed per stage with the same names as the real pipeline ('convert', 'infer',
'postprocess', 'total'). Development only: imports torch (inside functions, so
importing this module stays cheap).
"""
from __future__ import annotations

import time
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from seg_perception.model_info import IMAGENET_MEAN, IMAGENET_STD


class NaivePipeline:
    """model: a torch module returning N×C×h×w logits (or a dict with 'out')."""

    def __init__(self, model, input_size: Tuple[int, int], mean: Sequence[float],
                 std: Sequence[float], threads: int = 0, name: str = 'naive'):
        import torch
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.model = model.eval()
        self.input_size = tuple(int(v) for v in input_size)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.name = name

    def process(self, frames: List[np.ndarray]) -> Tuple[List[np.ndarray], Dict[str, float]]:
        """RGB uint8 frames (same size) -> class ids at camera size, stage times in ms."""
        torch = self.torch
        import torch.nn.functional as F
        timings = {}
        start = time.perf_counter()
        height, width = self.input_size
        batch = []
        for frame in frames:
            resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            batch.append(((resized.astype(np.float32) / 255.0 - self.mean) / self.std)
                         .transpose(2, 0, 1))
        tensor = torch.from_numpy(np.ascontiguousarray(np.stack(batch)))
        timings['convert'] = _ms(start)

        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.model(tensor)
        if isinstance(logits, dict):
            logits = logits['out']
        timings['infer'] = _ms(t0)

        t0 = time.perf_counter()
        with torch.no_grad():
            logits = F.interpolate(logits, size=frames[0].shape[:2], mode='bilinear',
                                   align_corners=False)
            labels = logits.argmax(dim=1).to(torch.uint8).numpy()
        timings['postprocess'] = _ms(t0)
        timings['total'] = _ms(start)
        return list(labels), timings


def naive_from_checkpoint(checkpoint: str, threads: int = 0) -> NaivePipeline:
    """The naive pipeline on a seg_perception checkpoint (same model as the ONNX file)."""
    from seg_perception.models.checkpoint import build_model_from_checkpoint
    model, info = build_model_from_checkpoint(checkpoint)
    return NaivePipeline(model, info.input_size, info.mean, info.std, threads,
                         name=f'naive {info.architecture}')


def naive_torchvision(num_classes: int, input_size: Tuple[int, int],
                      threads: int = 0) -> NaivePipeline:
    """torchvision's deeplabv3_mobilenet_v3_large (random weights) in the naive pipeline."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=num_classes, aux_loss=False)
    return NaivePipeline(model, input_size, IMAGENET_MEAN, IMAGENET_STD, threads,
                         name='naive torchvision deeplabv3_mobilenet_v3_large')


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
