"""Inference backends: ONNX Runtime, the PyTorch development backend, the TensorRT hook."""
import importlib.util
import logging
import os
import sys
import types

import numpy as np
import onnx
import onnxruntime
import pytest

import runtime_models as rm
from seg_perception import model_info
from seg_perception.model_info import ModelInfoError
from seg_perception.runtime.trt import backend as trt_backend
from seg_perception.runtime.backends import create_backend
from seg_perception.runtime.onnxruntime_backend import MAX_DEFAULT_THREADS, default_num_threads


def frames(n=2, height=45, width=70, seed=0):
    """Painted frames with noise: texture makes labels depend on the resize."""
    rng = np.random.default_rng(seed)
    batch = np.stack([rm.painted_frame(height, width) for _ in range(n)]).astype(np.int16)
    batch += rng.integers(-60, 60, batch.shape, dtype=np.int16)
    return np.clip(batch, 0, 255).astype(np.uint8)


@pytest.mark.parametrize('resolution', ['network', 'camera'])
def test_onnxruntime_runs_a_batch_and_describes_itself(resolution):
    path = rm.exported(resolution, with_confidence=True)
    backend = create_backend(path, 'onnxruntime', threads=1)
    out = backend.run(frames(3))
    expected = (3, 45, 70) if resolution == 'camera' else (3,) + rm.INPUT_SIZE
    assert out['labels'].shape == expected and out['labels'].dtype == np.uint8
    assert out['confidence'].shape == expected and out['confidence'].dtype == np.uint8
    assert out['labels'].max() < len(rm.CLASS_NAMES)
    info = backend.describe()
    assert info['name'] == 'onnxruntime' and info['device'] == 'cpu'
    assert info['precision'] == 'fp32' and info['threads'] == 1
    assert info['inputs'] == [{'name': 'images', 'shape': [None, None, None, 3],
                               'dtype': 'uint8'}]
    assert [o['name'] for o in info['outputs']] == ['labels', 'confidence']
    assert info['reason'] and info['output_resolution'] == resolution
    assert info['network_input'] == list(rm.INPUT_SIZE)


def test_auto_picks_the_best_usable_backend_and_logs_why(caplog):
    with caplog.at_level(logging.INFO, logger='seg_perception.runtime.backends'):
        backend = create_backend(rm.exported(), 'auto')
    assert backend.name in ('tensorrt', 'onnxruntime-cuda', 'onnxruntime')
    reason = backend.describe()['reason']
    assert reason.startswith('auto')
    if backend.name == 'onnxruntime':          # a machine without a usable GPU stack
        assert 'TensorRT not used' in reason
        assert 'CUDA' in reason
    assert any(backend.name in r.getMessage() for r in caplog.records)


def test_auto_picks_tensorrt_through_the_hook_when_it_is_usable(monkeypatch):
    calls = {}

    class FakeRunner:
        def run(self, images):
            calls['shape'] = images.shape
            return {'labels': np.zeros(images.shape[:3], np.uint8)}

        profiles = [((1, 64, 64), (1, 512, 1024), (3, 1024, 2048))]

        def describe(self):
            return {'engine': 'fake.engine', 'precision': 'fp16'}

    def load_engine_runner(path, *, precision, engine_cache_dir, info):
        calls.update(path=path, precision=precision, cache=engine_cache_dir, info=info)
        return FakeRunner()

    fake = types.ModuleType('seg_perception.runtime.trt.engine')
    fake.tensorrt_available = lambda: (True, 'fake GPU')
    fake.load_engine_runner = load_engine_runner
    import seg_perception.runtime.trt as trt_package
    monkeypatch.setitem(sys.modules, 'seg_perception.runtime.trt.engine', fake)
    monkeypatch.setattr(trt_package, 'engine', fake, raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: object() if name == 'tensorrt'
                        else real_find_spec(name, *a))
    path = rm.exported()
    backend = create_backend(path, 'auto', precision='fp16', engine_cache_dir='/tmp/x')
    assert backend.name == 'tensorrt' and 'fake GPU' in backend.reason
    assert backend.max_batch == 3 and backend.precision == 'fp16'
    assert calls['precision'] == 'fp16' and calls['cache'] == '/tmp/x'
    assert calls['path'] == path and calls['info'].architecture == rm.ARCHITECTURE
    backend.run(frames(2))
    assert calls['shape'] == (2, 45, 70, 3)
    assert backend.describe()['engine'] == 'fake.engine'


def test_explicit_tensorrt_without_tensorrt_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(trt_backend, 'tensorrt_status', lambda: (False, 'no tensorrt here'))
    with pytest.raises(ValueError, match='TensorRT backend is not usable: no tensorrt here'):
        create_backend(rm.exported(), 'tensorrt')


