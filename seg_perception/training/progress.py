"""How a run reports: its ``train.log`` file and the progress bar or periodic log lines."""
from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from typing import Optional

PROGRESS_LOGGER = 'seg_perception.training.progress'


def attach_log_file(path: str) -> logging.Handler:
    """Send the package's INFO log lines to ``path`` as well (returns the handler)."""
    handler = logging.FileHandler(path, encoding='utf-8')
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s',
                                           '%Y-%m-%d %H:%M:%S'))
    handler.setLevel(logging.INFO)
    package = logging.getLogger('seg_perception')
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)
    return handler


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return '?'
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f'{hours}:{rest // 60:02d}:{rest % 60:02d}'


class Progress:
    """A tqdm bar on an interactive rank-0 terminal, periodic log lines otherwise.

    Step times come from a moving window of the last 50 iterations (validation
    pauses excluded), which gives images/s and the ETA.
    """

    def __init__(self, total: int, start: int, images_per_step: int, log_every: int,
                 enabled: bool, use_bar: Optional[bool] = None):
        self.total, self.iteration = total, start
        self.images_per_step = images_per_step
        self.log_every = log_every
        self.enabled = enabled
        self.times: deque = deque(maxlen=50)
        self.last = time.perf_counter()
        if use_bar is None:
            use_bar = enabled and sys.stderr.isatty()
        self.bar = None
        if use_bar and enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit='it', dynamic_ncols=True,
                            desc='train')
        self.logger = logging.getLogger(PROGRESS_LOGGER)
        # ROS 2 `launch`, once imported, makes every logger created later non-propagating;
        # these lines must reach the handlers of 'seg_perception' (train.log) all the same.
        self.logger.propagate = True

    def pause(self) -> None:
        """Called after a pause (validation, checkpoint): do not count it as step time."""
        self.last = time.perf_counter()

    def seconds_per_step(self) -> float:
        return sum(self.times) / len(self.times) if self.times else float('nan')

    def step(self, loss: float, lr: float, epoch: int) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        self.iteration += 1
        if not self.enabled:
            return
        per_step = self.seconds_per_step()
        speed = self.images_per_step / per_step if per_step > 0 else float('nan')
        eta = per_step * (self.total - self.iteration)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f'{loss:.4f}', lr=f'{lr:.2e}', img_s=f'{speed:.1f}',
                                 epoch=epoch)
        line = (f'iter {self.iteration}/{self.total} epoch {epoch} loss {loss:.4f} '
                f'lr {lr:.3e} {speed:.2f} img/s ETA {format_duration(eta)}')
        if self.iteration % self.log_every == 0 or self.iteration == self.total:
            if self.bar is not None:
                # the bar shows it; the log file still gets the line
                _log_to_files_only(self.logger, line)
            else:
                self.logger.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _log_to_files_only(logger: logging.Logger, line: str) -> None:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None)
    current: Optional[logging.Logger] = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        current = current.parent if current.propagate else None
