"""Run a deserialised TensorRT engine on uint8 camera batches (TensorRT 10 tensor API).

Device memory and the stream come from cuda-python's runtime bindings
(``cuda.bindings.runtime``, or ``cuda.cudart`` in cuda-python < 12.6). Buffers
grow to the largest batch seen and are reused, so a steady stream of frames
allocates nothing. The engine may hold several optimisation profiles (one per
camera resolution / batch range): each batch runs in the first profile whose
range holds its shape. Nothing here is imported unless the TensorRT backend is used.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.runtime.trt.cache import Profile, format_profile, profile_for

LOG = logging.getLogger(__name__)


def import_cudart():
    """cuda-python's runtime module; ImportError with the install hint if missing."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise ImportError('cuda-python is needed to run TensorRT engines: '
                              'pip install "seg_perception[tensorrt]"') from None
    return cudart


def cuda_call(cudart, result, what: str):
    """Unpack a cuda-python ``(error, value...)`` tuple, raising RuntimeError on an error."""
    error = result[0]
    if int(error) != int(cudart.cudaError_t.cudaSuccess):
        try:
            text = cudart.cudaGetErrorString(error)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # noqa: BLE001 - the message is best effort
            text = str(error)
        raise RuntimeError(f'CUDA error in {what}: {text}')
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


class DeviceBuffer:
    """A cudaMalloc'd buffer that grows when a larger tensor needs it."""

    def __init__(self, cudart):
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(cuda_call(self.cudart, self.cudart.cudaMalloc(nbytes), 'cudaMalloc'))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            cuda_call(self.cudart, self.cudart.cudaFree(self.ptr), 'cudaFree')
        self.ptr, self.nbytes = 0, 0


class EngineRunner:
    """``run(images uint8 N×H×W×3) -> {'labels': ..., ['confidence': ...]}`` on an engine."""

    def __init__(self, engine, trt, cudart=None, *, engine_path: str = '',
                 description: Optional[Dict[str, Any]] = None, keep_alive: Any = None):
        self.trt = trt
        self._keep_alive = keep_alive          # e.g. the Runtime that deserialised the engine
        self.cudart = cudart or import_cudart()
        self.engine = engine
        self.engine_path = engine_path
        self._description = dict(description or {})
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f'TensorRT cannot create an execution context for {engine_path} '
                               '(out of GPU memory?)')
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise InvalidValueError(f'engine {engine_path} has inputs {inputs}; expected one '
                                    f'(images)')
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        if self.dtypes[self.input_name] != np.uint8:
            raise InvalidValueError(f'engine {engine_path} takes {self.dtypes[self.input_name]} '
                                    'images; the exported graph takes uint8')
        self.profiles: List[Profile] = []
        for index in range(engine.num_optimization_profiles):
            shapes = engine.get_tensor_profile_shape(self.input_name, index)
            self.profiles.append(tuple(tuple(int(v) for v in list(s)[:3])
                                       for s in shapes))  # type: ignore[arg-type]
        self.stream = cuda_call(self.cudart, self.cudart.cudaStreamCreate(), 'cudaStreamCreate')
        self.buffers = {n: DeviceBuffer(self.cudart) for n in names}
        self.active_profile = 0

    @property
    def _stream_handle(self) -> int:
        return int(self.stream)

    def _select_profile(self, shape: Sequence[int]) -> None:
        index = profile_for(self.profiles, shape)
        if index is None:
            ranges = ', '.join(format_profile(p) for p in self.profiles)
            raise InvalidValueError(
                f'frames of {"x".join(str(v) for v in shape)} (NxHxW) are outside the shape '
                f'profiles of the TensorRT engine {self.engine_path} ({ranges}); rebuild it with '
                'profiles that cover them (seg-perception build-engine --shapes, or '
                'SEG_PERCEPTION_TRT_SHAPES for the node)')
        if index != self.active_profile:
            if not self.context.set_optimization_profile_async(index, self._stream_handle):
                raise RuntimeError(f'TensorRT refused optimisation profile {index}')
            self.active_profile = index

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Labels (and confidence) for a C-contiguous uint8 N×H×W×3 batch."""
        cudart = self.cudart
        self._select_profile(images.shape[:3])
        if not self.context.set_input_shape(self.input_name, tuple(images.shape)):
            raise InvalidValueError(f'TensorRT rejects input shape {images.shape}')
        device_in = self.buffers[self.input_name].ensure(images.nbytes)
        self.context.set_tensor_address(self.input_name, device_in)
        cuda_call(cudart, cudart.cudaMemcpyAsync(
            device_in, images.ctypes.data, images.nbytes,
            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), 'copy to GPU')
        outputs = {}
        for name in self.output_names:
            shape = tuple(int(v) for v in self.context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, self.dtypes[name])
            address = self.buffers[name].ensure(max(outputs[name].nbytes, 1))
            self.context.set_tensor_address(name, address)
        if not self.context.execute_async_v3(self._stream_handle):
            raise RuntimeError(f'TensorRT execution failed for a batch of {images.shape}')
        for name, array in outputs.items():
            cuda_call(cudart, cudart.cudaMemcpyAsync(
                array.ctypes.data, self.buffers[name].ptr, array.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), 'copy from GPU')
        cuda_call(cudart, cudart.cudaStreamSynchronize(self.stream), 'cudaStreamSynchronize')
        return outputs

    def describe(self) -> dict:
        """Engine file, profiles and build facts for Backend.describe()."""
        description = {'engine': self.engine_path,
                       'profiles': [format_profile(p) for p in self.profiles]}
        description.update(self._description)
        return description

    def close(self) -> None:
        """Free the device buffers and the stream."""
        for buffer in getattr(self, 'buffers', {}).values():
            buffer.free()
        if getattr(self, 'stream', None) is not None:
            cuda_call(self.cudart, self.cudart.cudaStreamDestroy(self.stream),
                      'cudaStreamDestroy')
            self.stream = None
        self.context = None
        self.engine = None
        self._keep_alive = None
