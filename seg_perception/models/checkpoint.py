"""Training checkpoints: written atomically, read without running any pickled code.

A checkpoint is a plain dict::

    {'format': 'seg_perception/checkpoint-1',
     'model': state_dict,
     'model_info': ModelInfo.to_dict(),
     # optional: 'ema' (the weight average, a state dict), 'optimizer', 'lr_scheduler',
     #           'scaler', 'iteration', 'epoch', 'config', 'rng', ...}

It holds only tensors, numbers, strings and containers, so ``torch.load`` reads it
with ``weights_only=True``: opening a model file someone sent you cannot execute
code. The model is rebuilt from ``model_info`` (architecture + arch_config), never
unpickled, for inference: with the weight average when the checkpoint has one, and
without a training-only auxiliary head (``aux``), so an export of it is the graph of the
same network trained without that head.
"""
from __future__ import annotations

import collections
import dataclasses
import inspect
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from seg_perception.errors import InvalidValueError
from seg_perception.files import replaced_atomically
from seg_perception.model_info import ModelInfo, ModelInfoError

CHECKPOINT_FORMAT = 'seg_perception/checkpoint-1'
# Builder settings that would fetch or read pretrained weights; a checkpoint already
# holds the trained weights, so rebuilding switches them off.
PRETRAINED_KEYS = ('pretrained', 'pretrained_backbone')
# The arch_config switch of a training-only auxiliary head, and the prefix of its weights.
AUX_KEY, AUX_PREFIX = 'aux', 'aux_head.'
# Prefixes that wrappers put in front of every key (DistributedDataParallel, torch.compile).
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
_PLAIN_TYPES = (str, bytes, int, float, bool, complex, type(None),
                torch.Tensor, torch.Size, torch.dtype, torch.device)

PathOrState = Union[str, os.PathLike, Mapping[str, Any]]


class CheckpointError(InvalidValueError):
    """A checkpoint cannot be read or does not fit the model asked for."""


def make_checkpoint(model: torch.nn.Module, info: ModelInfo, **extra) -> Dict[str, Any]:
    """The checkpoint dict of ``model`` described by ``info``, plus ``extra`` entries."""
    state = {'format': CHECKPOINT_FORMAT, 'model': model.state_dict(),
             'model_info': info.to_dict()}
    state.update(extra)
    return state


