"""Inference backends: one exported model, a batch of uint8 RGB frames in, class ids out.

Every backend has the same small interface (``Backend``): ``run(images)`` takes a
C-contiguous uint8 N×H×W×3 RGB batch and returns ``{'labels': uint8 N×h×w}``
(plus ``'confidence'`` when the model has it); ``describe()`` says what runs
where and why it was chosen. The exported graph does all preprocessing, so a
backend only moves bytes.

* ``OnnxRuntimeBackend``: ONNX Runtime on the CPU, or with the CUDA or TensorRT
  execution provider when the installed onnxruntime has them.
* ``TensorRTBackend`` (trt_backend.py): a TensorRT engine built and cached by
  ``seg_perception.runtime.trt.engine`` (imported only when chosen; no torch).
* ``PyTorchBackend`` (torch_backend.py): a checkpoint run in PyTorch through the
  same graph module that export traces (development only; imports torch).

``create_backend(..., backend='auto')`` picks TensorRT when a GPU and TensorRT
are usable, else ONNX Runtime with CUDA, else ONNX Runtime on the CPU, and logs
which and why. Nothing here imports torch unless the PyTorch backend is asked for.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.model_info import ModelInfo, default_model_path, load_model_info

LOG = logging.getLogger(__name__)

BACKENDS = ('auto', 'onnxruntime', 'onnxruntime-cpu', 'onnxruntime-cuda',
            'onnxruntime-tensorrt', 'tensorrt', 'pytorch')
PRECISIONS = ('fp32', 'fp16', 'int8')
CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.ckpt')
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


def default_num_threads() -> int:
    """Intra-op threads for the CPU backend: physical cores, at most MAX_DEFAULT_THREADS.

    More threads than physical cores slows convolutions down (hyper-threads share
    the vector units), and on a 2- to 12-core vehicle CPU other nodes need cores too.
    """
    return max(1, min(physical_core_count(), MAX_DEFAULT_THREADS))


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
    max_batch: Optional[int] = None     # most frames per run() call; None: any number

    def __init__(self, info: ModelInfo, model_path: str, reason: str = ''):
        self.info = info
        self.model_path = model_path
        self.reason = reason

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Segment a uint8 N×H×W×3 RGB batch.

        Returns 'labels' (uint8 N×h×w) and, if the model has it, 'confidence'.
        The arrays may be buffers the backend reuses: valid until the next call
        with the same input shape; copy what you keep.
        """
        raise NotImplementedError

    def inputs(self) -> List[dict]:
        """Name, shape (None for dynamic) and dtype of each model input."""
        return [{'name': 'images', 'shape': [None, None, None, 3], 'dtype': 'uint8'}]

    def outputs(self) -> List[dict]:
        """Name, shape and dtype of each model output."""
        return [{'name': name, 'shape': [None, None, None], 'dtype': 'uint8'}
                for name in self.info.outputs]

    def describe(self) -> dict:
        """Name, device, precision, inputs/outputs, the model and why this backend."""
        return {'name': self.name, 'device': self.device, 'precision': self.precision,
                'model': self.model_path, 'architecture': self.info.architecture,
                'network_input': list(self.info.input_size),
                'output_resolution': self.info.output_resolution,
                'inputs': self.inputs(), 'outputs': self.outputs(), 'reason': self.reason}

    def close(self) -> None:
        """Release the session or engine."""


def _model_precision(path: str) -> Optional[str]:
    """'int8' for a quantised (QDQ / integer-op) graph, 'fp16' for half weights, else 'fp32'.

    None when the onnx package (optional on the vehicle) is not there to look.
    """
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(path, load_external_data=False)
    int8_ops = {'QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger',
                'MatMulInteger', 'QLinearMatMul'}
    if any(node.op_type in int8_ops for node in model.graph.node):
        return 'int8'
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return 'fp16'
    return 'fp32'


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session: CPU, CUDA or TensorRT execution provider.

    Graph optimisation 'all', sequential execution, ``threads`` intra-op threads
    (default: physical cores, capped). Outputs are written through IOBinding into
    arrays preallocated per input shape, so a steady stream of frames allocates
    no output memory. Idle worker threads do not spin (``spin=False``): on a CPU
    shared with other nodes spinning threads steal the cores the OpenCV stages
    and everyone else need (measured on 2 shared cores: 430 ms per 1080p frame
    without spinning, 690-810 ms with).
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
        file_precision = _model_precision(model_path)
        precision = precision or file_precision or 'fp32'
        if provider != 'tensorrt' and file_precision and precision != file_precision:
            raise InvalidValueError(
                f'ONNX Runtime {provider.upper()} runs the precision stored in the model file '
                f'({file_precision} for {model_path}), not {precision}; for int8 quantise the '
                'model (seg-perception quantize), for fp16 use a TensorRT backend')
        if precision == 'int8' and file_precision != 'int8':
            # TensorRT builds int8 from explicit Q/DQ nodes only: without them the TensorRT EP
            # would fall back to implicit calibration, which needs a table nobody made.
            found = (f'is {file_precision}' if file_precision else
                     'cannot be checked for Q/DQ nodes without the onnx package')
            raise InvalidValueError(f'int8 needs a quantised (QDQ) model; {model_path} {found} '
                                    '(make one with seg-perception quantize)')
        self.threads = int(threads) if threads else default_num_threads()
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