@pytest.mark.usefixtures('colour_net_name')
@pytest.mark.parametrize('resolution', ['network', 'camera'])
def test_onnxruntime_and_pytorch_agree(tmp_path, resolution):
    checkpoint = rm.save_colour_checkpoint(str(tmp_path / 'colour.pt'), texture=0.3)
    onnx_backend = create_backend(rm.exported(resolution, with_confidence=True), 'onnxruntime')
    torch_backend = create_backend(checkpoint, 'pytorch', output_resolution=resolution,
                                   with_confidence=True)
    assert torch_backend.describe()['name'] == 'pytorch'
    batch = np.concatenate([frames(2, 45, 70, seed=1), frames(1, 45, 70, seed=2)])
    ours, theirs = onnx_backend.run(batch), torch_backend.run(batch)
    assert ours['labels'].shape == theirs['labels'].shape
    assert (ours['labels'] == theirs['labels']).mean() >= 0.999
    difference = np.abs(ours['confidence'].astype(int) - theirs['confidence'])
    assert difference.max() <= 1


def test_outputs_are_preallocated_per_shape_and_stay_correct():
    backend = create_backend(rm.exported(), 'onnxruntime')
    first, second = frames(2, seed=3), frames(2, seed=4)
    expected_second = backend.run(second)['labels'].copy()
    out_a = backend.run(first)['labels']
    expected_first = out_a.copy()
    out_b = backend.run(second)['labels']
    assert out_b is out_a                        # the same preallocated array
    np.testing.assert_array_equal(out_b, expected_second)
    np.testing.assert_array_equal(backend.run(first)['labels'], expected_first)
    other = backend.run(frames(1, 30, 30))['labels']
    assert other is not out_a and other.shape == (1,) + rm.INPUT_SIZE


def test_thread_defaults_suit_a_small_vehicle_cpu():
    threads = default_num_threads()
    assert 1 <= threads <= min(MAX_DEFAULT_THREADS, os.cpu_count())
    assert create_backend(rm.exported(), 'onnxruntime', threads=2).describe()['threads'] == 2


def test_missing_corrupt_and_undescribed_models_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.onnx'):
        create_backend(str(tmp_path / 'nope.onnx'))
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x07garbage' * 50)
    with pytest.raises(ModelInfoError, match='corrupt.onnx'):
        create_backend(str(corrupt))
    bare = onnx.load(rm.exported())
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / 'bare.onnx'))
    with pytest.raises(ModelInfoError, match='no seg_perception metadata'):
        create_backend(str(tmp_path / 'bare.onnx'))


def test_bad_choices_are_named(tmp_path):
    path = rm.exported()
    with pytest.raises(ValueError, match="unknown backend 'openvino'"):
        create_backend(path, 'openvino')
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        create_backend(path, precision='fp8')
    with pytest.raises(ValueError, match='int8'):
        create_backend(path, 'onnxruntime', precision='int8')
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match='no CUDAExecutionProvider'):
            create_backend(path, 'onnxruntime-cuda')
    checkpoint = tmp_path / 'model.pt'
    checkpoint.write_bytes(b'not really')
    with pytest.raises(ValueError, match='is a checkpoint'):
        create_backend(str(checkpoint), 'onnxruntime')
    with pytest.raises(ValueError, match='pytorch backend only'):
        create_backend(path, 'onnxruntime', device='cpu')


def test_bad_batches_are_refused():
    backend = create_backend(rm.exported(), 'onnxruntime')
    for bad, words in ((np.zeros((1, 8, 8, 3), np.float32), 'uint8'),
                       (np.zeros((8, 8, 3), np.uint8), 'N×H×W×3'),
                       (np.zeros((1, 8, 8, 4), np.uint8), 'N×H×W×3'),
                       (np.zeros((0, 8, 8, 3), np.uint8), 'empty')):
        with pytest.raises(ValueError, match=words):
            backend.run(bad)
    assert backend.run(frames(1))['labels'].shape == (1,) + rm.INPUT_SIZE


def test_no_model_and_no_default_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(model_info, 'default_model_path', lambda: None)
    with pytest.raises(FileNotFoundError, match='no default model'):
        create_backend(None)


def test_a_quantised_file_runs_as_int8_on_the_cpu(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{'images': frames(1, seed=s)} for s in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantised = str(tmp_path / 'int8.onnx')
    quantize_static(rm.exported(), quantised, Frames(), quant_format=QuantFormat.QDQ)
    backend = create_backend(quantised, 'onnxruntime')      # fp32 asked: the file decides
    assert backend.describe()['precision'] == 'int8'
    assert create_backend(quantised, 'auto', precision='int8').precision == 'int8'
    batch = frames(2, seed=5)
    reference = create_backend(rm.exported(), 'onnxruntime').run(batch)['labels']
    assert (backend.run(batch)['labels'] == reference).mean() > 0.95
    with pytest.raises(ValueError, match='int8'):
        create_backend(quantised, 'onnxruntime', precision='fp16')


def test_tensorrt_provider_int8_needs_qdq_nodes(monkeypatch):
    """The TensorRT EP must never be asked for implicit (calibration-table) int8."""
    path = rm.exported()
    monkeypatch.setattr(onnxruntime, 'get_available_providers', lambda: [
        'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'])
    with pytest.raises(ValueError, match=r'needs a quantised \(QDQ\) model; .* is fp32'):
        create_backend(path, 'onnxruntime-tensorrt', precision='int8')
    # Without the onnx package to look for Q/DQ nodes, the file's own metadata decides.
    monkeypatch.setitem(sys.modules, 'onnx', None)
    with pytest.raises(ValueError, match=r'needs a quantised \(QDQ\) model; .* is fp32'):
        create_backend(path, 'onnxruntime-tensorrt', precision='int8')
