"""A small least-recently-used cache keyed on values: geometry is computed once per
(camera, transform, size) and reused until one of them changes."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

Value = TypeVar('Value')


class LruCache:
    """At most ``size`` entries; the least recently used one goes first."""

    def __init__(self, size: int = 8):
        self.size = max(1, int(size))
        self._entries: 'OrderedDict[Hashable, object]' = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Value]) -> Value:
        """The value for ``key``, made by ``make()`` on a miss."""
        try:
            self._entries.move_to_end(key)
            return self._entries[key]
        except KeyError:
            pass
        value = make()
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
