"""seg_perception.runtime.trt.engine (and trt_graph) without TensorRT.

TensorRT and a GPU are not available in CI, so the TensorRT 10 builder calls are
exercised against a recording stand-in of the documented API (``fake_trt``). What
this checks is our side: the precision rules (int8 only from QDQ models), the
builder configuration (flags, profiles, workspace, timing cache, DLA), what the
parser is given (the uint8 input cast first) and the command line's errors.
The engine runner and the backend wiring are in test_trt_runner.py.
"""
import sys
import types

import numpy as np
import onnx
import pytest

from seg_perception import cli
from seg_perception.runtime.trt import cache as engine_cache, engine as trt_mod, graph as trt_graph
from trt_helpers import ENV, frames, write_model


@pytest.fixture
def float_model(tmp_path):
    return write_model(tmp_path / 'net.onnx')


@pytest.fixture
def qdq_model(tmp_path):
    return write_model(tmp_path / 'net.int8.onnx', qdq=True)


# -- precision rules and the command line ---------------------------------------------

def test_int8_of_a_float_model_is_refused_pointing_at_quantize(float_model):
    with pytest.raises(ValueError) as error:
        trt_mod.resolve_precision(float_model, 'int8')
    message = str(error.value)
    assert 'QDQ' in message and 'seg-perception quantize' in message
    assert '--target tensorrt' in message and float_model in message


def test_quantised_models_build_at_int8(qdq_model, tmp_path):
    assert trt_mod.resolve_precision(qdq_model, 'int8') == 'int8'
    with pytest.raises(ValueError, match='--precision int8'):
        trt_mod.resolve_precision(qdq_model, 'fp16')
    assert trt_mod.resolve_precision(qdq_model, 'fp16', strict=False) == 'int8'
    qoperator = write_model(tmp_path / 'qop.onnx', qoperator=True)
    with pytest.raises(ValueError, match='QOperator'):
        trt_mod.resolve_precision(qoperator, 'int8')


