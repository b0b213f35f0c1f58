"""The keys of the config sections that builders read, checked before a run creates anything.

``model:`` holds ``architecture`` and the keyword arguments of that architecture's
builder; ``data:`` the keys of seg_perception.data for the chosen dataset. A misspelt key
would otherwise be ignored (data) or end in a TypeError from the builder (model); here it is
a ConfigError naming the key and the closest known one.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Dict, List, Optional

from seg_perception import models
from seg_perception.config import ConfigError, check_keys
from seg_perception.data import label_space_for_config
from seg_perception.training.distillation import check_distill_section

_KEYWORDS = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _keyword_names(function) -> Optional[List[str]]:
    """The keyword arguments ``function`` names, or None when it also takes ``**kwargs``."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):      # a builtin without a signature: nothing to check
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in _KEYWORDS and p.name != 'self']


def _forwarded_to(builder) -> Optional[type]:
    """The class a ``build(num_classes, **config)`` builder passes its settings to: the
    class its return annotation names (``-> UNet``), when that resolves to a class."""
    try:
        returned = inspect.signature(builder, eval_str=True).return_annotation
    except (NameError, SyntaxError, TypeError, ValueError):
        return None
    return returned if inspect.isclass(returned) else None


def model_keys(architecture: str) -> Optional[List[str]]:
    """The keys a ``model:`` section for ``architecture`` may hold, or None when unknown.

    The builder's keyword arguments; a builder that takes ``**config`` and forwards it to
    the class it returns contributes that class's keyword arguments.
    """
    builder = models.get_builder(architecture)
    names = _keyword_names(builder)
    if names is None:
        target = _forwarded_to(builder) if not inspect.isclass(builder) else None
        if target is None:
            return None
        forwarded = _keyword_names(target.__init__)
        if forwarded is None:
            return None
        own = [p.name for p in inspect.signature(builder).parameters.values()
               if p.kind in _KEYWORDS]
        names = own + [n for n in forwarded if n not in own]
    return ['architecture'] + [n for n in names if n != 'num_classes']


def _check_architecture(architecture: str) -> None:
    known = models.list_models()
    if architecture not in known:
        close = difflib.get_close_matches(architecture, known, n=1)
        hint = f' (did you mean {close[0]}?)' if close else ''
        raise ConfigError(f'model.architecture {architecture!r} is not an architecture{hint}; '
                          f'known: {", ".join(known)}')


def check_config_keys(config: Dict[str, Any]) -> None:
    """Check the model: and data: sections and train.distill of a loaded config (no disk
    access)."""
    model = config['model']
    _check_architecture(model['architecture'])
    known = model_keys(model['architecture'])
    if known is not None:
        check_keys(model, known, 'model')
    label_space_for_config(config['data'])          # checks the data keys, dataset, classes
    check_distill_section(config['train'].get('distill'))
