"""Replacing the node's model while it runs, without rclpy.

A swap has two halves. :func:`load_pipeline` loads and checks the new pipeline (the
TensorRT engine build included) while the worker keeps segmenting with the old one;
any failure becomes a :class:`SwapRefused` naming the cause, and nothing of the
running node has changed. :class:`PipelineHandover` then passes the new pipeline to
the worker thread, which takes it between two batches: no batch ever runs on a
half-replaced pipeline or publishes through half-replaced outputs.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Tuple

from seg_perception.errors import InvalidValueError


class SwapRefused(InvalidValueError):
    """The requested model cannot replace the running one (the message says why)."""


def load_pipeline(config, factory: Callable[[Any], Any], log: Callable[[str], None],
                  check: Optional[Callable[[Any], None]] = None):
    """``factory(config)``, then ``check(pipeline)``; SwapRefused with the reason if either
    fails. ``log`` gets the progress lines."""
    log(f'model swap: loading {config.model_path} (backend {config.backend}, precision '
        f'{config.precision})')
    try:
        pipeline = factory(config)
    except Exception as exc:  # noqa: BLE001 - any loader/backend failure refuses the swap
        raise SwapRefused(f'cannot use model {config.model_path}: {exc}') from None
    if check is not None:
        try:
            check(pipeline)
        except InvalidValueError as exc:
            raise SwapRefused(f'cannot use model {config.model_path}: {exc}') from None
    described = pipeline.describe()
    log(f'model swap: loaded {config.model_path} ({described["name"]}, '
        f'{described["precision"]})')
    return pipeline


class PipelineHandover:
    """At most one pipeline waiting to replace the running one; the worker takes it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: Optional[Tuple[Any, Optional[Callable[[], None]], threading.Event]] = None

    def offer(self, pipeline, on_swap: Optional[Callable[[], None]] = None) -> threading.Event:
        """Queue ``pipeline`` (replacing one not yet taken); the event is set once taken.

        ``on_swap`` runs on the taking thread right after the replacement, before the
        next batch: the place to switch whatever the results are published through.
        """
        done = threading.Event()
        with self._lock:
            self._pending = (pipeline, on_swap, done)
        return done

    def take(self, install: Callable[[Any], None]) -> bool:
        """If a pipeline waits: ``install(pipeline)``, its ``on_swap``, signal; else False."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is None:
                return False
            pipeline, on_swap, done = pending
            try:
                install(pipeline)
                if on_swap is not None:
                    on_swap()
            finally:
                done.set()
        return True
