"""Distributed training from the environment that torchrun sets up.

``torchrun --nproc_per_node=N`` (and its multi-machine rendezvous) exports RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain ``python`` start sets
none of them and runs as a single process. The same code path serves both, so a
config trains on one CPU, one GPU or many machines without changes.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

from seg_perception.errors import InvalidValueError

LOGGER = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process sits in the job, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    backend: str = ''

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == '':
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidValueError(f'environment variable {name}={value!r} is not an '
                                f'integer') from None


def select_device(preference: str, local_rank: int = 0) -> torch.device:
    """'auto' → this process's GPU when CUDA works, else the CPU; 'cuda' demands a GPU."""
    if preference == 'cpu':
        return torch.device('cpu')
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return torch.device('cuda', local_rank % count)
    if preference == 'cuda':
        raise InvalidValueError('train.device is cuda but no CUDA GPU is available; '
                                'use train.device=auto or cpu')
    return torch.device('cpu')


def init_distributed(device_preference: str = 'auto', timeout_minutes: float = 30.0
                     ) -> DistContext:
    """Join the process group described by the environment (or run alone).

    Backend nccl when the process computes on a GPU, gloo on the CPU.
    """
    world_size = _env_int('WORLD_SIZE', 1)
    rank = _env_int('RANK', 0)
    local_rank = _env_int('LOCAL_RANK', 0)
    device = select_device(device_preference, local_rank)
    if world_size <= 1:
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        return DistContext(0, 1, 0, device, '')
    if not 0 <= rank < world_size:
        raise InvalidValueError(f'RANK={rank} is outside 0..WORLD_SIZE-1 ({world_size - 1})')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method='env://',
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    LOGGER.debug('rank %d/%d (local %d) on %s with %s', rank, world_size, local_rank,
                 device, backend)
    return DistContext(rank, world_size, local_rank, device, backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (when one was joined)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_objects(ctx: DistContext, value: Any) -> List[Any]:
    """``value`` from every rank, in rank order (one-element list when alone)."""
    if not ctx.distributed:
        return [value]
    gathered: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(ctx: DistContext, value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank."""
    if not ctx.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_reduce_mean(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (a copy; the input is untouched)."""
    if not ctx.distributed:
        return values
    work = values.detach().clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work / ctx.world_size


def all_reduce_confusion(confusion):
    """Sum a confusion matrix (NumPy array or torch tensor) over all processes; the same kind
    comes back. Without an initialised process group the input comes back unchanged."""
    if not (dist.is_available() and dist.is_initialized()):
        return confusion
    is_tensor = isinstance(confusion, torch.Tensor)
    tensor = confusion if is_tensor else torch.from_numpy(np.ascontiguousarray(confusion))
    original_device = tensor.device
    # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
    if dist.get_backend() == 'nccl':
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    work = tensor.to(device=device, dtype=torch.int64).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    if is_tensor:
        return work.to(device=original_device, dtype=confusion.dtype)
    return work.cpu().numpy().astype(np.asarray(confusion).dtype)
