"""What every inference backend offers: one exported model, a uint8 RGB batch in, class ids out.

Every backend has the same small interface (``Backend``): ``run(images)`` takes a
C-contiguous uint8 N×H×W×3 RGB batch and returns ``{'labels': uint8 N×h×w}``
(plus ``'confidence'``, and the N×K×h×w ``'masks'`` and ``'probabilities'`` whose channels
ModelInfo.masks / .probabilities name, when the model has them); ``describe()`` says what runs
where and why it was chosen. The exported graph does all preprocessing, so a
backend only moves bytes. The backends themselves: onnxruntime_backend.py,
trt/backend.py, torch_backend.py; backends.py picks one.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.model_info import ModelInfo


def check_batch(images: np.ndarray) -> np.ndarray:
    """Return ``images`` if it is a uint8 N×H×W×3 batch, made C-contiguous; else ValueError."""
    if not isinstance(images, np.ndarray):
        raise InvalidValueError(f'images must be a numpy array, got {type(images).__name__}')
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise InvalidValueError(f'images must be a uint8 N×H×W×3 RGB batch, got {images.dtype} '
                                f'{images.shape}')
    if min(images.shape[:3]) < 1:
        raise InvalidValueError(f'images batch is empty: shape {images.shape}')
    return np.ascontiguousarray(images)


class Backend:
    """What every backend offers. Subclasses set the attributes and implement ``run``."""

    name = 'backend'
    device = 'cpu'
    precision = 'fp32'
    precision_reason = ''               # why this precision, when 'auto' chose it
    max_batch: Optional[int] = None     # most frames per run() call; None: any number

    def __init__(self, info: ModelInfo, model_path: str, reason: str = ''):
        self.info = info
        self.model_path = model_path
        self.reason = reason

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Segment a uint8 N×H×W×3 RGB batch.

        Returns 'labels' (uint8 N×h×w) and every other output the model has
        ('confidence', 'masks', 'probabilities': ModelInfo.outputs).
        The arrays may be buffers the backend reuses: valid until the next call
        with the same input shape; copy what you keep.
        """
        raise NotImplementedError

    def inputs(self) -> List[dict]:
        """Name, shape (None for dynamic) and dtype of each model input."""
        return [{'name': 'images', 'shape': [None, None, None, 3], 'dtype': 'uint8'}]

    def outputs(self) -> List[dict]:
        """Name, shape and dtype of each model output."""
        planes = ('masks', 'probabilities')       # N×K×h×w; the others are N×h×w
        return [{'name': name, 'shape': [None] * (4 if name in planes else 3), 'dtype': 'uint8'}
                for name in self.info.outputs]

    def describe(self) -> dict:
        """Name, device, precision, inputs/outputs, the model, why this backend and (for
        'auto') why this precision."""
        return {'name': self.name, 'device': self.device, 'precision': self.precision,
                'model': self.model_path, 'architecture': self.info.architecture,
                'network_input': list(self.info.input_size),
                'output_resolution': self.info.output_resolution,
                'inputs': self.inputs(), 'outputs': self.outputs(), 'reason': self.reason,
                'precision_reason': self.precision_reason}

    def close(self) -> None:
        """Release the session or engine."""