def test_build_engine_without_tensorrt_is_one_clear_error(float_model, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)      # import tensorrt -> ImportError
    assert cli.main(['build-engine', '--model', float_model, '--precision', 'fp16']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err
    assert err.startswith('seg-perception build-engine: error: TensorRT is needed')
    assert 'pip install "seg_perception[tensorrt]"' in err and 'JetPack' in err


def test_build_engine_reports_a_lock_held_too_long_in_one_line(
        float_model, capsys, monkeypatch):
    from seg_perception.commands import build_engine
    from seg_perception.runtime.trt.lock import LockTimeoutError

    def held(*args, **kwargs):
        raise LockTimeoutError('gave up after 3 s waiting for the build lock x.lock')
    monkeypatch.setattr(build_engine, 'ensure_engine', held)
    assert cli.main(['build-engine', '--model', float_model, '--lock-timeout', '3']) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('seg-perception build-engine: error: gave up after 3 s waiting for the '
                   'build lock x.lock')


@pytest.mark.parametrize('args, message', [
    (['--precision', 'int8'], 'seg-perception quantize'),
    (['--workspace', '0'], '--workspace'),
    (['--dla-core', '-1'], '--dla-core')])
def test_build_engine_checks_its_input_before_needing_tensorrt(
        float_model, capsys, monkeypatch, args, message):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    assert cli.main(['build-engine', '--model', float_model] + args) == 2
    err = capsys.readouterr().err
    assert message in err and 'TensorRT is needed' not in err


def test_build_engine_names_a_missing_or_foreign_model(tmp_path, capsys):
    assert cli.main(['build-engine', '--model', str(tmp_path / 'none.onnx')]) == 2
    assert 'none.onnx' in capsys.readouterr().err
    foreign = write_model(tmp_path / 'foreign.onnx', metadata=False)
    assert cli.main(['build-engine', '--model', foreign]) == 2
    assert 'no seg_perception metadata' in capsys.readouterr().err


def test_bad_shapes_option_is_a_usage_error(float_model, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['build-engine', '--model', float_model, '--shapes', '1x720'])
    assert exit_info.value.code == 2 and 'BATCHxHEIGHTxWIDTH' in capsys.readouterr().err


def test_node_profiles_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(trt_mod.SHAPES_ENV, raising=False)
    assert trt_mod.profiles_from_env() is None
    monkeypatch.setenv(trt_mod.SHAPES_ENV, '1x720x1280  1x480x640/2x480x640/4x480x640')
    assert trt_mod.profiles_from_env() == [((1, 720, 1280),) * 3,
                                           ((1, 480, 640), (2, 480, 640), (4, 480, 640))]
    monkeypatch.setenv(trt_mod.SHAPES_ENV, '720x1280')
    with pytest.raises(ValueError, match=trt_mod.SHAPES_ENV):
        trt_mod.profiles_from_env()


def test_tensorrt_unavailable_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    usable, why = trt_mod.tensorrt_available()
    assert not usable and 'TensorRT is needed' in why


# -- what TensorRT parses ------------------------------------------------------------------

@pytest.mark.parametrize('resolution, confidence', [('camera', True), ('network', False)])
def test_uint8_input_is_cast_first_for_tensorrt_with_the_same_results(resolution, confidence):
    import onnxruntime as ort
    import runtime_models as rm
    path = rm.exported(output_resolution=resolution, with_confidence=confidence)
    model = onnx.load(path)
    readers = trt_graph.uint8_input_readers(model)
    assert any(op != 'Cast' for _, op in readers)       # the export transposes uint8 first
    changes = trt_graph.cast_uint8_inputs_first(model)
    assert changes and [op for _, op in trt_graph.uint8_input_readers(model)] == ['Cast']
    onnx.checker.check_model(model, full_check=True)
    original = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    rewritten = ort.InferenceSession(model.SerializeToString(),
                                     providers=['CPUExecutionProvider'])
    batch = frames(2, 45, 70, seed=3)
    for got, expected in zip(rewritten.run(None, {'images': batch}),
                             original.run(None, {'images': batch})):
        np.testing.assert_array_equal(got, expected)
    assert trt_graph.cast_uint8_inputs_first(model) == []      # idempotent


# -- the builder configuration (fake TensorRT 10 API) ------------------------------------

class _Recorder:
    def __init__(self, log, name):
        self._log, self._name = log, name

    def __getattr__(self, attr):
        def record(*args, **kwargs):
            self._log.append((self._name, attr) + args)
        return record


def fake_trt(parse_ok=True, plan=b'PLAN', dla_cores=0, flags=('FP16', 'INT8', 'GPU_FALLBACK')):
    log = []
    trt = types.SimpleNamespace(__version__='10.3.0', log=log)
    trt.Logger = type('Logger', (), {'WARNING': 'W', 'INFO': 'I', '__init__':
                                     lambda self, severity: None})
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='WORKSPACE')
    trt.DeviceType = types.SimpleNamespace(DLA='DLA', GPU='GPU')

    class Config(_Recorder):
        def create_timing_cache(self, data):
            log.append(('config', 'create_timing_cache', bytes(data)))
            if bytes(data).startswith(b'DAMAGED'):
                raise RuntimeError('timing cache header mismatch')
            return types.SimpleNamespace(serialize=lambda: b'TIMING+' + bytes(data))

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return types.SimpleNamespace(name='images')

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.config = Config(log, 'config')

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return self.config

        def create_optimization_profile(self):
            return _Recorder(log, 'profile')

        def build_serialized_network(self, network, config):
            return plan

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse(self, model_bytes, path):
            log.append(('parser', 'parse', onnx.load_from_string(model_bytes), path))
            return parse_ok

        def get_error(self, index):
            return 'Unsupported ONNX operator: Foo'

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def spec_for(model, precision='fp16', profiles=(((1, 8, 8), (1, 16, 16), (2, 32, 32)),),
             dla_core=None):
    return engine_cache.make_spec(model, precision, list(profiles), ENV, dla_core)


