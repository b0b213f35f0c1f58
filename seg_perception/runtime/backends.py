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
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from seg_perception.choices import PRECISIONS, backend_name, check_choice
from seg_perception.errors import InvalidValueError
from seg_perception.model_info import ModelInfo, load_model_info, resolve_model_path
from seg_perception.runtime.backend import Backend
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

LOG = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.ckpt')


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
    choice and the reason (also in ``describe()['reason']``). ``precision``: fp32,
    fp16 or int8 (GPU backends; ONNX Runtime on the CPU runs the file's own
    precision, int8 for a quantised file). ``threads``: CPU intra-op threads.
    ``options`` go to the PyTorch backend (device, output_resolution, with_confidence).
    Raises FileNotFoundError for a missing file, ModelInfoError for a file without
    seg_perception metadata or one that is not ONNX, ValueError for a bad choice.
    """
    backend = backend_name(backend)
    check_choice('precision', precision, PRECISIONS)
    model_path = resolve_model_path(model_path)
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
        return OnnxRuntimeBackend(model_path, info, 'cpu', _precision_to_run(info, precision),
                                  threads, reason='asked for')
    return _auto_backend(model_path, info, precision, threads, engine_cache_dir)


def _precision_to_run(info: ModelInfo, precision: str) -> str:
    """ONNX Runtime runs the file's precision: fp32 (the default) asked of an int8 file is fine."""
    return info.precision if precision == 'fp32' else precision


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
                                        info.precision, threads,
                                        reason='auto: ' + '; '.join(skipped))
            LOG.info('backend: %s, %s', chosen.name, chosen.reason)
            return chosen
        except ValueError as exc:
            skipped.append(f'ONNX Runtime CUDA failed: {exc}')
    file_precision = info.precision
    if precision not in ('fp32', file_precision):
        skipped.append(f'{precision} needs a GPU backend or a quantised file; '
                       f'running the file\'s {file_precision}')
    chosen = OnnxRuntimeBackend(model_path, info, 'cpu', file_precision, threads,
                                reason='auto: ' + '; '.join(skipped))
    LOG.info('backend: onnxruntime CPU (%d threads, %s); %s', chosen.threads, file_precision,
             chosen.reason)
    return chosen
