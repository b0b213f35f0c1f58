"""The network wrapped for deployment: camera bytes in, class ids (and confidence) out.

This module is the graph ``seg-perception export`` traces into ONNX, and the PyTorch backend
runs the same module, so the two cannot drift apart. The preprocessing (bilinear resize to the
network size, normalisation) and the postprocessing (optional bilinear upsampling of the
logits, argmax, confidence) live here, not in the runtimes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.choices import OUTPUT_RESOLUTIONS, check_choice
from seg_perception.model_info import ModelInfo


class DeployableSegmenter(nn.Module):
    """Camera bytes in, class ids (and confidence, class probabilities) out: the graph that
    gets exported. ``info.probabilities`` names the classes whose softmax probability the
    graph also outputs, as 'probabilities' (uint8 N×P×H×W, p × 255)."""

    def __init__(self, model: nn.Module, info: ModelInfo, *, with_confidence: bool = False,
                 output_resolution: str = 'camera'):
        super().__init__()
        check_choice('output_resolution', output_resolution, OUTPUT_RESOLUTIONS)
        self.model = model
        self.probability_ids = [info.class_names.index(name) for name in info.probabilities]
        self.input_size = tuple(int(v) for v in info.input_size)
        self.with_confidence = bool(with_confidence)
        self.output_resolution = output_resolution
        mean = torch.tensor(info.mean, dtype=torch.float32)
        std = torch.tensor(info.std, dtype=torch.float32)
        # (x / 255 - mean) / std folded into one multiply and one add. When every channel
        # has the same mean and std (0.5 for EfficientNet-Lite), the constants are scalars:
        # ONNX Runtime runs its int8 convolutions in NHWC and moves the normalisation there,
        # where a per-channel constant broadcasts over an innermost axis of 3, slowly
        # (benchmarks/DESIGN.md; the same labels either way).
        uniform = bool((mean == mean[0]).all() and (std == std[0]).all())
        shape = () if uniform else (1, 3, 1, 1)
        scale, shift = 1.0 / (255.0 * std), -mean / std
        self.register_buffer('pixel_scale', (scale[:1] if uniform else scale).reshape(shape),
                             persistent=False)
        self.register_buffer('pixel_shift', (shift[:1] if uniform else shift).reshape(shape),
                             persistent=False)

    def forward(self, images: torch.Tensor):
        camera_size = (images.shape[1], images.shape[2])
        # Transpose while still one byte per value, then convert.
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        x = F.interpolate(x, size=self.input_size, mode='bilinear', align_corners=False)
        x = x * self.pixel_scale + self.pixel_shift
        logits = self.model(x)
        if self.output_resolution == 'camera':
            logits = F.interpolate(logits, size=camera_size, mode='bilinear',
                                   align_corners=False)
        labels = logits.argmax(dim=1).to(torch.uint8)
        if not self.with_confidence and not self.probability_ids:
            return labels
        outputs = [labels]
        # Softmax terms relative to the top class: exp(logits - max) / sum(...), formed only
        # for the channels asked for.
        top = logits.amax(dim=1, keepdim=True)
        total = torch.exp(logits - top).sum(dim=1, keepdim=True)
        if self.with_confidence:                   # max softmax = 1 / sum(exp(logits - max))
            max_probability = 1.0 / total[:, 0]
            outputs.append(torch.round(max_probability * 255.0).to(torch.uint8))
        if self.probability_ids:
            chosen = torch.exp(logits[:, self.probability_ids] - top) / total
            outputs.append(torch.round(chosen * 255.0).to(torch.uint8))
        return tuple(outputs)
