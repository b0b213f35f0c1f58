"""Several splits of one dataset read as one training set (``data.train_splits``)."""
from __future__ import annotations

import bisect
from typing import Sequence

from torch.utils.data import ConcatDataset

from seg_perception.data.common import SegmentationDataset


class JoinedSplits(ConcatDataset):
    """The samples of ``parts`` (datasets of one kind, one label space) one after another.

    It shows what the training code reads of a SegmentationDataset: ``samples`` (the
    class-weight count and its cache fingerprint), ``read_label``, ``root``, ``label_space``
    and ``split`` (the names joined by '+', so cached class weights of train+val are never
    taken for those of train).
    """

    def __init__(self, parts: Sequence[SegmentationDataset]):
        super().__init__(parts)
        first = parts[0]
        self.root, self.label_space, self.name = first.root, first.label_space, first.name
        self.skip_corrupt = first.skip_corrupt
        self.split = '+'.join(part.split for part in parts)
        self.samples = [sample for part in parts for sample in part.samples]

    def read_label(self, index: int):
        part = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[part - 1] if part else 0
        return self.datasets[part].read_label(index - start)

    def __repr__(self) -> str:
        return f'JoinedSplits({self.split}, {len(self)} samples)'
