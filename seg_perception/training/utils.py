"""Pieces of the training loop that stand alone: precision, LR schedule, optimizer,
RNG state, the resumable sampler, logging and progress reporting."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from collections import deque
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from seg_perception.errors import InvalidValueError

LOGGER = logging.getLogger('seg_perception.training')
PROGRESS_LOGGER = 'seg_perception.training.progress'


# -- precision ----------------------------------------------------------------

def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 / AMX)."""
    probe = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolve_amp(mode: str, device: torch.device) -> Tuple[Optional[torch.dtype], bool, str]:
    """(autocast dtype or None, use a GradScaler, description) for ``train.amp``.

    auto: fp16 + GradScaler on a GPU, bf16 on a CPU that supports it, else fp32.
    fp16 on a CPU falls back to bf16 (or fp32): CPU fp16 autocast is slow and has no
    GradScaler; the fallback is logged.
    """
    if mode == 'off':
        return None, False, 'fp32'
    if device.type == 'cuda':
        if mode == 'bf16':
            if not torch.cuda.is_bf16_supported():
                raise InvalidValueError('train.amp is bf16 but this GPU has no bf16 support; '
                                        'use fp16 or auto')
            return torch.bfloat16, False, 'bf16 autocast'
        return torch.float16, True, 'fp16 autocast + GradScaler'
    bf16 = cpu_supports_bf16()
    if mode in ('auto', 'fp16', 'bf16') and bf16:
        if mode == 'fp16':
            LOGGER.warning('train.amp=fp16 needs a CUDA GPU; using bf16 autocast on this CPU')
        return torch.bfloat16, False, 'bf16 autocast (CPU)'
    if mode in ('fp16', 'bf16'):
        LOGGER.warning('train.amp=%s: this CPU has no native bf16/fp16 support; '
                       'training in fp32', mode)
    return None, False, 'fp32'


# -- schedule and optimizer ---------------------------------------------------

class PolyWithWarmup:
    """LR factor: linear warmup from ``warmup_factor`` to 1, then (1 - t/T)^power.

    A callable object (not a lambda) so LambdaLR stores its settings in the
    checkpoint as plain numbers.
    """

    def __init__(self, total_iterations: int, power: float = 0.9, warmup_iterations: int = 0,
                 warmup_factor: float = 0.1, policy: str = 'poly'):
        self.total_iterations = int(total_iterations)
        self.power = float(power)
        self.warmup_iterations = int(warmup_iterations)
        self.warmup_factor = float(warmup_factor)
        self.policy = policy

    def __call__(self, iteration: int) -> float:
        factor = 1.0
        if self.policy == 'poly':
            progress = min(iteration, self.total_iterations) / max(self.total_iterations, 1)
            factor = (1.0 - progress) ** self.power
        if iteration < self.warmup_iterations:
            alpha = iteration / self.warmup_iterations
            factor *= self.warmup_factor + (1.0 - self.warmup_factor) * alpha
        return factor


def build_optimizer(model: torch.nn.Module, config: Dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over the trainable parameters.

    ``backbone_lr_mult`` scales the LR of ``model.backbone`` (when the model has one)
    relative to the rest (decoder and heads), as fine-tuning recipes often do.
    """
    backbone = getattr(model, 'backbone', None)
    backbone_ids = ({id(p) for p in backbone.parameters()}
                    if isinstance(backbone, torch.nn.Module) else set())
    mult = config['backbone_lr_mult']
    if mult != 1.0 and not backbone_ids:
        LOGGER.warning('optimizer.backbone_lr_mult=%s ignored: %s has no .backbone',
                       mult, type(model).__name__)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for _, p in trainable if id(p) not in backbone_ids]
    body = [p for _, p in trainable if id(p) in backbone_ids]
    groups = [{'params': g, 'lr': config['lr'] * m, 'name': name}
              for name, g, m in (('backbone', body, mult), ('head', head, 1.0)) if g]
    if config['name'] == 'sgd':
        return torch.optim.SGD(groups, lr=config['lr'], momentum=config['momentum'],
                               weight_decay=config['weight_decay'],
                               nesterov=config['nesterov'])
    return torch.optim.AdamW(groups, lr=config['lr'], weight_decay=config['weight_decay'])


# -- random state -------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def capture_rng() -> Dict[str, Any]:
    """This process's RNG states as tensors and plain lists (weights_only loadable)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)),
                  'pos': int(position), 'has_gauss': int(has_gauss),
                  'cached_gaussian': float(cached)},
        'python': {'version': int(version), 'state': list(py_state),
                   'gauss_next': gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Undo ``capture_rng``: put every generator back where it was."""
    torch.set_rng_state(state['torch'].cpu().to(torch.uint8))
    np_state = state['numpy']
    np.random.set_state((np_state['kind'], np_state['keys'].numpy().astype(np.uint32),
                         int(np_state['pos']), int(np_state['has_gauss']),
                         float(np_state['cached_gaussian'])))
    py_state = state['python']
    random.setstate((int(py_state['version']), tuple(int(v) for v in py_state['state']),
                     py_state['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = [s.cpu().to(torch.uint8) for s in state['cuda']]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Run a block with python/NumPy/torch seeded from ``seed``, then restore them."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    words = np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & (2 ** 63 - 1)


# -- data order ---------------------------------------------------------------

class ResumableSampler(DistributedSampler):
    """DistributedSampler whose order (seed + epoch) can be entered mid-epoch.

    It yields ``(index, sample_seed)`` pairs. Every rank takes every world_size-th
    entry of one global permutation, so N processes with batch b see the same
    global batches as one process with batch N×b. The per-sample seed depends only
    on (seed, epoch, position in the global permutation): augmentation is the
    same whatever the number of processes or workers, and after a resume.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed, drop_last=False)
        self.start = 0
        self.limit = self.num_samples

    def set_epoch(self, epoch: int, start: int = 0, limit: Optional[int] = None) -> None:
        """Choose the epoch; skip its first ``start`` samples, stop after ``limit``."""
        super().set_epoch(epoch)
        self.limit = self.num_samples if limit is None else min(int(limit), self.num_samples)
        self.start = min(int(start), self.limit)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        indices = list(super().__iter__())[self.start:self.limit]
        for offset, index in enumerate(indices, start=self.start):
            position = self.rank + offset * self.num_replicas
            yield int(index), sample_seed(self.seed, self.epoch, position)

    def __len__(self) -> int:
        return self.limit - self.start


class SeededSamples(Dataset):
    """Reads ``dataset[index]`` with the random generators seeded for that sample."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        index, seed = key
        with seeded_rngs(seed):
            return self.dataset[index]


class ShardSampler(torch.utils.data.Sampler):
    """Indices rank, rank + world, ... of a dataset: every sample evaluated once."""

    def __init__(self, length: int, num_replicas: int, rank: int):
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# -- logging and progress -----------------------------------------------------

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
