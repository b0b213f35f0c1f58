"""``seg-perception bag-eval`` over many bags: parallel workers, one aggregate report.

Bags (:func:`find_bags`): bag paths, folders of bags and globs. Each bag is one
:class:`~.fleet_work.BagTask`, evaluated by today's per-bag bag-eval into
``DIR/bags/<name>/`` (model A) and, with ``--compare``, ``DIR/compare/<name>/``
(model B). As each bag finishes, its result goes to ``DIR/results/<name>.json``
(written to a temporary file, then renamed: never half written); ``--resume`` keeps
the results of the bags that went through with the same models and runs the rest.
The aggregate (:mod:`.aggregate`, :mod:`.fleet_report`) goes to ``DIR``.

Local execution is :func:`~.fleet_local.run_local` (worker processes, each fed one bag at a
time, a dead worker failing only its bag); with Ray, :mod:`.fleet_ray` runs the same tasks.

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
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from seg_perception.errors import InvalidValueError
from seg_perception.replay.fleet_local import Stop, run_local, worker_count
from seg_perception.replay.fleet_work import OK, BagTask, same_run

LOG = logging.getLogger(__name__)
BAG_SUFFIXES = ('.mcap', '.db3', '.bag')
RESULTS_DIR = 'results'


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
