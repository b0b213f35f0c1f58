"""``seg-perception bag-eval`` over many bags: parallel workers, one aggregate report.

Bags (:func:`find_bags`): bag paths, folders of bags and globs. Each bag is one
:class:`~.fleet_work.BagTask`, evaluated by today's per-bag bag-eval into
``DIR/bags/<name>/`` (model A) and, with ``--compare``, ``DIR/compare/<name>/``
(model B). As each bag finishes, its result goes to ``DIR/results/<name>.json``
(written to a temporary file, then renamed: never half written); ``--resume`` keeps
the results of the bags that went through with the same models and runs the rest.
The aggregate (:mod:`.aggregate`, :mod:`.fleet_report`) goes to ``DIR``.

Local execution (:func:`run_local`): a fixed number of worker processes (bounded by
the CPUs this process may use and by the available memory over an estimate of a
worker's size), each started once and fed one bag at a time over its own pipe, so a
worker builds each model's pipeline once and keeps it. Workers are separate
processes rather than a ProcessPoolExecutor because a worker that dies (killed for
memory, a crash in a native library on a corrupt bag) breaks a whole executor and
every bag in flight with it; here the parent sees which worker died, fails only the
bag it held, with the exit code or signal as the reason, starts a fresh worker and
goes on. With Ray, :mod:`.fleet_ray` runs the same tasks.

A stop request (``stop``: SIGINT, SIGTERM, see :class:`~seg_perception.signals.StopSignals`)
loses nothing already done: no bag is started after it, each worker's bag in flight is
stopped between two messages (SIGTERM to the worker, which closes that bag's output) and
not counted, the bags finished so far keep their result files, and the aggregate of
those is written marked ``partial`` with the bags not run listed; then
:class:`~seg_perception.replay.bag_eval.RunStopped` is raised. ``--resume`` runs the rest.
"""
from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import wait
from typing import Callable, Dict, List, Optional, Sequence

from seg_perception.errors import InvalidValueError
from seg_perception.replay.fleet_work import (OK, STOPPED, BagTask, evaluate_task,
                                              failed_result, same_run)
from seg_perception.signals import StopSignals

LOG = logging.getLogger(__name__)
BAG_SUFFIXES = ('.mcap', '.db3', '.bag')
RESULTS_DIR = 'results'
WORKER_BASE_MB = 400            # a worker's interpreter, onnxruntime and the bag buffers
MODEL_FACTOR = 4                # a model's resident size, as a multiple of its file
POLL_S = 0.2                    # how soon a waiting parent sees a stop request
STOP_GRACE_S = 30.0             # for a worker to close its bag after SIGTERM, before SIGKILL

Stop = Callable[[], Optional[str]]


# -- the run ------------------------------------------------------------------------------------

