"""The TensorRT engine runner (seg_perception.runtime.trt.runner) and the backend wiring,
without TensorRT or a GPU.

``FakeEngine``/``FakeContext`` model TensorRT 10's tensor API (named I/O tensors,
optimisation profiles, set_input_shape / set_tensor_address / execute_async_v3)
and ``FakeCudart`` cuda-python's runtime API, with host memory standing in for
device memory: the fake engine computes labels from the pixels it finds at the
bound input address, so a wrong copy, address or shape shows up in the labels.
"""
import ctypes
import types

import numpy as np
import pytest

from seg_perception.runtime import backends
from seg_perception.runtime.trt import (backend as trt_backend, engine as trt_mod, runner as
                                        trt_runner)
from trt_helpers import ENV, frames, write_model


@pytest.fixture
def qdq_model(tmp_path):
    return write_model(tmp_path / 'net.int8.onnx', qdq=True)


# -- running an engine (fake engine and CUDA) -------------------------------------------

class FakeCudart:
    """cuda-python's runtime API shape; 'device' memory is host memory here."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self):
        self.allocations = {}
        self.malloc_count = 0
        self.fail_next_copy = False

    def cudaMalloc(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.allocations[ctypes.addressof(buffer)] = buffer
        self.malloc_count += 1
        return 0, ctypes.addressof(buffer)

    def cudaFree(self, ptr):
        del self.allocations[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        if self.fail_next_copy:
            return (700,)
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 42

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaGetErrorString(self, error):
        return 0, b'an illegal memory access was encountered'


class FakeEngine:
    """Two profiles; 'labels' = red channel // 64, computed from the bound input memory."""

    num_io_tensors = 2
    num_optimization_profiles = 2
    PROFILES = [[(1, 8, 8, 3), (1, 16, 16, 3), (2, 32, 32, 3)],
                [(1, 100, 100, 3), (1, 120, 160, 3), (1, 240, 320, 3)]]

    def get_tensor_name(self, index):
        return ['images', 'labels'][index]

    def get_tensor_mode(self, name):
        return 'INPUT' if name == 'images' else 'OUTPUT'

    def get_tensor_dtype(self, name):
        return 'UINT8'

    def get_tensor_profile_shape(self, name, index):
        return self.PROFILES[index]

    def create_execution_context(self):
        return FakeContext()


class FakeContext:
    def __init__(self):
        self.profile, self.shape, self.addresses, self.profile_calls = 0, None, {}, []

    def set_optimization_profile_async(self, index, stream):
        self.profile_calls.append(index)
        self.profile = index
        return True

    def set_input_shape(self, name, shape):
        low, _, high = FakeEngine.PROFILES[self.profile]
        self.shape = tuple(shape)
        return all(a <= v <= b for a, v, b in zip(low, shape, high))

    def get_tensor_shape(self, name):
        return self.shape[:3]

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        count = int(np.prod(self.shape))
        images = np.ctypeslib.as_array((ctypes.c_uint8 * count).from_address(
            self.addresses['images'])).reshape(self.shape)
        labels = np.ctypeslib.as_array((ctypes.c_uint8 * (count // 3)).from_address(
            self.addresses['labels'])).reshape(self.shape[:3])
        labels[...] = images[..., 0] // 64
        return True


FAKE_RUNTIME_TRT = types.SimpleNamespace(
    TensorIOMode=types.SimpleNamespace(INPUT='INPUT', OUTPUT='OUTPUT'),
    nptype=lambda dtype: np.uint8, __version__='10.3.0')


def test_runner_picks_the_profile_per_shape_and_reuses_buffers():
    cudart = FakeCudart()
    runner = trt_runner.EngineRunner(FakeEngine(), FAKE_RUNTIME_TRT, cudart, engine_path='x')
    assert runner.profiles == [((1, 8, 8), (1, 16, 16), (2, 32, 32)),
                               ((1, 100, 100), (1, 120, 160), (1, 240, 320))]
    small = frames(2, 20, 30)
    out = runner.run(small)
    assert out['labels'].shape == (2, 20, 30) and out['labels'].dtype == np.uint8
    np.testing.assert_array_equal(out['labels'], small[..., 0] // 64)
    mallocs = cudart.malloc_count
    runner.run(frames(1, 16, 16, seed=1))                   # smaller: buffers reused
    assert cudart.malloc_count == mallocs and runner.context.profile_calls == []
    camera = frames(1, 120, 160, seed=2)
    np.testing.assert_array_equal(runner.run(camera)['labels'], camera[..., 0] // 64)
    assert runner.context.profile_calls == [1] and cudart.malloc_count > mallocs
    runner.close()
    assert cudart.allocations == {}


def test_runner_rejects_frames_outside_every_profile():
    runner = trt_runner.EngineRunner(FakeEngine(), FAKE_RUNTIME_TRT, FakeCudart(),
                                     engine_path='cam.engine')
    with pytest.raises(ValueError) as error:
        runner.run(frames(1, 480, 640))
    message = str(error.value)
    assert '1x480x640' in message and 'cam.engine' in message and '--shapes' in message


def test_cuda_errors_are_raised_with_their_text():
    cudart = FakeCudart()
    runner = trt_runner.EngineRunner(FakeEngine(), FAKE_RUNTIME_TRT, cudart)
    cudart.fail_next_copy = True
    with pytest.raises(RuntimeError, match='illegal memory access'):
        runner.run(frames(1, 16, 16))


def test_tensorrt_backend_builds_once_then_uses_the_cache(qdq_model, tmp_path, monkeypatch):
    builds = []

    def build(path, spec, **kwargs):
        builds.append((spec, kwargs))
        return b'PLAN for ' + spec.key().encode()

    monkeypatch.setattr(trt_mod, 'device_environment', lambda: dict(ENV))
    monkeypatch.setattr(trt_mod, 'build_engine_bytes', build)
    monkeypatch.setattr(trt_mod, 'deserialize_engine',
                        lambda data, spec: trt_mod.DeserializedEngine(FakeEngine(), None))
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: FAKE_RUNTIME_TRT)
    monkeypatch.setattr(trt_runner, 'import_cudart', FakeCudart)
    monkeypatch.setattr(trt_backend, 'tensorrt_status', lambda: (True, 'fake GPU'))
    monkeypatch.setenv(trt_mod.SHAPES_ENV, '1x8x8/1x16x16/2x32x32')
    cache = str(tmp_path / 'engines')
    for _ in range(2):
        backend = backends.create_backend(qdq_model, 'tensorrt', precision='fp32',
                                          engine_cache_dir=cache)
        batch = frames(2, 24, 24)
        np.testing.assert_array_equal(backend.run(batch)['labels'], batch[..., 0] // 64)
        backend.close()
    assert len(builds) == 1                                  # the second start hit the cache
    spec, options = builds[0]
    assert spec.precision == 'int8'                          # a QDQ file runs at int8
    assert spec.profiles == (((1, 8, 8), (1, 16, 16), (2, 32, 32)),)
    assert options['timing_cache'].startswith(cache)
    description = backend.describe()
    assert description['name'] == 'tensorrt' and description['engine'].startswith(cache)
    assert description['engine_built_now'] is False and description['precision'] == 'int8'
