"""Progress lines while TensorRT builds an engine (TensorRT 10's IProgressMonitor).

A build takes from seconds (timing cache warm) to over an hour (a Jetson, no cache);
without a monitor the builder says nothing meanwhile. TensorRT reports nested phases
("Building engine" > "Tactic selection" > one per layer...), each of N steps. Every
top-level phase is logged when it starts and ends; nested phases and steps are
logged at most once per ``interval_s``, each line with the time since the build
began, e.g. ``TensorRT build 42.0 s: Building engine > Tactic selection: step 17/63``.

:class:`BuildProgress` holds that logic as a plain object (tested without TensorRT);
:func:`progress_monitor` wraps it in the ``trt.IProgressMonitor`` subclass the builder
config takes. Lines go to this module's logger when a handler takes them (the command
line configures logging; the node forwards the core's records to its ROS log,
``ros/core_logging.py``), else to stderr, so that a program that configured nothing still
shows a long build's progress.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Dict, Optional, Tuple

LOG = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 2.0


def log_line(text: str) -> None:
    """One progress line: to the logging system if configured, else to stderr."""
    if LOG.hasHandlers():
        LOG.info(text)
    else:
        print(f'[seg_perception] {text}', file=sys.stderr, flush=True)


class BuildProgress:
    """Phases and steps of one build as throttled log lines (thread-safe: TensorRT calls
    the monitor from its own threads)."""

    def __init__(self, log: Callable[[str], None] = log_line,
                 interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._interval_s, self._clock = log, interval_s, clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_line = float('-inf')
        # name -> (parent name or None, steps, start time)
        self._phases: Dict[str, Tuple[Optional[str], int, float]] = {}

    def _path(self, name: str) -> str:
        names = [name]
        parent = self._phases.get(name, (None,))[0]
        while parent is not None and parent not in names:
            names.append(parent)
            parent = self._phases.get(parent, (None,))[0]
        return ' > '.join(reversed(names))

    def _emit(self, text: str, now: float, always: bool) -> None:
        if always or now - self._last_line >= self._interval_s:
            self._last_line = now
            self._log(f'TensorRT build {now - self._started:.1f} s: {text}')

    def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
        with self._lock:
            now = self._clock()
            self._phases[phase_name] = (parent_phase or None, int(num_steps), now)
            steps = f'{num_steps} step{"s" if num_steps != 1 else ""}'
            self._emit(f'{self._path(phase_name)} ({steps})', now, always=not parent_phase)

    def step_complete(self, phase_name: str, step: int) -> bool:
        """Log (throttled) that ``step`` (0-based) of the phase is done; True: go on."""
        with self._lock:
            now = self._clock()
            steps = self._phases.get(phase_name, (None, 0, now))[1]
            done = f'{step + 1}/{steps}' if steps else str(step + 1)
            self._emit(f'{self._path(phase_name)}: step {done}', now, always=False)
        return True

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            now = self._clock()
            parent, _, started = self._phases.get(phase_name, (None, 0, now))
            path = self._path(phase_name)
            self._phases.pop(phase_name, None)
            if parent is None:
                self._emit(f'{path} done in {now - started:.1f} s', now, always=True)


def progress_monitor(trt, progress: BuildProgress):
    """A ``trt.IProgressMonitor`` passing TensorRT's calls to ``progress``, or None when
    this TensorRT has no progress monitor (before 10.0).

    The builder calls it from C++ through noexcept functions: an exception escaping
    would end the process, so a failing line is dropped instead.
    """
    base = getattr(trt, 'IProgressMonitor', None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self):
            base.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                progress.phase_start(phase_name, parent_phase, num_steps)
            except Exception:  # noqa: BLE001 - see the docstring
                pass

        def step_complete(self, phase_name, step):
            try:
                return progress.step_complete(phase_name, step)
            except Exception:  # noqa: BLE001 - never cancel the build over a log line
                return True

        def phase_finish(self, phase_name):
            try:
                progress.phase_finish(phase_name)
            except Exception:  # noqa: BLE001 - see the docstring
                pass

    return Monitor()
