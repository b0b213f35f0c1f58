"""The network family, built by name: ``build_model('deeplabv3plus', 19, backbone=...)``.

Each architecture module registers its builders with ``@register_model``. A
builder takes ``num_classes`` and keyword-only settings and returns a
``SegmentationModel``.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List

from seg_perception.errors import InvalidValueError, UnknownNameError
from seg_perception.models.base import SegmentationModel

_REGISTRY: Dict[str, Callable[..., SegmentationModel]] = {}
_MODULES = ('deeplab', 'fcn', 'unet', 'tiramisu', 'context')
_loaded = False


def register_model(name: str):
    """Decorator: make a builder available to build_model under ``name``."""
    def wrap(builder):
        if name in _REGISTRY:
            raise InvalidValueError(f'model {name!r} registered twice')
        _REGISTRY[name] = builder
        return builder
    return wrap


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in _MODULES:
            importlib.import_module(f'{__name__}.{module}')
        _loaded = True


def list_models() -> List[str]:
    """Names of every registered architecture, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **config) -> SegmentationModel:
    """Build an architecture by name; an unknown name lists the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise UnknownNameError(f'unknown architecture {name!r}; known: '
                               f'{", ".join(sorted(_REGISTRY))}')
    if int(num_classes) < 2:
        raise InvalidValueError(f'num_classes must be at least 2, got {num_classes}')
    return _REGISTRY[name](num_classes=int(num_classes), **config)


__all__ = ['SegmentationModel', 'build_model', 'list_models', 'register_model']
