"""TensorRT engines from the exported ONNX graph, cached (the command: commands/build_engine.py).

Written against TensorRT 10's Python API. The engine is built with one
optimisation profile per camera resolution / batch range in use (the graph takes
uint8 N×H×W×3 frames of any size and resizes them itself, so only the cheap
pre/post-processing runs at camera size), a timing cache shared by all builds on
the same GPU and TensorRT version (rebuilds take seconds instead of minutes),
a progress monitor that logs the build's phases (trt/progress.py), and these
precisions:

* ``fp32``: TensorRT's default (TF32 on GPUs that have it).
* ``fp16``: BuilderFlag.FP16.
* ``int8``: explicit quantisation only: the model must be a QDQ graph from
  ``seg-perception quantize --target tensorrt`` (implicit INT8 calibrators are
  deprecated in TensorRT 10). BuilderFlag.INT8 and FP16, so layers left in float
  run in fp16.

Engines live in the cache of trt/cache.py, keyed by the ONNX file, precision,
profiles, TensorRT version, GPU and DLA core; the ROS node builds one on first
start when none matches (``load_engine_runner``). This module imports without
TensorRT; the functions that need it say so in one line.
"""
from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Sequence, Tuple

from seg_perception.choices import PRECISIONS
from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.files import write_bytes
from seg_perception.model_info import load_model_info
from seg_perception.runtime.trt import cache as engine_cache
from seg_perception.runtime.trt.cache import (CachedEngine, EngineSpec, Profile, format_profile,
                                              parse_profile)
from seg_perception.runtime.trt.progress import BuildProgress, progress_monitor

LOG = logging.getLogger(__name__)

TENSORRT_HINT = ('TensorRT is needed: pip install "seg_perception[tensorrt]" (TensorRT 10 and '
                 'cuda-python, on a machine with an NVIDIA GPU), or on a Jetson use the '
                 'TensorRT that ships with JetPack')
# The frames the engine takes when no profile is given: any camera up to 2048×1280
# (1080p, 1920×1208 automotive sensors), batch 1-2, tuned for 720p single frames.
DEFAULT_PROFILE: Profile = ((1, 64, 64), (1, 720, 1280), (2, 1280, 2048))
DEFAULT_WORKSPACE_MB = 1024
SHAPES_ENV = 'SEG_PERCEPTION_TRT_SHAPES'        # profiles for the node, e.g. "1x720x1280"
CACHE_ENV = 'SEG_PERCEPTION_ENGINE_CACHE'
QDQ_OPS = ('QuantizeLinear', 'DequantizeLinear')
QOPERATOR_OPS = ('QLinearConv', 'QLinearMatMul', 'ConvInteger', 'MatMulInteger')


class TensorRTUnavailable(SegPerceptionError, RuntimeError):
    """TensorRT or cuda-python is not installed, or no GPU is usable."""


class EngineBuildError(SegPerceptionError, RuntimeError):
    """TensorRT could not parse the model or build the engine."""


# -- environment --------------------------------------------------------------------

