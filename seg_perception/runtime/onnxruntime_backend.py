"""ONNX Runtime as a backend: CPU, CUDA or TensorRT execution provider."""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.model_info import ModelInfo
from seg_perception.runtime.backend import Backend, check_batch

LOG = logging.getLogger(__name__)

# A vehicle computer runs more than this node: leave cores to the rest of the stack.
MAX_DEFAULT_THREADS = 8
# Preallocated outputs are kept for this many input shapes (cameras × resolutions).
_MAX_BOUND_SHAPES = 8


def physical_core_count() -> int:
    """Physical cores this process may run on (hyper-threads counted once)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:            # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        path = f'/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list'
        try:
            with open(path) as stream:
                cores.add(stream.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def allowed_cpu_count() -> int:
    """Logical CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:            # not Linux
        return os.cpu_count() or 1


def inference_threads(asked: Optional[int]) -> int:
    """Intra-op threads for ``asked`` (None or 0: the default), never more than the CPUs
    this process may use: more threads than cores only queue for them."""
    if not asked:
        return default_num_threads()
    cpus = allowed_cpu_count()
    if int(asked) > cpus:
        LOG.warning('threads: %d asked, this process may use %d CPUs; using %d',
                    int(asked), cpus, cpus)
        return cpus
    return int(asked)


def default_num_threads() -> int:
    """Intra-op threads for the CPU backend: physical cores, at most MAX_DEFAULT_THREADS.

    More threads than physical cores slows convolutions down (hyper-threads share
    the vector units), and on a 2- to 12-core vehicle CPU other nodes need cores too.
    """
    return max(1, min(physical_core_count(), MAX_DEFAULT_THREADS))


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session: CPU, CUDA or TensorRT execution provider.

    Graph optimisation 'all', sequential execution, ``threads`` intra-op threads
    (default: physical cores, capped). Outputs are written through IOBinding into
    arrays preallocated per input shape, so a steady stream of frames allocates
    no output memory. Idle worker threads do not spin (``spin=False``): on a CPU
    shared with other nodes spinning threads steal the cores the OpenCV stages
    and everyone else need (benchmarks/DESIGN.md).
    """

    PROVIDERS = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider',
                 'tensorrt': 'TensorrtExecutionProvider'}

    def __init__(self, model_path: str, info: ModelInfo, provider: str = 'cpu',
                 precision: Optional[str] = None, threads: Optional[int] = None,
                 engine_cache_dir: Optional[str] = None, reason: str = '',
                 spin: bool = False):
        import onnxruntime as ort
        super().__init__(info, model_path, reason)
        if provider not in self.PROVIDERS:
            raise InvalidValueError(f'provider must be one of {sorted(self.PROVIDERS)}, got '
                                    f'{provider!r}')
        available = ort.get_available_providers()
        if self.PROVIDERS[provider] not in available:
            raise InvalidValueError(f'ONNX Runtime has no {self.PROVIDERS[provider]} here '
                                    f'(available: {", ".join(available)}); install '
                                    'onnxruntime-gpu for CUDA/TensorRT')
        file_precision = info.precision
        precision = precision or file_precision
        if provider != 'tensorrt' and precision != file_precision:
            raise InvalidValueError(
                f'ONNX Runtime {provider.upper()} runs the precision stored in the model file '
                f'({file_precision} for {model_path}), not {precision}; for int8 quantise the '
                'model (seg-perception quantize), for fp16 use a TensorRT backend')
        if precision == 'int8' and file_precision != 'int8':
            # TensorRT builds int8 from explicit Q/DQ nodes only: without them the TensorRT EP
            # would fall back to implicit calibration, which needs a table nobody made.
            raise InvalidValueError(f'int8 needs a quantised (QDQ) model; {model_path} is '
                                    f'{file_precision} (make one with seg-perception quantize)')
        self.threads = inference_threads(threads)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        for pool in ('intra_op', 'inter_op'):
            options.add_session_config_entry(f'session.{pool}.allow_spinning', str(int(spin)))
        providers: List = [self.PROVIDERS['cpu']]
        if provider == 'cuda':
            providers.insert(0, (self.PROVIDERS['cuda'], {'device_id': 0}))
        elif provider == 'tensorrt':
            cache = engine_cache_dir or os.path.join(
                os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                'seg_perception', 'ort_tensorrt')
            os.makedirs(cache, exist_ok=True)
            providers[:0] = [(self.PROVIDERS['tensorrt'], {
                'device_id': 0, 'trt_fp16_enable': precision in ('fp16', 'int8'),
                'trt_int8_enable': precision == 'int8',
                'trt_engine_cache_enable': True, 'trt_engine_cache_path': cache}),
                (self.PROVIDERS['cuda'], {'device_id': 0})]
        try:
            self.session = ort.InferenceSession(model_path, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InvalidValueError(f'ONNX Runtime cannot load {model_path}: {exc}') from None
        active = self.session.get_providers()
        if active[0] != self.PROVIDERS[provider]:
            raise InvalidValueError(f'ONNX Runtime could not start {self.PROVIDERS[provider]} for '
                                    f'{model_path} (active: {", ".join(active)})')
        self.name = 'onnxruntime' if provider == 'cpu' else f'onnxruntime-{provider}'
        self.device = 'cpu' if provider == 'cpu' else 'cuda:0'
        self.precision = precision
        self._input_name = self.session.get_inputs()[0].name
        self._output_names = [o.name for o in self.session.get_outputs()]
        if 'labels' not in self._output_names:
            raise InvalidValueError(f'{model_path} has no "labels" output (outputs: '
                                    f'{self._output_names}); export it with seg-perception export')
        self._bound: Dict[Tuple[int, ...], tuple] = {}

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        images = check_batch(images)
        bound = self._bound.get(images.shape)
        if bound is None:
            # First batch of this shape: a plain run tells the output shapes; later
            # batches write into arrays of those shapes through IOBinding.
            results = self.session.run(self._output_names, {self._input_name: images})
            if len(self._bound) >= _MAX_BOUND_SHAPES:
                self._bound.clear()
            binding = self.session.io_binding()
            buffers = {name: np.empty_like(array)
                       for name, array in zip(self._output_names, results)}
            for name, buffer in buffers.items():
                binding.bind_output(name, 'cpu', 0, buffer.dtype, list(buffer.shape),
                                    buffer.ctypes.data)
            self._bound[images.shape] = (binding, buffers)
            return dict(zip(self._output_names, results))
        binding, buffers = bound
        binding.bind_cpu_input(self._input_name, images)
        self.session.run_with_iobinding(binding)
        return dict(buffers)

    def inputs(self) -> List[dict]:
        return [_describe_arg(a) for a in self.session.get_inputs()]

    def outputs(self) -> List[dict]:
        return [_describe_arg(o) for o in self.session.get_outputs()]

    def describe(self) -> dict:
        description = super().describe()
        description['providers'] = self.session.get_providers()
        description['threads'] = self.threads
        return description

    def close(self) -> None:
        self._bound.clear()
        self.session = None


def _describe_arg(arg) -> dict:
    shape = [d if isinstance(d, int) else None for d in arg.shape]
    dtype = arg.type.replace('tensor(', '').rstrip(')')
    return {'name': arg.name, 'shape': shape, 'dtype': dtype}