def run_fleet(bag_specs: Sequence[str], models: Sequence[str], output_dir: str, *,
              options: Optional[Dict] = None, workers: Optional[int] = None,
              ray: bool = False, ray_address: Optional[str] = None, resume: bool = False,
              progress: bool = True, hook: Optional[Callable[[str], None]] = None,
              stop: Optional[Stop] = None) -> Dict:
    """Evaluate every bag of ``bag_specs`` with ``models`` (one, or A and B); write the
    per-bag results and the aggregate report to ``output_dir``; return the aggregate.

    ``options``: evaluate_bag keywords for every bag; ``workers``: local worker
    processes (default: see worker_count); ``ray``/``ray_address``: run as Ray tasks
    instead; ``resume``: keep the bags that went through before; ``hook``: called in
    the worker with each bag before it is evaluated (tests); ``stop``: returns a signal
    name once the run is to stop (see the module doc): RunStopped after the partial
    aggregate is written.
    """
    from seg_perception.model_info import resolve_model_path
    from seg_perception.replay.aggregate import aggregate
    from seg_perception.replay.fleet_report import write_fleet_report
    from seg_perception.replay.output_folder import make_folder
    models = [resolve_model_path(m) for m in models]
    tasks = plan(find_bags(bag_specs), models, output_dir, dict(options or {}), hook)
    make_folder(output_dir)
    done = load_done(output_dir, tasks) if resume else {}
    todo = [t for t in tasks if t.name not in done]
    if resume:
        for task in todo:           # a bag that failed before may have left a partial bag
            task.options['overwrite'] = True
    meter = Progress(len(todo), progress)
    results = dict(done)
    check = SameRunCheck()

    def finished(result: Dict) -> None:
        save_result(output_dir, result)
        results[result['name']] = result
        meter.add(result)
        check.add(result)

    stop = stop or (lambda: None)
    if todo and (ray or ray_address):
        from seg_perception.replay.fleet_ray import run_ray
        run_ray(todo, ray_address, finished, stop)
    elif todo:
        run_local(todo, worker_count(models, len(todo), workers), finished, stop)
    meter.end()
    not_run = [{'bag': t.bag, 'name': t.name} for t in tasks if t.name not in results]
    summary = aggregate([results[t.name] for t in tasks if t.name in results], models,
                        not_run)
    summary.update(output_dir=os.path.abspath(output_dir), resumed=sorted(done),
                   stopped_by=stop() if not_run else None,
                   seconds=round(time.monotonic() - meter.started, 3))
    write_fleet_report(output_dir, summary)
    if not_run:
        raise stopped(summary)
    return summary


def stopped(summary: Dict):
    """The RunStopped of a fleet run stopped early, saying what was kept."""
    from seg_perception.replay.bag_eval import RunStopped
    error = RunStopped(summary['stopped_by'])
    error.args = (f'{error} ({summary["bags_ok"] + summary["bags_failed"]} of '
                  f'{summary["bags_total"]} bags done, partial report in '
                  f'{summary["output_dir"]}; --resume runs the other '
                  f'{len(summary["not_run"])})',)
    return error


class SameRunCheck:
    """Warns (once, one line) when model A and B turn out to run the same file at the
    same precision: ``precision auto`` runs the INT8 form beside model A on a VNNI CPU,
    so comparing a model with that INT8 file would compare it with itself."""

    def __init__(self):
        self.warned = False

    def add(self, result: Dict) -> None:
        runs = result.get('runs') or []
        if (self.warned or len(runs) != 2 or runs[0]['model'] == runs[1]['model'] or
                not same_run(*(r.get('ran') for r in runs))):
            return
        self.warned = True
        ran = runs[0]['ran']
        LOG.warning('--model and --compare both run %s at %s on %s (%s): the comparison '
                    'compares one model with itself; give --precision fp32 to run each file '
                    'as it is', ran['file'], ran['precision'], ran['backend'],
                    ran['precision_reason'] or 'asked for')


# -- the bags -----------------------------------------------------------------------------------

def is_bag(path: str) -> bool:
    """A bag file, or a rosbag2 folder: metadata.yaml, or (metadata lost) one storage
    file and no bag folders in it (that is a folder of bags)."""
    if os.path.isfile(path):
        return path.endswith(BAG_SUFFIXES)
    if not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, 'metadata.yaml')):
        return True
    entries = [os.path.join(path, name) for name in os.listdir(path)]
    storage = [e for e in entries if e.endswith(('.mcap', '.db3')) and os.path.isfile(e)]
    return len(storage) == 1 and not any(os.path.isdir(e) and is_bag(e) for e in entries)


def find_bags(specs: Sequence[str]) -> List[str]:
    """The bags of ``specs`` (bags, folders of bags, globs), each once, in order given.

    InvalidValueError naming a spec that holds no bag.
    """
    found: List[str] = []
    for spec in specs:
        if glob.has_magic(spec):
            paths = sorted(glob.glob(spec))
        elif os.path.isdir(spec) and not is_bag(spec):
            paths = sorted(os.path.join(spec, name) for name in os.listdir(spec))
        else:
            paths = [spec]
        bags = [p for p in paths if is_bag(p)] if len(paths) != 1 or paths[0] != spec \
            else paths
        if not bags:
            raise InvalidValueError(f'--bag {spec}: no bag there (a rosbag2 folder, .mcap, '
                                    '.db3 or .bag file, a folder of them or a glob)')
        for bag in bags:
            if os.path.abspath(bag) not in map(os.path.abspath, found):
                found.append(bag)
    return found