def import_tensorrt():
    """The tensorrt module, or TensorRTUnavailable with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable(f'{TENSORRT_HINT} ({exc})') from None
    return tensorrt


def _cudart():
    from seg_perception.runtime.trt.runner import import_cudart
    try:
        return import_cudart()
    except ImportError as exc:
        raise TensorRTUnavailable(str(exc)) from None


def device_environment() -> dict:
    """trt_version, gpu_name, compute_capability of the current CUDA device (cache key)."""
    from seg_perception.runtime.trt.runner import cuda_call
    trt = import_tensorrt()
    cudart = _cudart()
    count = cuda_call(cudart, cudart.cudaGetDeviceCount(), 'cudaGetDeviceCount')
    if not count:
        raise TensorRTUnavailable('no CUDA GPU is visible to this process')
    device = cuda_call(cudart, cudart.cudaGetDevice(), 'cudaGetDevice')
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device), 'cudaGetDeviceProperties')
    name = props.name
    name = name.decode(errors='replace') if isinstance(name, bytes) else str(name)
    return {'trt_version': str(trt.__version__), 'gpu_name': name.rstrip('\x00').strip(),
            'compute_capability': f'{props.major}.{props.minor}'}


def tensorrt_available() -> Tuple[bool, str]:
    """(usable, why): TensorRT and cuda-python import and a GPU is visible."""
    try:
        env = device_environment()
    except (TensorRTUnavailable, RuntimeError, ImportError, OSError) as exc:
        return False, str(exc)
    return True, (f'TensorRT {env["trt_version"]} on {env["gpu_name"]} '
                  f'(compute capability {env["compute_capability"]})')


def default_cache_dir() -> str:
    """$SEG_PERCEPTION_ENGINE_CACHE, else $XDG_CACHE_HOME (~/.cache)/seg_perception/engines."""
    if os.environ.get(CACHE_ENV):
        return os.path.expanduser(os.environ[CACHE_ENV])
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'seg_perception', 'engines')


def timing_cache_path(cache_dir: str, spec: EngineSpec) -> str:
    """The timing cache shared by every build for this TensorRT version and GPU."""
    device = re.sub(r'[^A-Za-z0-9]+', '-', spec.gpu_name).strip('-') or 'gpu'
    return os.path.join(cache_dir, 'timing',
                        f'trt{spec.trt_version}-{device}-sm{spec.compute_capability}.cache')


def profiles_from_env() -> Optional[List[Profile]]:
    """Profiles from $SEG_PERCEPTION_TRT_SHAPES (space-separated), or None when unset."""
    text = os.environ.get(SHAPES_ENV, '').strip()
    if not text:
        return None
    try:
        return [parse_profile(p) for p in text.split()]
    except ValueError as exc:
        raise InvalidValueError(f'{SHAPES_ENV}: {exc}') from None


# -- the model ----------------------------------------------------------------------

def quantization_format(model_path: str) -> Optional[str]:
    """'qdq' (QuantizeLinear/DequantizeLinear), 'qoperator' (QLinearConv...) or None (float)."""
    import onnx
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f'model file not found: {model_path}')
    ops = {node.op_type for node in onnx.load(model_path, load_external_data=False).graph.node}
    if ops & set(QOPERATOR_OPS):
        return 'qoperator'
    if ops & set(QDQ_OPS):
        return 'qdq'
    return None


def resolve_precision(model_path: str, precision: str, strict: bool = True) -> str:
    """The precision to build ``model_path`` at; ValueError if it cannot be built so.

    A float model builds at fp32 or fp16, never int8 (no implicit calibration). A QDQ
    model builds at int8; asked for fp32/fp16 it is an error when ``strict`` (the
    command line), and int8 with a log line otherwise (the node runs the file's precision).
    """
    if precision not in PRECISIONS:
        raise InvalidValueError(f'unknown precision {precision!r}; choose one of '
                                f'{", ".join(PRECISIONS)}')
    kind = quantization_format(model_path)
    if kind == 'qoperator':
        raise InvalidValueError(f'{model_path} is quantised in QOperator format (QLinearConv...), '
                                'which TensorRT cannot parse; quantise the fp32 export with '
                                '`seg-perception quantize --target tensorrt` (QDQ format)')
    if precision == 'int8' and kind is None:
        raise InvalidValueError(
            f'int8 needs a QDQ-quantised model, and {model_path} has no QuantizeLinear/'
            'DequantizeLinear nodes (TensorRT 10 deprecates implicit INT8 calibration). '
            'Make one with `seg-perception quantize --model MODEL.onnx --target tensorrt '
            '--images DIR --output MODEL.int8.onnx`, then build that with --precision int8')
    if kind == 'qdq' and precision != 'int8':
        if strict:
            raise InvalidValueError(f'{model_path} is quantised (QDQ): build it with --precision '
                                    f'int8')
        LOG.info('%s is quantised (QDQ): building it at int8, not %s', model_path, precision)
        return 'int8'
    return precision


# -- building -----------------------------------------------------------------------

def _set_precision(trt, config, precision: str) -> None:
    wanted = {'fp32': [], 'fp16': ['FP16'], 'int8': ['INT8', 'FP16']}[precision]
    for flag in wanted:
        if not hasattr(trt.BuilderFlag, flag):
            raise EngineBuildError(f'TensorRT {trt.__version__} has no BuilderFlag.{flag} '
                                   f'(strongly typed builds only); {precision} is not supported '
                                   'with this TensorRT')
        config.set_flag(getattr(trt.BuilderFlag, flag))


def _set_dla(trt, builder, config, spec: EngineSpec) -> None:
    cores = int(getattr(builder, 'num_DLA_cores', 0))
    if spec.dla_core >= cores:
        raise EngineBuildError(f'--dla-core {spec.dla_core}: this device has {cores} DLA cores')
    if spec.precision == 'fp32':
        raise EngineBuildError('DLA runs fp16 or int8 only; build with --precision fp16 or int8')
    if any(low != high for low, _, high in spec.profiles):
        LOG.warning('DLA takes static shapes only: layers with dynamic shapes fall back to the '
                    'GPU; give fixed --shapes (e.g. 1x720x1280) to run on the DLA')
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(spec.dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _attach_timing_cache(config, path: Optional[str]):
    data = b''
    if path and os.path.isfile(path):
        with open(path, 'rb') as stream:
            data = stream.read()
    try:
        cache = config.create_timing_cache(data)
    except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the build
        LOG.warning('timing cache %s is unusable (%s)', path, exc)
        cache = None
    if cache is None and data:
        LOG.warning('starting an empty timing cache instead of %s', path)
        cache = config.create_timing_cache(b'')
    if cache is not None:
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def tensorrt_onnx_bytes(model_path: str) -> bytes:
    """The model's bytes with its uint8 input cast first (see trt/graph.py), for the parser."""
    import onnx
    from seg_perception.runtime.trt.graph import cast_uint8_inputs_first, uint8_input_readers
    model = onnx.load(model_path)
    for change in cast_uint8_inputs_first(model):
        LOG.debug('for TensorRT: %s', change)
    others = [f'{name} ({op})' for name, op in uint8_input_readers(model) if op != 'Cast']
    if others:
        LOG.warning('TensorRT may reject %s reading the uint8 input directly', ', '.join(others))
    return model.SerializeToString()


def build_engine_bytes(model_path: str, spec: EngineSpec, *,
                       workspace_mb: int = DEFAULT_WORKSPACE_MB,
                       timing_cache: Optional[str] = None) -> bytes:
    """Parse ``model_path`` and build a serialised engine for ``spec`` (TensorRT 10)."""
    trt = import_tensorrt()
    severity = trt.Logger.INFO if LOG.isEnabledFor(logging.DEBUG) else trt.Logger.WARNING
    logger = trt.Logger(severity)
    builder = trt.Builder(logger)
    network = builder.create_network(0)          # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(tensorrt_onnx_bytes(model_path), os.path.abspath(model_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f'TensorRT cannot parse {model_path}: ' + '; '.join(errors[:5]))
    if network.num_inputs != 1:
        raise EngineBuildError(f'{model_path} has {network.num_inputs} inputs; the exported '
                               'graph has one (images)')
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    _set_precision(trt, config, spec.precision)
    if spec.dla_core is not None:
        _set_dla(trt, builder, config, spec)
    for low, opt, high in spec.profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, (*low, 3), (*opt, 3), (*high, 3))
        config.add_optimization_profile(profile)
    cache = _attach_timing_cache(config, timing_cache)
    LOG.info('TensorRT %s: building %s at %s for %s', trt.__version__, model_path,
             spec.precision, ', '.join(format_profile(p) for p in spec.profiles))
    # Held until the build returns: TensorRT keeps only a pointer to it.
    monitor = progress_monitor(trt, BuildProgress())
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f'TensorRT failed to build {model_path} at {spec.precision} '
                               '(its log above says why)')
    if cache is not None and timing_cache:
        write_bytes(timing_cache, bytes(cache.serialize()), durable=True)
    return bytes(serialized)


