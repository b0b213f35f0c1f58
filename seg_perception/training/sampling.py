"""The order in which training and validation read samples: one seeded permutation per
epoch, sharded over processes, enterable mid-epoch, with a seed per sample."""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from seg_perception.training.rng import seeded_rngs


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    words = np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & (2 ** 63 - 1)


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
