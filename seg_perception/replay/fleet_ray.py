"""A fleet run's bags as Ray tasks (``--ray``, ``--ray-address``): Ray is the engine.

The package only describes the work: one task per bag, the same
:func:`~.fleet_work.evaluate_task` a local worker runs (a Ray worker process keeps
the pipelines it built, like a local worker), with no retries, so a task whose
worker dies is reported once, as that bag's failure, and the rest go on. Results
are gathered here as they finish (``ray.wait``). A stop request cancels the tasks not
finished (a running one gets KeyboardInterrupt: its bag's output is closed) and counts
them as not run. The bags and the output folder must
be at the same paths on every node (a shared file system). Ray is the optional
``[fleet]`` extra.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable, Dict, Optional, Sequence

from seg_perception.errors import CommandError
from seg_perception.replay.fleet_work import BagTask, evaluate_task, failed_result

POLL_S = 0.2                    # how soon a waiting driver sees a stop request
INSTALL = "pip install 'seg_perception[fleet]' (or pip install 'ray>=2.9')"


def import_ray():
    """The ray module; CommandError saying how to install it when it is not."""
    try:
        import ray
    except ImportError:
        raise CommandError(f'--ray needs Ray, which is not installed: {INSTALL}') from None
    return ray


def run_ray(tasks: Sequence[BagTask], address: Optional[str],
            on_result: Callable[[Dict], None],
            stop: Callable[[], Optional[str]] = lambda: None) -> None:
    """Run ``tasks`` as Ray tasks on the cluster at ``address`` (None: the one this
    process is connected to, else RAY_ADDRESS or a new local one); ``on_result`` gets
    each bag's result as it comes; once ``stop`` names a signal, the rest are cancelled."""
    ray = import_ray()
    if not ray.is_initialized():
        # ray.init makes SIGTERM exit the driver at once: keep the stop request's handler
        handler = signal.getsignal(signal.SIGTERM)
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
    remote = ray.remote(max_retries=0, num_cpus=1)(evaluate_task)
    running = {remote.remote(task): task for task in tasks}
    while running:
        if stop():
            for ref in running:
                ray.cancel(ref)
            return
        ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
        for ref in ready:
            task = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:      # the worker died, or a bug in it
                result = failed_result(task, f'Ray task failed: {_first_line(exc)}')
            on_result(result)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
