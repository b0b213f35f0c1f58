"""The engine cache (seg_perception.runtime.trt.cache) with a fake builder: no TensorRT.

The build function is injected, so these tests cover the keys, hits and misses,
corruption and incompatibility detection, rebuilds, atomic writes and the build
lock between two processes exactly as the TensorRT path uses them.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from seg_perception.files import write_bytes
from seg_perception.runtime.trt import cache as ec
from seg_perception.runtime.trt.lock import BuildLock, LockTimeoutError

ENV = {'trt_version': '10.3.0', 'gpu_name': 'NVIDIA Orin', 'compute_capability': '8.7'}
PROFILE = ((1, 64, 64), (1, 720, 1280), (2, 1080, 1920))


@pytest.fixture
def model(tmp_path):
    path = tmp_path / 'models' / 'net.onnx'
    path.parent.mkdir()
    path.write_bytes(b'fake onnx bytes ' * 64)
    return str(path)


class FakeBuilder:
    """Build function that records its calls; the 'engine' names the spec it was built for."""

    def __init__(self):
        self.calls = []

    def __call__(self, model_path, spec):
        self.calls.append((model_path, spec))
        return b'ENGINE:' + spec.key().encode() + b':' + os.urandom(8)


def load_ok(data, spec):
    """Fake deserialiser: accepts only engines built for this spec."""
    if not data.startswith(b'ENGINE:' + spec.key().encode()):
        raise RuntimeError('engine built for something else')
    return ('engine', spec.key())


def get(model, cache_dir, builder, **kwargs):
    kwargs.setdefault('environment', ENV)
    kwargs.setdefault('load_fn', load_ok)
    return ec.get_or_build_engine(model, kwargs.pop('precision', 'fp16'),
                                  kwargs.pop('profiles', [PROFILE]), str(cache_dir),
                                  build_fn=builder, **kwargs)


# -- keys and shapes -----------------------------------------------------------------

def test_key_is_stable_and_independent_of_the_model_location(model, tmp_path):
    copy = tmp_path / 'elsewhere.onnx'
    copy.write_bytes(open(model, 'rb').read())
    first = ec.make_spec(model, 'fp16', [PROFILE], ENV)
    assert first.key() == ec.make_spec(str(copy), 'fp16', [PROFILE], ENV).key()
    assert len(first.key()) == 64 and first.onnx_sha256 == ec.file_sha256(model)


@pytest.mark.parametrize('change', [
    'onnx', 'precision', 'profile', 'second_profile', 'trt_version', 'gpu_name',
    'compute_capability', 'dla_core'])
def test_every_part_of_the_configuration_changes_the_key(model, change):
    args = dict(precision='fp16', profiles=[PROFILE], environment=dict(ENV), dla_core=None)
    base = ec.make_spec(model, **args).key()
    if change == 'onnx':
        with open(model, 'ab') as stream:
            stream.write(b'!')
    elif change == 'precision':
        args['precision'] = 'int8'
    elif change == 'profile':
        args['profiles'] = [((1, 64, 64), (1, 720, 1280), (2, 1080, 1921))]
    elif change == 'second_profile':
        args['profiles'] = [PROFILE, ((1, 480, 640),) * 3]
    elif change == 'dla_core':
        args['dla_core'] = 0
    else:
        args['environment'][change] += 'x'
    assert ec.make_spec(model, **args).key() != base


def test_spec_rejects_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match='unknown precision'):
        ec.make_spec(model, 'int4', [PROFILE], ENV)
    with pytest.raises(ValueError, match='lacks gpu_name'):
        ec.make_spec(model, 'fp16', [PROFILE], {**ENV, 'gpu_name': ''})
    with pytest.raises(ValueError, match='dla_core'):
        ec.make_spec(model, 'fp16', [PROFILE], ENV, dla_core=-1)
    with pytest.raises(ValueError, match='at least one shape profile'):
        ec.make_spec(model, 'fp16', [], ENV)
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        ec.make_spec(str(tmp_path / 'missing.onnx'), 'fp16', [PROFILE], ENV)


def test_shape_profiles_parse_format_and_select():
    assert ec.parse_profile('1x720x1280') == ((1, 720, 1280),) * 3
    profile = ec.parse_profile('1x480x640/1X720x1280/4x1080x1920')
    assert profile == ((1, 480, 640), (1, 720, 1280), (4, 1080, 1920))
    assert ec.parse_profile(ec.format_profile(profile)) == profile
    assert ec.format_profile(((1, 720, 1280),) * 3) == '1x720x1280'
    profiles = [((1, 720, 1280),) * 3, profile]
    assert ec.profile_for(profiles, (1, 720, 1280)) == 0
    assert ec.profile_for(profiles, (3, 1000, 1000)) == 1
    assert ec.profile_for(profiles, (5, 720, 1280)) is None


@pytest.mark.parametrize('text, message', [
    ('720x1280', 'BATCHxHEIGHTxWIDTH'), ('1x720x1280/2x720x1280', 'MIN/OPT/MAX'),
    ('2x720x1280/1x720x1280/4x720x1280', 'min <= opt <= max'), ('0x720x1280', 'zero'),
    ('1x720x1280x3', 'BATCHxHEIGHTxWIDTH')])
def test_bad_shape_profiles_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        ec.parse_profile(text)


# -- hits, misses, corruption ----------------------------------------------------------

def test_miss_builds_and_writes_engine_and_sidecar_then_hits(model, tmp_path):
    builder = FakeBuilder()
    first = get(model, tmp_path / 'cache', builder)
    assert first.built and len(builder.calls) == 1 and first.loaded == ('engine', first.key)
    assert os.path.basename(first.path).startswith('net.fp16.' + first.key[:16])
    sidecar = json.load(open(first.path + '.json'))
    assert sidecar['key'] == first.key and sidecar['engine_bytes'] == len(first.data)
    assert sidecar['spec']['trt_version'] == '10.3.0'
    second = get(model, tmp_path / 'cache', builder)
    assert not second.built and len(builder.calls) == 1
    assert second.data == first.data and second.path == first.path


def test_other_precision_or_gpu_is_a_miss_next_to_the_first_engine(model, tmp_path):
    builder = FakeBuilder()
    fp16 = get(model, tmp_path, builder)
    int8 = get(model, tmp_path, builder, precision='int8')
    other = {**ENV, 'gpu_name': 'RTX 4090', 'compute_capability': '8.9'}
    other_gpu = get(model, tmp_path, builder, environment=other)
    assert len(builder.calls) == 3 and len({fp16.path, int8.path, other_gpu.path}) == 3
    assert not get(model, tmp_path, builder).built        # the first one is still valid


def _corrupt(path):
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    open(path, 'wb').write(bytes(data))


def _garbage_sidecar(path):
    open(path + '.json', 'w').write('{not json')


def _sidecar_of_another_spec(path):
    sidecar = json.load(open(path + '.json'))
    sidecar['key'] = '0' * 64
    json.dump(sidecar, open(path + '.json', 'w'))


def _truncate(path):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:10])


@pytest.mark.parametrize('damage, reason', [
    (_corrupt, 'corrupt'), (lambda p: os.remove(p + '.json'), 'no sidecar'),
    (_garbage_sidecar, 'unreadable'), (_sidecar_of_another_spec, 'another configuration'),
    (_truncate, 'corrupt')])
def test_damaged_engine_is_reported_and_rebuilt(model, tmp_path, caplog, damage, reason):
    builder = FakeBuilder()
    first = get(model, tmp_path, builder)
    damage(first.path)
    again = get(model, tmp_path, builder)
    assert again.built and len(builder.calls) == 2 and reason in again.rebuilt_because
    assert any('rebuilding' in r.getMessage() and reason in r.getMessage()
               for r in caplog.records)
    assert not get(model, tmp_path, builder).built        # the rebuilt one is valid


def test_engine_the_runtime_cannot_deserialise_is_rebuilt(model, tmp_path):
    builder = FakeBuilder()
    stale = get(model, tmp_path, builder).data

    def reject_stale(data, spec):        # e.g. a TensorRT update with the same version string
        if data == stale:
            raise RuntimeError('Serialization assertion failed: version tag mismatch')
        return load_ok(data, spec)

    again = get(model, tmp_path, builder, load_fn=reject_stale)
    assert again.built and 'version tag mismatch' in again.rebuilt_because
    assert again.data != stale and len(builder.calls) == 2
    assert not get(model, tmp_path, builder, load_fn=reject_stale).built


def test_fresh_engine_that_cannot_be_loaded_is_an_error_and_not_cached(model, tmp_path):
    def never(data, spec):
        return None
    with pytest.raises(ec.EngineCacheError, match='cannot be loaded'):
        get(model, tmp_path, FakeBuilder(), load_fn=never)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(('.engine', '.json'))]


def test_empty_build_result_is_an_error(model, tmp_path):
    with pytest.raises(ec.EngineCacheError, match='produced no engine'):
        get(model, tmp_path, lambda path, spec: b'')


def test_force_rebuilds_a_valid_engine_and_engine_path_overrides_the_cache(model, tmp_path):
    builder = FakeBuilder()
    target = tmp_path / 'out' / 'net.engine'
    first = get(model, tmp_path / 'unused', builder, engine_path=str(target))
    assert first.path == str(target) and target.exists() and (tmp_path / 'out' /
                                                              'net.engine.json').exists()
    assert not (tmp_path / 'unused').exists()
    assert not get(model, None, builder, engine_path=str(target)).built
    forced = get(model, None, builder, engine_path=str(target), force=True)
    assert forced.built and len(builder.calls) == 2 and forced.data != first.data


# -- atomic writes -------------------------------------------------------------------

def test_failed_build_leaves_no_files_and_keeps_the_old_engine(model, tmp_path):
    builder = FakeBuilder()
    first = get(model, tmp_path, builder)

    def failing(path, spec):
        raise RuntimeError('out of memory while building')
    with pytest.raises(RuntimeError, match='out of memory'):
        get(model, tmp_path, failing, force=True)
    assert open(first.path, 'rb').read() == first.data
    assert not get(model, tmp_path, builder).built
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'engine.bin'
    write_bytes(str(path), b'old engine', durable=True)

    def crash(src, dst):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(OSError, match='disk full'):
        write_bytes(str(path), b'new engine', durable=True)
    assert path.read_bytes() == b'old engine' and os.listdir(tmp_path) == ['engine.bin']


def test_crash_between_engine_and_sidecar_is_detected(model, tmp_path, monkeypatch):
    builder = FakeBuilder()
    first = get(model, tmp_path, builder)

    def crash(path, value):
        raise OSError('killed')
    monkeypatch.setattr(ec, 'atomic_write_json', crash)
    with pytest.raises(OSError, match='killed'):
        get(model, tmp_path, builder, force=True)       # new engine written, old sidecar
    monkeypatch.undo()
    assert open(first.path, 'rb').read() != first.data
    again = get(model, tmp_path, builder)
    assert again.built and 'corrupt' in again.rebuilt_because


# -- the build lock ------------------------------------------------------------------

WORKER = textwrap.dedent('''
    import json, os, sys, time
    from seg_perception.runtime.trt import cache as ec
    model, cache, log = sys.argv[1:4]
    ENV = {'trt_version': '10.3.0', 'gpu_name': 'NVIDIA Orin', 'compute_capability': '8.7'}

    def slow_build(path, spec):
        with open(log, 'a') as stream:
            stream.write(f'build {os.getpid()}\\n')
        time.sleep(1.5)
        return b'ENGINE built by ' + str(os.getpid()).encode()

    result = ec.get_or_build_engine(model, 'fp16', [((1, 8, 8),) * 3], cache,
                                    build_fn=slow_build, environment=ENV)
    print(json.dumps({'built': result.built, 'notes': result.notes,
                      'data': result.data.decode()}))
''')


def test_second_process_waits_for_the_first_build_and_reuses_it(model, tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    log = tmp_path / 'builds.log'
    cache = tmp_path / 'cache'
    command = [sys.executable, str(script), model, str(cache), str(log)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not log.exists():              # the first process holds the lock and builds
        assert time.monotonic() < deadline and first.poll() is None, 'first build never started'
        time.sleep(0.05)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out_first, _ = first.communicate(timeout=60)
    out_second, _ = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0
    results = [json.loads(out_first), json.loads(out_second)]
    assert [r['built'] for r in results] == [True, False]
    assert any('waited' in note for note in results[1]['notes'])
    assert results[0]['data'] == results[1]['data'] == f'ENGINE built by {first.pid}'
    assert log.read_text().splitlines() == [f'build {first.pid}']


def test_lock_held_too_long_is_a_clear_error(model, tmp_path):
    spec = ec.make_spec(model, 'fp16', [PROFILE], ENV)
    lock_path = ec.cache_paths(str(tmp_path), model, spec).lock
    builder = FakeBuilder()
    with BuildLock(lock_path):        # a separate open file: flock conflicts in-process too
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as error:
            get(model, tmp_path, builder, lock_timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 5
    message = str(error.value)
    assert lock_path in message and f'pid {os.getpid()}' in message and 'another process' in message
    assert not builder.calls
    assert get(model, tmp_path, builder).built            # released: builds normally
