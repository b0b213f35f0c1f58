"""The data side of a training run: its datasets, the resumable sampler and the loaders.

One global permutation per epoch, sharded over the processes (ResumableSampler), so a run
resumes mid-epoch on the same samples and a different process count keeps the data order.
With ``train.full_frame_epochs`` a second loader crops the network's whole input for the
last epochs; training on the validation split leaves no validation loader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch.utils.data import DataLoader

from seg_perception.errors import InvalidValueError
from seg_perception.training.distributed import DistContext
from seg_perception.training.sampling import ResumableSampler, SeededSamples, ShardSampler


@dataclass
class TrainingData:
    """What the training loop reads: sets, sampler, loaders and the schedule's length."""

    train_set: Any
    val_set: Optional[Any]          # None: the run trains on the validation split too
    space: Any                      # the label space of the training set
    sampler: ResumableSampler
    micro_batch: int                # images per process and forward pass
    steps_per_epoch: int
    total: int                      # optimizer steps of the whole schedule
    train_loader: DataLoader
    val_loader: Optional[DataLoader]
    full_frame_loader: Optional[DataLoader] = None
    full_frame_from: Optional[int] = None      # first epoch on whole-input crops

    def loader_for(self, epoch: int) -> DataLoader:
        """The training loader of ``epoch`` (the full-frame one in the last epochs)."""
        if self.full_frame_from is not None and epoch >= self.full_frame_from:
            return self.full_frame_loader
        return self.train_loader


def build_training_data(cfg: Dict[str, Any], ctx: DistContext, mean, std,
                        space) -> TrainingData:
    """The datasets and loaders ``cfg`` asks for, normalised with ``mean``/``std``;
    InvalidValueError when the batch does not divide over the processes or the training
    set holds less than one batch."""
    from seg_perception.data import build_dataset, build_transforms, held_out_validation
    data_cfg, settings, schedule = cfg['data'], cfg['train'], cfg['schedule']
    train_set = build_dataset(data_cfg, 'train', build_transforms(data_cfg, True, mean, std))
    # Training on the validation split (the final model, once val chose the recipe)
    # leaves nothing to validate on: no evaluation, no best.pt, last.pt is the model.
    val_set = None
    if held_out_validation(data_cfg):
        val_set = build_dataset(data_cfg, 'val', build_transforms(data_cfg, False, mean, std))

    per_process = settings['batch_size'] // (ctx.world_size * settings['accumulate'])
    if per_process * ctx.world_size * settings['accumulate'] != settings['batch_size']:
        raise InvalidValueError(
            f'train.batch_size ({settings["batch_size"]}) must be divisible by the number '
            f'of processes ({ctx.world_size}) times train.accumulate '
            f'({settings["accumulate"]})')
    sampler = ResumableSampler(train_set, ctx.world_size, ctx.rank, settings['seed'])
    steps_per_epoch = sampler.num_samples // (per_process * settings['accumulate'])
    if steps_per_epoch < 1:
        raise InvalidValueError(f'the training set has {len(train_set)} images, fewer '
                                f'than one batch of train.batch_size={settings["batch_size"]}')
    total = schedule['iterations'] or schedule['epochs'] * steps_per_epoch
    pin = ctx.device.type == 'cuda'
    workers = settings['workers']

    def train_loader(dataset):
        return DataLoader(
            SeededSamples(dataset), batch_size=per_process, sampler=sampler,
            num_workers=workers, drop_last=True, pin_memory=pin,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(settings['seed']))

    data = TrainingData(
        train_set=train_set, val_set=val_set,
        space=getattr(train_set, 'label_space', space), sampler=sampler,
        micro_batch=per_process, steps_per_epoch=steps_per_epoch, total=total,
        train_loader=train_loader(train_set), val_loader=None)
    # The last train.full_frame_epochs epochs crop the network's whole input size, so
    # the network ends on the context it sees once deployed.
    if settings['full_frame_epochs']:
        full_cfg = dict(data_cfg, augment=dict(data_cfg.get('augment') or {},
                                               crop=list(cfg['deploy']['input_size'])))
        data.full_frame_loader = train_loader(build_dataset(
            full_cfg, 'train', build_transforms(full_cfg, True, mean, std)))
        epochs = math.ceil(total / steps_per_epoch)
        data.full_frame_from = max(0, epochs - settings['full_frame_epochs'])
    if val_set is not None:
        data.val_loader = DataLoader(
            val_set, batch_size=settings['val_batch_size'],
            sampler=ShardSampler(len(val_set), ctx.world_size, ctx.rank),
            num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(settings['seed']))
    return data
