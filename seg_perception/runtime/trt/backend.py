"""The TensorRT backend: the hook into seg_perception.runtime.trt.engine.

The engine is built from the exported ONNX file and cached by trt/engine.py, imported
only when this backend is chosen: TensorRT and cuda-python, no torch.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, Optional, Tuple

import numpy as np

from seg_perception.model_info import ModelInfo
from seg_perception.runtime.backend import Backend, check_batch


class TensorRTBackend(Backend):
    """A TensorRT engine, built from the ONNX file and cached by trt/engine.py.

    ``seg_perception.runtime.trt.engine.load_engine_runner`` (imported here, lazily)
    builds or loads the engine and returns its ``EngineRunner``.
    """

    name = 'tensorrt'
    device = 'cuda:0'

    def __init__(self, model_path: str, info: ModelInfo, precision: str = 'fp32',
                 engine_cache_dir: Optional[str] = None, reason: str = ''):
        super().__init__(info, model_path, reason)
        from seg_perception.runtime.trt import engine as trt_runtime
        self._runner = trt_runtime.load_engine_runner(
            model_path, precision=precision, engine_cache_dir=engine_cache_dir, info=info)
        self.precision = self._runner.describe().get('precision', precision)
        # Batches beyond the engine's shape profiles would fail: the pipeline splits them.
        self.max_batch = max(int(profile[2][0]) for profile in self._runner.profiles)

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        return self._runner.run(check_batch(images))

    def describe(self) -> dict:
        description = super().describe()
        description.update(self._runner.describe())
        return description

    def close(self) -> None:
        self._runner.close()


def tensorrt_status() -> Tuple[bool, str]:
    """(usable, why): whether TensorRT and a GPU are usable for the TensorRT backend."""
    if importlib.util.find_spec('tensorrt') is None:
        return False, 'the tensorrt Python package is not installed'
    from seg_perception.runtime.trt import engine as trt_runtime
    try:
        return trt_runtime.tensorrt_available()
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises anything
        return False, f'TensorRT check failed: {exc}'
