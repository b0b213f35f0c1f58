"""The TensorRT backend: the hook into seg_perception.runtime.tensorrt.

The engine is built from the exported ONNX file and cached by runtime/tensorrt.py,
imported only when this backend is chosen: TensorRT and cuda-python, no torch.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, Optional, Tuple

import numpy as np

from ..model_info import ModelInfo
from .backends import Backend, check_batch


class TensorRTBackend(Backend):
    """A TensorRT engine, built from the ONNX file and cached by runtime/tensorrt.py.

    The hook into ``seg_perception.runtime.tensorrt`` (imported here, lazily):
    ``load_engine_runner(onnx_path, *, precision, engine_cache_dir, info)``
    returns an object with ``run(images uint8 N×H×W×3) -> dict`` (same contract
    as ``Backend.run``) and optionally ``describe() -> dict`` and ``close()``.
    """

    name = 'tensorrt'
    device = 'cuda:0'

    def __init__(self, model_path: str, info: ModelInfo, precision: str = 'fp32',
                 engine_cache_dir: Optional[str] = None, reason: str = ''):
        super().__init__(info, model_path, reason)
        from . import tensorrt as trt_runtime
        self._runner = trt_runtime.load_engine_runner(
            model_path, precision=precision, engine_cache_dir=engine_cache_dir, info=info)
        described = self._runner.describe() if hasattr(self._runner, 'describe') else {}
        self.precision = described.get('precision', precision)
        # Batches beyond the engine's shape profiles would fail: the pipeline splits them.
        profiles = getattr(self._runner, 'profiles', None)
        if profiles:
            self.max_batch = max(int(profile[2][0]) for profile in profiles)

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        return self._runner.run(check_batch(images))

    def describe(self) -> dict:
        description = super().describe()
        if hasattr(self._runner, 'describe'):
            description.update(self._runner.describe())
        return description

    def close(self) -> None:
        if hasattr(self._runner, 'close'):
            self._runner.close()


def tensorrt_status() -> Tuple[bool, str]:
    """(usable, why): whether TensorRT and a GPU are usable for the TensorRT backend."""
    if importlib.util.find_spec('tensorrt') is None:
        return False, 'the tensorrt Python package is not installed'
    try:
        from . import tensorrt as trt_runtime
    except ImportError as exc:
        return False, f'seg_perception.runtime.tensorrt cannot be imported ({exc})'
    check = getattr(trt_runtime, 'tensorrt_available', None)
    if check is None or not hasattr(trt_runtime, 'load_engine_runner'):
        return False, 'seg_perception.runtime.tensorrt lacks tensorrt_available/load_engine_runner'
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises anything
        return False, f'TensorRT check failed: {exc}'