class DeserializedEngine:
    """An ICudaEngine with the Runtime that made it (kept alive as long as the engine)."""

    def __init__(self, engine, runtime):
        self.engine = engine
        self.runtime = runtime


def deserialize_engine(data: bytes, spec: EngineSpec) -> DeserializedEngine:
    """Deserialise plan bytes; EngineBuildError if TensorRT rejects them."""
    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if spec.dla_core is not None:
        runtime.DLA_core = int(spec.dla_core)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineBuildError('TensorRT cannot deserialise the engine (corrupt, or built by '
                               'another TensorRT version or for another GPU)')
    return DeserializedEngine(engine, runtime)


def batch_capped(profiles: Sequence[Profile], max_batch: Optional[int]) -> List[Profile]:
    """``profiles`` with no batch above ``max_batch`` (a graph that takes one frame a run,
    ModelInfo.max_batch): TensorRT cannot build a profile the graph's fixed batch rules out."""
    if not max_batch:
        return list(profiles)
    return [tuple((min(shape[0], max_batch),) + tuple(shape[1:]) for shape in profile)
            for profile in profiles]


def ensure_engine(model_path: str, precision: str = 'fp16',
                  profiles: Optional[Sequence[Profile]] = None,
                  cache_dir: Optional[str] = None, *, dla_core: Optional[int] = None,
                  workspace_mb: int = DEFAULT_WORKSPACE_MB, timing_cache: Optional[str] = None,
                  engine_path: Optional[str] = None, force: bool = False, strict: bool = True,
                  lock_timeout: float = engine_cache.DEFAULT_LOCK_TIMEOUT_S) -> CachedEngine:
    """The TensorRT engine of ``model_path``: from the cache if valid, else built now.

    ``profiles``: (min, opt, max) of (batch, height, width) per profile (default
    DEFAULT_PROFILE). ``cache_dir`` defaults to default_cache_dir(); ``engine_path``
    writes the engine there instead. The returned ``loaded`` is a DeserializedEngine.
    """
    precision = resolve_precision(model_path, precision, strict)
    profiles = batch_capped(profiles or [DEFAULT_PROFILE],
                            load_model_info(model_path).max_batch)
    cache_dir = cache_dir or default_cache_dir()
    environment = device_environment()

    def build(path: str, spec: EngineSpec) -> bytes:
        cache_file = timing_cache or timing_cache_path(cache_dir, spec)
        return build_engine_bytes(path, spec, workspace_mb=workspace_mb,
                                  timing_cache=cache_file)

    return engine_cache.get_or_build_engine(
        model_path, precision, profiles, cache_dir, build_fn=build, environment=environment,
        load_fn=deserialize_engine, dla_core=dla_core, engine_path=engine_path, force=force,
        lock_timeout=lock_timeout, extra_sidecar={'workspace_mb': int(workspace_mb)})


def load_engine_runner(onnx_path: str, *, precision: str = 'fp32',
                       engine_cache_dir: Optional[str] = None, info=None,
                       profiles: Optional[Sequence[Profile]] = None,
                       dla_core: Optional[int] = None):
    """The TensorRT backend's hook: an EngineRunner for ``onnx_path``, building the engine
    into the cache on first use. Profiles: ``profiles``, else $SEG_PERCEPTION_TRT_SHAPES,
    else DEFAULT_PROFILE."""
    from seg_perception.runtime.trt.runner import EngineRunner
    cached = ensure_engine(onnx_path, precision, profiles or profiles_from_env(),
                           engine_cache_dir, dla_core=dla_core, strict=False)
    LOG.info('TensorRT engine %s (%s)', cached.path,
             f'built in {cached.build_seconds:.0f} s' if cached.built else 'from the cache')
    description = {'precision': cached.spec.precision, 'engine_key': cached.key[:16],
                   'engine_built_now': cached.built, 'trt_version': cached.spec.trt_version,
                   'gpu': cached.spec.gpu_name, 'dla_core': cached.spec.dla_core}
    return EngineRunner(cached.loaded.engine, import_tensorrt(), engine_path=cached.path,
                        keep_alive=cached.loaded, description=description)