def _plain(value: Any, where: str) -> Any:
    """Check that ``value`` is loadable with weights_only=True; convert numpy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, ModelInfo):
        return value.to_dict()
    if isinstance(value, Mapping):
        items = ((k, _plain(v, f'{where}[{k!r}]')) for k, v in value.items())
        if isinstance(value, collections.OrderedDict):
            converted = collections.OrderedDict(items)
            if hasattr(value, '_metadata'):     # state dicts carry module versions here
                converted._metadata = value._metadata
            return converted
        return dict(items)
    if isinstance(value, (list, tuple, set)):
        converted = [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
        return type(value)(converted) if not hasattr(value, '_fields') else tuple(converted)
    hint = ' (convert it with torch.from_numpy or .tolist())' \
        if isinstance(value, np.ndarray) else ''
    raise TypeError(f'{where} holds a {type(value).__module__}.{type(value).__name__}{hint}; '
                    'a checkpoint may hold only tensors, numbers, strings and containers, '
                    'so that torch.load(weights_only=True) can read it')


def save_checkpoint(path: Union[str, os.PathLike], state: Mapping[str, Any]) -> str:
    """Write ``state`` to ``path`` atomically and return the path.

    ``state`` needs 'model' (a state dict) and 'model_info' (ModelInfo or its dict);
    'format' is added. The file is written to a temporary name in the same folder
    and renamed over ``path``, so a crash never leaves a half-written checkpoint.
    """
    path = os.fspath(path)
    missing = [k for k in ('model', 'model_info') if k not in state]
    if missing:
        raise InvalidValueError(f'checkpoint state for {path} lacks {", ".join(missing)}')
    state = _plain(dict(state), 'checkpoint')
    state['format'] = CHECKPOINT_FORMAT
    ModelInfo.from_dict(state['model_info'])      # refuse to write an unusable description
    with replaced_atomically(path, durable=True) as temp_path:
        # Through a Python file: torch.save(state, path) reports a full disk as a
        # RuntimeError from its C++ writer, a Python file as the OSError it is.
        with open(temp_path, 'wb') as stream:
            torch.save(state, stream)
    return path


def _check_format(state: Any, source: str) -> Dict[str, Any]:
    if not isinstance(state, Mapping) or 'format' not in state or 'model_info' not in state:
        raise CheckpointError(
            f'{source} is not a seg_perception checkpoint (it has no format/model_info '
            'entries); checkpoints are written by `seg-perception train`')
    if state['format'] != CHECKPOINT_FORMAT:
        raise CheckpointError(f'{source} has checkpoint format {state["format"]!r}; '
                              f'this version reads {CHECKPOINT_FORMAT!r}')
    if not isinstance(state.get('model'), Mapping):
        raise CheckpointError(f'{source} holds no model weights (no "model" state dict)')
    if 'ema' in state and not isinstance(state['ema'], Mapping):
        raise CheckpointError(f'{source}: its weight average "ema" is not a state dict')
    return dict(state)


# Lines of torch's load errors that are advice about torch.load, not about the file: the
# advice to retry with weights_only off is exactly wrong for a file we refuse to trust.
_TORCH_ADVICE = ('weights_only', 'weights only load failed', 'check the documentation',
                 'safe_globals', 'trust the source', 'file an issue')
# How torch's weights_only unpickler names a refused global, across versions:
# "Unsupported global: GLOBAL builtins.eval was not an allowed global by default",
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked",
# "Unsupported class os.system".
_REFUSED_GLOBAL = re.compile(r'unsupported (?:global|class)\W+(?:GLOBAL\s+)?([A-Za-z_][\w.]*)',
                             re.IGNORECASE)


def _last_line(exc: BaseException) -> str:
    """The informative line of torch's (often long) load error, without torch's advice."""
    text = str(exc)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not any(a in line.lower() for a in _TORCH_ADVICE)]
    return f'{type(exc).__name__}: {lines[0][:200]}' if lines else type(exc).__name__


def _refused_globals(path: str, exc: BaseException) -> list:
    """The pickle globals (functions, classes) that made weights_only refuse ``path``.

    Listed from the file's pickle without running it where torch can (zip checkpoints,
    torch >= 2.5), else read from torch's message. Empty when the file is just damaged.
    """
    lister = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    if lister is not None:
        try:
            found = sorted(lister(path))
        except Exception:  # noqa: BLE001 - damaged or legacy files: use the message
            found = []
        if found:
            return found
    return sorted(set(_REFUSED_GLOBAL.findall(str(exc))))


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU, refusing anything but tensors and plain data."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if not os.path.isfile(path):
        raise CheckpointError(f'{path} is not a file')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, EOF and storage errors come in many types
        refused = _refused_globals(path, exc)
        if refused:
            raise CheckpointError(
                f'{path} asks to run code when loaded (pickle global {", ".join(refused)}, '
                'which is not allowed: a checkpoint holds only tensors and plain data); '
                'refused to load it, nothing in it was run (unpickling it could run code)'
            ) from None
        raise CheckpointError(f'{path} is corrupt or truncated (not a readable torch '
                              f'checkpoint): {_last_line(exc)}') from None
    return _check_format(state, path)


def offline_config(architecture: str, config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` with every pretrained-weights switch the builder knows turned off."""
    from seg_perception import models
    config = dict(config)
    if architecture not in models.list_models():
        return config
    builder = models.get_builder(architecture)
    # Builders taking **config may not know the key, so only set the ones named.
    parameters = inspect.signature(builder).parameters
    for key in PRETRAINED_KEYS:
        if key in config or key in parameters:
            config[key] = False
    return config


