"""What a resumed run's config changed relative to its checkpoint's (logged as warnings)."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, Sequence, Tuple

LOGGER = logging.getLogger('seg_perception.training')


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Iterator[Tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def log_config_changes(old: Dict[str, Any], new: Dict[str, Any],
                       free_keys: Sequence[str]) -> None:
    """Warn about settings that differ from the checkpoint's (the run is then not exact)."""
    before, after = dict(_flatten(old)), dict(_flatten(new))
    changed = sorted(k for k in set(before) | set(after)
                     if k not in free_keys and before.get(k) != after.get(k))
    for key in changed:
        LOGGER.warning('resume: %s changed from %r to %r; the run will differ from an '
                       'uninterrupted one', key, before.get(key), after.get(key))