def test_builder_gets_flags_profiles_workspace_and_timing_cache(
        float_model, qdq_model, tmp_path, monkeypatch):
    trt = fake_trt()
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: trt)
    timing = str(tmp_path / 'timing' / 'gpu.cache')
    profiles = [((1, 8, 8), (1, 16, 16), (2, 32, 32)), ((1, 720, 1280),) * 3]
    plan = trt_mod.build_engine_bytes(float_model, spec_for(float_model, 'fp16', profiles),
                                      workspace_mb=256, timing_cache=timing)
    assert plan == b'PLAN'
    calls = [c for c in trt.log if c[0] in ('config', 'profile')]
    assert ('config', 'set_memory_pool_limit', 'WORKSPACE', 256 << 20) in calls
    assert [c[2] for c in calls if c[1] == 'set_flag'] == ['FP16']
    assert [c[2:] for c in calls if c[1] == 'set_shape'] == [
        ('images', (1, 8, 8, 3), (1, 16, 16, 3), (2, 32, 32, 3)),
        ('images', (1, 720, 1280, 3), (1, 720, 1280, 3), (1, 720, 1280, 3))]
    assert len([c for c in calls if c[1] == 'add_optimization_profile']) == 2
    assert open(timing, 'rb').read() == b'TIMING+'            # saved after the build
    parsed = [c for c in trt.log if c[:2] == ('parser', 'parse')][0]
    assert parsed[3] == float_model and [op for _, op in trt_graph.uint8_input_readers(
        parsed[2])] == ['Cast']
    trt.log.clear()
    trt_mod.build_engine_bytes(qdq_model, spec_for(qdq_model, 'int8'), timing_cache=timing)
    assert ('config', 'create_timing_cache', b'TIMING+') in trt.log     # reused
    assert [c[2] for c in trt.log if c[1] == 'set_flag'] == ['INT8', 'FP16']


@pytest.mark.parametrize('trt_kwargs, precision, dla_core, message', [
    ({'parse_ok': False}, 'fp16', None, 'Unsupported ONNX operator: Foo'),
    ({'plan': None}, 'fp16', None, 'failed to build'),
    ({'flags': ('INT8',)}, 'fp16', None, 'no BuilderFlag.FP16'),
    ({'dla_cores': 2}, 'fp32', 0, 'DLA runs fp16 or int8'),
    ({'dla_cores': 1}, 'fp16', 1, 'has 1 DLA cores')])
def test_build_failures_name_the_cause(float_model, monkeypatch, trt_kwargs, precision,
                                       dla_core, message):
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: fake_trt(**trt_kwargs))
    with pytest.raises(trt_mod.EngineBuildError, match=message):
        trt_mod.build_engine_bytes(float_model, spec_for(float_model, precision,
                                                         dla_core=dla_core))


def test_damaged_timing_cache_is_replaced_not_fatal(float_model, tmp_path, monkeypatch):
    trt = fake_trt()
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: trt)
    timing = tmp_path / 'timing.cache'
    timing.write_bytes(b'DAMAGED bytes')
    assert trt_mod.build_engine_bytes(float_model, spec_for(float_model),
                                      timing_cache=str(timing)) == b'PLAN'
    assert ('config', 'create_timing_cache', b'') in trt.log
    assert timing.read_bytes() == b'TIMING+'


def test_dla_build_targets_the_core_with_gpu_fallback(float_model, monkeypatch):
    trt = fake_trt(dla_cores=2)
    monkeypatch.setattr(trt_mod, 'import_tensorrt', lambda: trt)
    trt_mod.build_engine_bytes(float_model, spec_for(float_model, 'fp16', dla_core=1))
    assert ('config', 'set_flag', 'GPU_FALLBACK') in trt.log


def test_profiles_of_a_one_frame_graph_ask_for_no_larger_batch(float_model, monkeypatch):
    # An imported graph with a fixed batch of 1 (ModelInfo.max_batch) cannot take the
    # default profile's batch of 2: every profile is capped before the build.
    assert trt_mod.batch_capped([trt_mod.DEFAULT_PROFILE], 1) == [
        ((1, 64, 64), (1, 720, 1280), (1, 1280, 2048))]
    assert trt_mod.batch_capped([trt_mod.DEFAULT_PROFILE], None) == [trt_mod.DEFAULT_PROFILE]
    asked = {}
    monkeypatch.setattr(trt_mod.engine_cache, 'get_or_build_engine',
                        lambda path, precision, profiles, *a, **k: asked.setdefault('p', profiles))
    monkeypatch.setattr(trt_mod, 'device_environment', lambda: ENV)
    monkeypatch.setattr(trt_mod, 'load_model_info',
                        lambda path: types.SimpleNamespace(max_batch=1))
    trt_mod.ensure_engine(float_model, 'fp16', cache_dir='unused')
    assert asked['p'] == [((1, 64, 64), (1, 720, 1280), (1, 1280, 2048))]