def _strip_wrapper_prefix(weights: Mapping[str, Any]) -> Mapping[str, Any]:
    for prefix in _WRAPPER_PREFIXES:
        if weights and all(k.startswith(prefix) for k in weights):
            weights = collections.OrderedDict((k[len(prefix):], v) for k, v in weights.items())
    return weights


def _check_weights_fit(model: torch.nn.Module, weights: Mapping[str, Any], source: str,
                       architecture: str) -> None:
    """Raise CheckpointError naming the first key or shape that does not fit."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in weights:
            raise CheckpointError(f'{source}: weights do not fit {architecture}: '
                                  f'missing key {key!r}')
        given = weights[key]
        if not isinstance(given, torch.Tensor):
            raise CheckpointError(f'{source}: weight {key!r} is a {type(given).__name__}, '
                                  'not a tensor')
        if tuple(given.shape) != tuple(tensor.shape):
            raise CheckpointError(f'{source}: weights do not fit {architecture}: {key!r} has '
                                  f'shape {tuple(given.shape)}, the model expects '
                                  f'{tuple(tensor.shape)}')
    unexpected = [k for k in weights if k not in expected]
    if unexpected:
        raise CheckpointError(f'{source}: weights do not fit {architecture}: unexpected key '
                              f'{unexpected[0]!r} ({len(unexpected)} unexpected in all)')


def _without_aux_head(info: ModelInfo, weights: Mapping[str, Any]
                      ) -> Tuple[ModelInfo, Mapping[str, Any]]:
    """The description and weights of the network without its training-only aux head."""
    if not info.arch_config.get(AUX_KEY):
        return info, weights
    info = dataclasses.replace(info, arch_config=dict(info.arch_config, **{AUX_KEY: False}))
    return info, collections.OrderedDict((k, v) for k, v in weights.items()
                                         if not k.startswith(AUX_PREFIX))


def build_model_from_checkpoint(path_or_state: PathOrState, *,
                                expect_architecture: Optional[str] = None,
                                expect_num_classes: Optional[int] = None,
                                ) -> Tuple[torch.nn.Module, ModelInfo]:
    """Rebuild the model a checkpoint describes and load its weights.

    Returns ``(model in eval mode on the CPU, ModelInfo)``: the weight average ("ema")
    when the checkpoint holds one, and no auxiliary head. ``expect_architecture``
    and ``expect_num_classes`` turn a checkpoint of another model into a clear error
    instead of a pile of mismatching weights.
    """
    from seg_perception.models import build_model
    if isinstance(path_or_state, Mapping):
        source = 'checkpoint'
        state = _check_format(path_or_state, source)
    else:
        source = os.fspath(path_or_state)
        state = load_checkpoint(source)
    try:
        info = ModelInfo.from_dict(state['model_info'])
    except (ModelInfoError, TypeError) as exc:
        raise CheckpointError(f'{source}: unusable model description: {exc}') from None
    if expect_architecture is not None and info.architecture != expect_architecture:
        raise CheckpointError(f'{source} holds a {info.architecture} model, '
                              f'expected {expect_architecture}')
    if expect_num_classes is not None and info.num_classes != int(expect_num_classes):
        raise CheckpointError(f'{source} predicts {info.num_classes} classes, '
                              f'expected {int(expect_num_classes)}')
    weights = _strip_wrapper_prefix(state['ema'] if 'ema' in state else state['model'])
    info, weights = _without_aux_head(info, weights)
    config = offline_config(info.architecture, info.arch_config)
    try:
        model = build_model(info.architecture, info.num_classes, **config)
    except KeyError as exc:
        raise CheckpointError(f'{source}: {exc.args[0] if exc.args else exc}') from None
    except TypeError as exc:
        raise CheckpointError(f'{source}: cannot rebuild {info.architecture} from its '
                              f'arch_config {info.arch_config}: {exc}') from None
    _check_weights_fit(model, weights, source, info.architecture)
    model.load_state_dict(weights, strict=True)
    model.eval()
    return model, info
