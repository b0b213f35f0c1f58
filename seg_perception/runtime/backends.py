"""Choosing and loading an inference backend for an exported model.

``create_backend(..., backend='auto')`` picks TensorRT when a GPU and TensorRT
are usable, else ONNX Runtime with CUDA, else ONNX Runtime on the CPU, and logs
which and why:

* ``OnnxRuntimeBackend`` (onnxruntime_backend.py): ONNX Runtime on the CPU, or with
  the CUDA or TensorRT execution provider when the installed onnxruntime has them.
* ``TensorRTBackend`` (trt/backend.py): a TensorRT engine built and cached by
  ``seg_perception.runtime.trt`` (imported only when chosen; no torch).
* ``PyTorchBackend`` (torch_backend.py): a checkpoint run in PyTorch through the
  same graph module that export traces (development only; imports torch).

``precision='auto'`` (the default of the node and the commands) runs the fastest form
that is safe: on ONNX Runtime's CPU the INT8 form beside the model (``MODEL.cpu.int8.onnx``,
what ``seg-perception quantize --target cpu`` is documented to write, shipped for the default
model) when the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI; without them
INT8 gains little), else the file's own precision; on TensorRT fp16, or int8 for a QDQ model;
on ONNX Runtime CUDA the file's precision; on PyTorch fp32. ``describe()['precision_reason']``
says which and why.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

from seg_perception.choices import RUN_PRECISIONS, backend_name, check_choice
from seg_perception.errors import InvalidValueError
from seg_perception.model_info import ModelInfo, load_model_info, resolve_model_path
from seg_perception.runtime import cpu_features
from seg_perception.runtime.backend import Backend
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

LOG = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.ckpt')
# The INT8 form of MODEL.onnx for ONNX Runtime on the CPU, beside it.
CPU_INT8_SUFFIX = '.cpu.int8.onnx'


def _cuda_device_present() -> bool:
    """A cheap look for an NVIDIA GPU without initialising CUDA (Linux device nodes)."""
    return any(os.path.exists(p) for p in ('/dev/nvidia0', '/dev/nvhost-ctrl-gpu'))


def create_backend(model_path: Optional[str] = None, backend: str = 'auto',
                   precision: str = 'fp32', threads: Optional[int] = None,
                   engine_cache_dir: Optional[str] = None, **options) -> Backend:
    """Load ``model_path`` (exported ONNX; a checkpoint for 'pytorch'; None: the shipped model).

    ``backend``: one of choices.BACKENDS (or an alias). 'auto' picks TensorRT when
    TensorRT and a GPU are usable, else ONNX Runtime with CUDA, else ONNX Runtime on
    the CPU, and logs the
    choice and the reason (also in ``describe()['reason']``). ``precision``: auto
    (see the module's description), fp32, fp16 or int8 (GPU backends; ONNX Runtime on
    the CPU runs the file's own precision, int8 for a quantised file). ``threads``: CPU
    intra-op threads.
    ``options`` go to the PyTorch backend (device, output_resolution, with_confidence).
    Raises FileNotFoundError for a missing file, ModelInfoError for a file without
    seg_perception metadata or one that is not ONNX, ValueError for a bad choice.
    """
    backend = backend_name(backend)
    check_choice('precision', precision, RUN_PRECISIONS)
    model_path = resolve_model_path(model_path)
    is_checkpoint = model_path.lower().endswith(CHECKPOINT_SUFFIXES)
    if backend == 'pytorch':
        from seg_perception.runtime.torch_backend import PyTorchBackend
        chosen = PyTorchBackend(model_path, precision=_or(precision, 'fp32'), threads=threads,
                                reason='asked for', **options)
        return _noted(chosen, precision, 'auto: fp32 in PyTorch')
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
        chosen = trt_backend.TensorRTBackend(model_path, info, _or(precision, _gpu(info)),
                                             engine_cache_dir, 'asked for')
        return _noted(chosen, precision, _gpu_reason(info))
    if backend == 'onnxruntime-tensorrt':
        chosen = OnnxRuntimeBackend(model_path, info, 'tensorrt', _or(precision, _gpu(info)),
                                    threads, engine_cache_dir, reason='asked for')
        return _noted(chosen, precision, _gpu_reason(info))
    if backend == 'onnxruntime-cuda':
        chosen = OnnxRuntimeBackend(model_path, info, 'cuda', _or(precision, info.precision),
                                    threads, engine_cache_dir, reason='asked for')
        return _noted(chosen, precision, f'auto: the file\'s {info.precision} on CUDA')
    if backend in ('onnxruntime', 'onnxruntime-cpu'):
        if precision == 'auto':
            return _auto_cpu(model_path, info, threads, 'asked for')
        return OnnxRuntimeBackend(model_path, info, 'cpu', _precision_to_run(info, precision),
                                  threads, reason='asked for')
    return _auto_backend(model_path, info, precision, threads, engine_cache_dir)


def _or(precision: str, auto: str) -> str:
    """``precision``, or ``auto`` where 'auto' was asked for."""
    return auto if precision == 'auto' else precision


def _noted(chosen: Backend, precision: str, why: str) -> Backend:
    """``chosen``, with why its precision was picked when 'auto' picked it."""
    if precision == 'auto':
        chosen.precision_reason = why
    return chosen


def _gpu(info: ModelInfo) -> str:
    """What 'auto' runs on TensorRT: int8 from a quantised (QDQ) model, fp16 otherwise."""
    return 'int8' if info.precision == 'int8' else 'fp16'


def _gpu_reason(info: ModelInfo) -> str:
    return ('auto: a quantised (QDQ) model' if info.precision == 'int8'
            else 'auto: fp16 on TensorRT')


def _precision_to_run(info: ModelInfo, precision: str) -> str:
    """ONNX Runtime runs the file's precision: fp32 asked of an int8 file is fine."""
    return info.precision if precision == 'fp32' else precision


def cpu_int8_form(model_path: str) -> str:
    """Where the INT8 form of ``model_path`` for ONNX Runtime on the CPU would be."""
    stem = model_path[:-len('.onnx')] if model_path.lower().endswith('.onnx') else model_path
    return stem + CPU_INT8_SUFFIX


def auto_cpu_precision(model_path: str, info: ModelInfo) -> Tuple[str, ModelInfo, str]:
    """(model file, its ModelInfo, why) for precision 'auto' on ONNX Runtime's CPU.

    The INT8 form beside the model where the CPU has int8 dot-product instructions and the
    form fits the model (same classes, input size and outputs); the model itself otherwise.
    """
    if info.precision != 'fp32':
        return model_path, info, f'auto: the file is {info.precision}'
    int8_path = cpu_int8_form(model_path)
    name = os.path.basename(int8_path)
    if not os.path.isfile(int8_path):
        return model_path, info, f'auto: no {name} beside the model'
    instructions = cpu_features.int8_dot_product()
    if instructions is None:
        return model_path, info, (f'auto: this CPU has no int8 dot-product instructions '
                                  f'(AVX512-VNNI, AVX-VNNI), so not {name}')
    try:
        int8_info = load_model_info(int8_path)
    except (OSError, ValueError) as exc:
        return model_path, info, f'auto: {name} cannot be used ({exc})'
    differences = [what for what, a, b in (
        ('precision', int8_info.precision, 'int8'),
        ('classes', int8_info.class_names, info.class_names),
        ('input size', int8_info.input_size, info.input_size),
        ('outputs', list(int8_info.outputs), list(info.outputs)),
        ('output resolution', int8_info.output_resolution, info.output_resolution)) if a != b]
    if differences:
        return model_path, info, (f'auto: {name} does not fit the model '
                                  f'({", ".join(differences)} differ)')
    return int8_path, int8_info, f'auto: {instructions}, {name}'


def _auto_cpu(model_path: str, info: ModelInfo, threads: Optional[int],
              reason: str) -> OnnxRuntimeBackend:
    """ONNX Runtime on the CPU at precision 'auto'; the choice is in precision_reason."""
    model_path, info, why = auto_cpu_precision(model_path, info)
    chosen = OnnxRuntimeBackend(model_path, info, 'cpu', info.precision, threads, reason=reason)
    chosen.precision_reason = why
    # DEBUG: whoever runs the backend reports it (the pipeline's start-up line, evaluate's
    # "ran" line, the node's summary); at INFO the node's start-up said it three times.
    LOG.debug('precision: %s (%s)', info.precision, why)
    return chosen


def _auto_backend(model_path: str, info: ModelInfo, precision: str, threads: Optional[int],
                  engine_cache_dir: Optional[str]) -> Backend:
    import onnxruntime as ort

    from seg_perception.runtime.trt import backend as trt_backend
    skipped = []
    usable, why = trt_backend.tensorrt_status()
    if usable:
        reason = f'auto: TensorRT usable ({why})'
        LOG.info('backend: tensorrt %s, %s', _or(precision, _gpu(info)), reason)
        chosen = trt_backend.TensorRTBackend(model_path, info, _or(precision, _gpu(info)),
                                             engine_cache_dir, reason)
        return _noted(chosen, precision, _gpu_reason(info))
    skipped.append(f'TensorRT not used: {why}')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        skipped.append('ONNX Runtime has no CUDA provider (onnxruntime-gpu not installed)')
    elif not _cuda_device_present():
        skipped.append('ONNX Runtime CUDA not used: no NVIDIA GPU found')
    else:
        try:
            chosen = OnnxRuntimeBackend(model_path, info, 'cuda',
                                        info.precision, threads,
                                        reason='auto: ' + '; '.join(skipped))
            LOG.info('backend: %s, %s', chosen.name, chosen.reason)
            return _noted(chosen, precision, f'auto: the file\'s {info.precision} on CUDA')
        except ValueError as exc:
            skipped.append(f'ONNX Runtime CUDA failed: {exc}')
    if precision == 'auto':
        chosen = _auto_cpu(model_path, info, threads, 'auto: ' + '; '.join(skipped))
        LOG.info('backend: onnxruntime CPU (%d threads); %s', chosen.threads, chosen.reason)
        return chosen
    file_precision = info.precision
    if precision not in ('fp32', file_precision):
        skipped.append(f'{precision} needs a GPU backend or a quantised file; '
                       f'running the file\'s {file_precision}')
    chosen = OnnxRuntimeBackend(model_path, info, 'cpu', file_precision, threads,
                                reason='auto: ' + '; '.join(skipped))
    LOG.info('backend: onnxruntime CPU (%d threads, %s); %s', chosen.threads, file_precision,
             chosen.reason)
    return chosen