def bag_names(bags: Sequence[str]) -> List[str]:
    """A file-name-safe name per bag (its stem; -2, -3... for a stem seen before)."""
    names: List[str] = []
    for bag in bags:
        stem = os.path.splitext(os.path.basename(os.path.normpath(bag)))[0] or 'bag'
        name, count = stem, 1
        while name in names:
            count += 1
            name = f'{stem}-{count}'
        names.append(name)
    return names


def plan(bags: Sequence[str], models: Sequence[str], output_dir: str, options: Dict,
         hook: Optional[Callable[[str], None]] = None) -> List[BagTask]:
    """One BagTask per bag: model A into DIR/bags/<name>, model B into DIR/compare/<name>."""
    folders = ('bags', 'compare')
    return [BagTask(os.path.abspath(bag), name, list(models),
                    [os.path.join(os.path.abspath(output_dir), folders[i], name)
                     for i in range(len(models))], dict(options), hook)
            for bag, name in zip(bags, bag_names(bags))]


# -- results, one file per bag ----------------------------------------------------------------

def result_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, RESULTS_DIR, f'{name}.json')


def save_result(output_dir: str, result: Dict) -> None:
    """Write one bag's result atomically (a temporary file renamed over the old)."""
    from seg_perception.files import write_text
    os.makedirs(os.path.join(output_dir, RESULTS_DIR), exist_ok=True)
    write_text(result_path(output_dir, result['name']), json.dumps(result) + '\n')


def load_done(output_dir: str, tasks: Sequence[BagTask]) -> Dict[str, Dict]:
    """name -> the saved result of each task that went through with the same models."""
    done = {}
    for task in tasks:
        try:
            with open(result_path(output_dir, task.name), encoding='utf-8') as stream:
                result = json.load(stream)
        except (OSError, ValueError):
            continue
        if (result.get('status') == OK and result.get('bag') == task.bag and
                result.get('models') == task.models):
            done[task.name] = result
    return done


# -- progress -------------------------------------------------------------------------------

class Progress:
    """Bags done / total, frames per second and ETA on stderr, at most once every
    ``interval`` seconds of ``clock`` and for the last bag; one plain line per update when
    stderr is not a terminal (CI logs), else one line rewritten in place."""

    def __init__(self, total: int, enabled: bool = True, stream=None, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.enabled, self.interval, self.clock = total, enabled, interval, clock
        self.stream = stream or sys.stderr
        self.done = self.failed = self.frames = 0
        self.started = clock()
        self.shown: Optional[float] = None
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()

    def add(self, result: Dict) -> None:
        self.done += 1
        self.failed += result['status'] != OK
        self.frames += sum(run['summary']['frames'] for run in result.get('runs', ()))
        now = self.clock()
        due = self.shown is None or now - self.shown >= self.interval
        if self.enabled and (due or self.done == self.total):
            self.shown = now
            self.stream.write(('\r' if self.tty else '') + self.line(now) +
                              ('' if self.tty and self.done < self.total else '\n'))
            self.stream.flush()

    def end(self) -> None:
        """End a terminal's line left open by a run that stopped before its last bag."""
        if self.enabled and self.tty and self.shown is not None and self.done < self.total:
            self.stream.write('\n')
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        failed = f' ({self.failed} failed)' if self.failed else ''
        rate = f'{self.frames / elapsed:.1f}' if elapsed > 0 else '?'
        return (f'bags {self.done}/{self.total}{failed}, {rate} frames/s, '
                f'ETA {"?" if eta is None else f"{eta:.0f} s"}')


# -- local workers --------------------------------------------------------------------------

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
