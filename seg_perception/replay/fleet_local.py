"""A fleet run's bags on this machine: :func:`run_local` runs them on a fixed number of
worker processes (bounded by the CPUs this process may use and by the available memory
over an estimate of a worker's size), each started once and fed one bag at a time over
its own pipe, so a worker builds each model's pipeline once and keeps it. Workers are separate
processes rather than a ProcessPoolExecutor because a worker that dies (killed for
memory, a crash in a native library on a corrupt bag) breaks a whole executor and
every bag in flight with it; here the parent sees which worker died, fails only the
bag it held, with the exit code or signal as the reason, starts a fresh worker and
goes on. With Ray, :mod:`.fleet_ray` runs the same tasks.

A stop request (``stop``) starts no further bag; each worker's bag in flight is stopped
between two messages (SIGTERM to the worker, which closes that bag's output) and not
reported, so the caller counts it as not run.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait
from typing import Callable, Dict, List, Optional, Sequence

from seg_perception.errors import InvalidValueError
from seg_perception.replay.fleet_work import STOPPED, BagTask, evaluate_task, failed_result
from seg_perception.signals import StopSignals

WORKER_BASE_MB = 400            # a worker's interpreter, onnxruntime and the bag buffers
MODEL_FACTOR = 4                # a model's resident size, as a multiple of its file
POLL_S = 0.2                    # how soon a waiting parent sees a stop request
STOP_GRACE_S = 30.0             # for a worker to close its bag after SIGTERM, before SIGKILL

Stop = Callable[[], Optional[str]]


def worker_count(models: Sequence[str], bags: int, requested: Optional[int] = None) -> int:
    """Workers for ``bags``: ``requested``, else bounded by the usable CPUs and by the
    available memory over a worker's estimated size (base + its models)."""
    if requested is not None:
        if requested < 1:
            raise InvalidValueError(f'--workers {requested}: give 1 or more')
        return max(1, min(requested, bags))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                          # not on Linux
        cpus = os.cpu_count() or 1
    need_mb = WORKER_BASE_MB + sum(MODEL_FACTOR * _file_mb(m) for m in models)
    available = _available_mb()
    by_memory = cpus if available is None else max(1, int(available // need_mb))
    return max(1, min(cpus, by_memory, bags))


def _file_mb(path: str) -> float:
    try:
        return os.path.getsize(path) / 2 ** 20
    except OSError:
        return 0.0


def _available_mb() -> Optional[float]:
    try:
        with open('/proc/meminfo', encoding='ascii') as stream:
            for line in stream:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


class _TermSignal(StopSignals):
    """A worker's stop request: SIGTERM from the parent (SIGINT, which a terminal's Ctrl-C
    also sends the workers, is ignored: the parent decides when to stop)."""

    SIGNALS = (signal.SIGTERM,)


def _worker_main(connection) -> None:
    """A worker: evaluate each task received, send its result back; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = _TermSignal()
    logging.disable(logging.WARNING)                   # per-frame warnings are in the reports
    while True:
        task = connection.recv()
        if task is None:
            return
        connection.send(evaluate_task(task, stop))


class _Worker:
    def __init__(self, context):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.task: Optional[BagTask] = None
        self.stopping = False           # sent SIGTERM: if it dies, its bag is not run, not failed

    def give(self, task: BagTask) -> None:
        self.task = task
        self.connection.send(task)

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def _death_reason(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        why = ' (out of memory?)' if -code == signal.SIGKILL else ''
        return f'the worker died on {name}{why}'
    return f'the worker died with exit code {code}'


def run_local(tasks: Sequence[BagTask], workers: int, on_result: Callable[[Dict], None],
              stop: Stop = lambda: None) -> None:
    """Run ``tasks`` on ``workers`` processes; ``on_result`` gets each bag's result as it
    comes (a dead worker's bag as failed). Once ``stop`` names a signal, no bag is
    started and the bags in flight are stopped (see the module doc)."""
    context = multiprocessing.get_context('spawn')     # no inherited threads or sessions
    pending = list(tasks)[::-1]
    pool: List[_Worker] = []
    try:
        while (pending and not stop()) or any(w.task for w in pool):
            if stop():
                _stop_busy(pool, on_result)
                return
            while pending and len([w for w in pool if w.task]) < workers:
                idle = next((w for w in pool if w.task is None), None)
                if idle is None:
                    idle = _Worker(context)
                    pool.append(idle)
                idle.give(pending.pop())
            _collect_ready([w for w in pool if w.task], pool, on_result, POLL_S)
    finally:
        for worker in pool:
            worker.stop()


def _collect_ready(busy: List[_Worker], pool: List[_Worker], on_result,
                   timeout: Optional[float]) -> None:
    """Wait up to ``timeout`` for a busy worker to answer or die; collect those that did.
    (A timeout, because a signal does not interrupt the wait: PEP 475 resumes it.)"""
    ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout)
    for worker in busy:
        if worker.connection in ready or worker.process.sentinel in ready:
            _collect(worker, pool, on_result)


def _stop_busy(pool: List[_Worker], on_result) -> None:
    """SIGTERM each busy worker, so its bag stops between two messages with its output
    closed; collect what they send (a bag that finished meanwhile counts); SIGKILL one that
    has not answered after STOP_GRACE_S."""
    for worker in pool:
        if worker.task is not None and worker.process.is_alive():
            worker.stopping = True
            worker.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    while any(w.task for w in pool) and time.monotonic() < deadline:
        _collect_ready([w for w in pool if w.task], pool, on_result,
                       deadline - time.monotonic())
    for worker in [w for w in pool if w.task]:
        worker.process.kill()
        worker.task = None


def _collect(worker: _Worker, pool: List[_Worker], on_result) -> None:
    """A busy worker's answer: its bag's result (a stopped bag's is dropped: not run), or
    its death, failing its bag (unless it was being stopped: one still starting dies of the
    SIGTERM)."""
    task = worker.task
    try:
        if worker.connection.poll():
            result = worker.connection.recv()
            worker.task = None
            if result['status'] != STOPPED:
                on_result(result)
            return
    except (EOFError, OSError):
        pass
    if worker.process.is_alive():
        return
    worker.process.join()
    worker.task = None
    pool.remove(worker)
    if not worker.stopping:
        on_result(failed_result(task, _death_reason(worker.process)))
