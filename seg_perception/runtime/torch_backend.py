"""The PyTorch backend: a training checkpoint run through the graph that export traces.

For development: compare a checkpoint with its exported file, or run a model
before exporting it. It wraps the network in ``models.deployable.DeployableSegmenter``, so
the preprocessing (bilinear resize to the network size, normalisation) and the
postprocessing (optional bilinear upsampling of the logits, argmax, confidence)
are the very same torch code that becomes the ONNX graph. Imports torch; the
vehicle uses the ONNX Runtime or TensorRT backends instead.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.runtime.backend import Backend, check_batch


class PyTorchBackend(Backend):
    """A checkpoint (seg_perception.models.checkpoint) in eval mode on the CPU or a GPU."""

    name = 'pytorch'

    def __init__(self, checkpoint_path: str, *, device: Optional[str] = None,
                 precision: str = 'fp32', threads: Optional[int] = None,
                 output_resolution: Optional[str] = None,
                 with_confidence: Optional[bool] = None, reason: str = ''):
        """``output_resolution`` / ``with_confidence`` default to what the checkpoint's
        ModelInfo says (camera resolution, labels only, unless it was exported)."""
        import torch

        from seg_perception.models.checkpoint import build_model_from_checkpoint
        from seg_perception.models.deployable import DeployableSegmenter

        model, info = build_model_from_checkpoint(checkpoint_path)
        if output_resolution is None:
            output_resolution = info.output_resolution
        if with_confidence is None:
            with_confidence = 'confidence' in info.outputs
        outputs = ['labels', 'confidence'] if with_confidence else ['labels']
        info = dataclasses.replace(info, outputs=outputs, output_resolution=output_resolution)
        super().__init__(info, checkpoint_path, reason)
        self.device = device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
        if precision == 'int8' or (precision == 'fp16' and not self.device.startswith('cuda')):
            raise InvalidValueError(f'the pytorch backend runs fp32 (fp16 on a GPU), not '
                                    f'{precision} on {self.device}')
        self.precision = precision
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.graph = DeployableSegmenter(model, info, with_confidence=with_confidence,
                                         output_resolution=output_resolution)
        self.graph.to(self.device).eval()

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        torch = self._torch
        batch = torch.from_numpy(check_batch(images)).to(self.device)
        with torch.inference_mode(), torch.autocast(
                'cuda', dtype=torch.float16, enabled=self.precision == 'fp16'):
            result = self.graph(batch)
        if not isinstance(result, tuple):
            result = (result,)
        return {name: tensor.cpu().numpy() for name, tensor in zip(self.info.outputs, result)}
