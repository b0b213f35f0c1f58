"""The output folder of a ``bag-eval`` run: one run at a time, one bag per folder.

A run holds an exclusive lock on ``DIR/.bag-eval.lock`` (``fcntl.flock``, the
engine cache's :class:`~seg_perception.runtime.trt.lock.BuildLock`) from before
it creates its output bag until its report is written, so a second run into the
same folder, ``--overwrite`` or not, stops at once with one line naming the run
that holds it instead of deleting that run's half-written bag or mixing its
overlays into its report. The lock dies with its process: a killed run leaves no
stale lock.

A folder holds the output of one bag: a run into a folder whose ``metrics.json``
is another bag's (or not a bag-eval report at all) is refused, so a report never
describes the overlays or the output bag of another run. A second run of the same
bag replaces the earlier one's output bag with ``--overwrite`` (refused without)
and its report, overlays included.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

from seg_perception.errors import InvalidValueError
from seg_perception.replay.bag_io import OutputError, output_error

LOCK_NAME = '.bag-eval.lock'
METRICS_JSON = 'metrics.json'


def make_folder(output_dir: str) -> None:
    """Create ``output_dir`` (OutputError naming it when that is impossible)."""
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise OutputError(f'the output folder {output_dir} is a file, not a folder')
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise output_error('create the output folder', output_dir, exc) from None


@contextlib.contextmanager
def claimed(output_dir: str, bag: str) -> Iterator[None]:
    """Create ``output_dir`` and hold its lock for the block; refuse a folder of another bag.

    OutputError when another run holds the lock or the lock file cannot be made;
    InvalidValueError when the folder holds the report of another bag.
    """
    from seg_perception.runtime.trt.lock import BuildLock, LockTimeoutError
    make_folder(output_dir)
    lock = BuildLock(os.path.join(output_dir, LOCK_NAME), timeout=0.0,
                     what=f'the output folder {output_dir}')
    try:
        lock.__enter__()
    except LockTimeoutError:
        raise OutputError(f'the output folder {output_dir} is in use by another bag-eval run '
                          f'({lock.holder()}); wait for it to end or choose another '
                          '--output folder') from None
    except OSError as exc:
        raise output_error('lock the output folder', output_dir, exc) from None
    try:
        check_one_bag(output_dir, bag)
        yield
    finally:
        lock.__exit__(None, None, None)


def check_one_bag(output_dir: str, bag: str) -> None:
    """InvalidValueError unless ``output_dir`` holds no report or the report of ``bag``."""
    path = os.path.join(output_dir, METRICS_JSON)
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding='utf-8') as stream:
            earlier = json.load(stream).get('bag')
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier and os.path.realpath(earlier) == os.path.realpath(bag):
        return
    what = f'the report of the bag {earlier}' if earlier else 'a metrics.json of another run'
    raise InvalidValueError(f'the output folder {output_dir} holds {what}; one bag per '
                            'output folder: choose another --output folder')