def _cuda_device_present() -> bool:
    """A cheap look for an NVIDIA GPU without initialising CUDA (Linux device nodes)."""
    return any(os.path.exists(p) for p in ('/dev/nvidia0', '/dev/nvhost-ctrl-gpu'))


def _resolve_model_path(model_path: Optional[str]) -> str:
    if model_path is None:
        model_path = default_model_path()
        if model_path is None:
            raise FileNotFoundError('no model given and this install ships no default model '
                                    '(seg_perception/assets/default_model.onnx)')
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f'model file not found: {model_path}')
    return model_path


def create_backend(model_path: Optional[str] = None, backend: str = 'auto',
                   precision: str = 'fp32', threads: Optional[int] = None,
                   engine_cache_dir: Optional[str] = None, **options) -> Backend:
    """Load ``model_path`` (an exported ONNX file; a checkpoint for 'pytorch') in a backend.

    ``backend``: one of BACKENDS. 'auto' picks TensorRT when TensorRT and a GPU are
    usable, else ONNX Runtime with CUDA, else ONNX Runtime on the CPU, and logs the
    choice and the reason (also in ``describe()['reason']``). ``precision``: fp32,
    fp16 or int8 (GPU backends; ONNX Runtime on the CPU runs the file's own
    precision, int8 for a quantised file). ``threads``: CPU intra-op threads.
    ``options`` go to the PyTorch backend (device, output_resolution, with_confidence).
    Raises FileNotFoundError for a missing file, ModelInfoError for a file without
    seg_perception metadata or one that is not ONNX, ValueError for a bad choice.
    """
    if backend not in BACKENDS:
        raise InvalidValueError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    if precision not in PRECISIONS:
        raise InvalidValueError(f'unknown precision {precision!r}; choose one of '
                                f'{", ".join(PRECISIONS)}')
    model_path = _resolve_model_path(model_path)
    is_checkpoint = model_path.lower().endswith(CHECKPOINT_SUFFIXES)
    if backend == 'pytorch':
        from seg_perception.runtime.torch_backend import PyTorchBackend
        return PyTorchBackend(model_path, precision=precision, threads=threads,
                              reason='asked for', **options)
    if options:
        raise InvalidValueError(f'options {sorted(options)} apply to the pytorch backend only')
    if is_checkpoint:
        raise InvalidValueError(f'{model_path} is a checkpoint: export it with `seg-perception '
                                'export` for this backend, or use the pytorch backend')
    info = load_model_info(model_path)
    if backend == 'tensorrt':
        from seg_perception.runtime.trt import backend as trt_backend
        usable, why = trt_backend.tensorrt_status()
        if not usable:
            raise InvalidValueError(f'the TensorRT backend is not usable: {why}')
        return trt_backend.TensorRTBackend(model_path, info, precision, engine_cache_dir,
                                           'asked for')
    if backend in ('onnxruntime-cuda', 'onnxruntime-tensorrt'):
        provider = backend.split('-')[1]
        return OnnxRuntimeBackend(model_path, info, provider, precision, threads,
                                  engine_cache_dir, reason='asked for')
    if backend in ('onnxruntime', 'onnxruntime-cpu'):
        return OnnxRuntimeBackend(model_path, info, 'cpu', _precision_to_run(model_path, precision),
                                  threads, reason='asked for')
    return _auto_backend(model_path, info, precision, threads, engine_cache_dir)


def _precision_to_run(model_path: str, precision: str) -> str:
    """ONNX Runtime runs the file's precision: fp32 (the default) asked of an int8 file is fine."""
    file_precision = _model_precision(model_path)
    return file_precision if precision == 'fp32' and file_precision else precision


def _auto_backend(model_path: str, info: ModelInfo, precision: str, threads: Optional[int],
                  engine_cache_dir: Optional[str]) -> Backend:
    import onnxruntime as ort

    from seg_perception.runtime.trt import backend as trt_backend
    skipped = []
    usable, why = trt_backend.tensorrt_status()
    if usable:
        reason = f'auto: TensorRT usable ({why})'
        LOG.info('backend: tensorrt %s, %s', precision, reason)
        return trt_backend.TensorRTBackend(model_path, info, precision, engine_cache_dir,
                                           reason)
    skipped.append(f'TensorRT not used: {why}')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        skipped.append('ONNX Runtime has no CUDA provider (onnxruntime-gpu not installed)')
    elif not _cuda_device_present():
        skipped.append('ONNX Runtime CUDA not used: no NVIDIA GPU found')
    else:
        try:
            chosen = OnnxRuntimeBackend(model_path, info, 'cuda',
                                        _precision_to_run(model_path, 'fp32'), threads,
                                        reason='auto: ' + '; '.join(skipped))
            LOG.info('backend: %s, %s', chosen.name, chosen.reason)
            return chosen
        except ValueError as exc:
            skipped.append(f'ONNX Runtime CUDA failed: {exc}')
    file_precision = _precision_to_run(model_path, 'fp32')
    if precision not in ('fp32', file_precision):
        skipped.append(f'{precision} needs a GPU backend or a quantised file; '
                       f'running the file\'s {file_precision}')
    chosen = OnnxRuntimeBackend(model_path, info, 'cpu', file_precision, threads,
                                reason='auto: ' + '; '.join(skipped))
    LOG.info('backend: onnxruntime CPU (%d threads, %s); %s', chosen.threads, file_precision,
             chosen.reason)
    return chosen
