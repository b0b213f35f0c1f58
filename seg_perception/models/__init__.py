"""The network family, built by name: ``build_model('deeplabv3plus', 19, backbone=...)``.

Each architecture module registers its builders with ``@register_model``. A
builder takes ``num_classes`` and keyword-only settings and returns a
``SegmentationModel``. Code that brings a network of its own for a while (a test,
a script trying out a new design) registers it with ``registered(name, builder)``,
which takes it away again when the block ends.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Callable, Dict, Iterator, List

from seg_perception.errors import InvalidValueError, UnknownNameError
from seg_perception.models.base import SegmentationModel

Builder = Callable[..., SegmentationModel]

_REGISTRY: Dict[str, Builder] = {}
_MODULES = ('deeplab', 'fcn', 'unet', 'tiramisu', 'context')
_loaded = False


def _qualified(builder: Builder) -> str:
    return f'{getattr(builder, "__module__", "?")}.{getattr(builder, "__qualname__", builder)}'


def _add(name: str, builder: Builder) -> bool:
    """Register ``builder``; False when ``name`` already holds this very builder."""
    if not callable(builder):
        raise InvalidValueError(f'model {name!r}: the builder {builder!r} is not callable')
    existing = _REGISTRY.get(name)
    if existing is builder:
        return False
    if existing is not None:
        raise InvalidValueError(f'model {name!r} registered twice: to {_qualified(existing)} '
                                f'and to {_qualified(builder)}')
    _REGISTRY[name] = builder
    return True


def register_model(name: str):
    """Decorator: make a builder available to build_model under ``name``.

    A name already registered to another builder is an InvalidValueError; registering
    the same builder again changes nothing.
    """
    def wrap(builder):
        _add(name, builder)
        return builder
    return wrap


def unregister_model(name: str) -> None:
    """Take ``name`` out of the registry; an unknown name is an UnknownNameError."""
    _load_all()
    if _REGISTRY.pop(name, None) is None:
        raise UnknownNameError(f'cannot unregister {name!r}: no such architecture')


@contextlib.contextmanager
def registered(name: str, builder: Builder) -> Iterator[str]:
    """``builder`` under ``name`` while the block runs (yields ``name``), gone afterwards.

    Inside the block ``build_model(name, ...)`` and checkpoints of the network work as
    for a built-in architecture; after it the registry is as it was before, even when
    the block raised. The built-in architectures are loaded first, so a clash with one
    is an InvalidValueError at once. A name that already holds this same builder is
    left alone (such blocks nest: the outermost one removes it); a name that holds
    another builder is an InvalidValueError.
    """
    _load_all()
    added = _add(name, builder)
    try:
        yield name
    finally:
        # Only our own entry: whatever else the block registered stays registered.
        if added and _REGISTRY.get(name) is builder:
            del _REGISTRY[name]


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


def get_builder(name: str) -> Builder:
    """The builder registered under ``name``; an unknown name lists the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise UnknownNameError(f'unknown architecture {name!r}; known: '
                               f'{", ".join(sorted(_REGISTRY))}')
    return _REGISTRY[name]


def build_model(name: str, num_classes: int, **config) -> SegmentationModel:
    """Build an architecture by name; an unknown name lists the known ones."""
    builder = get_builder(name)
    if int(num_classes) < 2:
        raise InvalidValueError(f'num_classes must be at least 2, got {num_classes}')
    return builder(num_classes=int(num_classes), **config)


__all__ = ['SegmentationModel', 'build_model', 'list_models', 'register_model', 'registered',
           'unregister_model']
