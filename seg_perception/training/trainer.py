"""The training loop behind ``seg-perception train`` (started by run.py)."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
from typing import Any, Dict, Optional

import torch

from seg_perception.errors import InvalidValueError
from seg_perception.models.checkpoint import load_checkpoint, offline_config, save_checkpoint
from seg_perception.config import dump_config
from seg_perception.files import remove_stale_temporaries, write_text
from seg_perception.training.distributed import (DistContext, all_gather_objects,
                                                 all_reduce_confusion, all_reduce_mean, barrier)
from seg_perception.training.ema import build_ema
from seg_perception.evaluation.metrics import ConfusionMatrix, nan_to_none
from seg_perception.model_info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo
from seg_perception.training.config_changes import log_config_changes
from seg_perception.training.criterion import build_criterion
from seg_perception.training.distillation import build_distillation
from seg_perception.training.optimizer import build_optimizer
from seg_perception.training.pictures import prediction_picture
from seg_perception.training.precision import resolve_amp
from seg_perception.training.progress import Progress, attach_log_file
from seg_perception.training.rng import capture_rng, restore_rng, seed_everything
from seg_perception.training.schedule import PolyWithWarmup
from seg_perception.training.training_data import build_training_data

LOGGER = logging.getLogger('seg_perception.training')

# The files of a run folder written through files.replaced_atomically (class_weights.json
# by criterion.build_criterion): a killed run's temporaries of these are cleared.
RUN_FILES = ('last.pt', 'best.pt', 'config.yaml', 'summary.json', 'class_weights.json')
# Settings that may change between a run and its resume without changing the result.
RESUME_FREE_KEYS = ('train.max_iterations_this_run', 'train.workers', 'train.log_every',
                    'train.device', 'train.threads', 'data.root')


class TrainingDiverged(InvalidValueError, FloatingPointError):
    """The loss became NaN or infinite (a ValueError, so the CLI prints one line)."""


def make_run_folder(path: str) -> None:
    """Create the run folder; a file in its place is named as such, not as "File exists"."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, 'the run folder is a file', path)
    os.makedirs(path, exist_ok=True)


class Trainer:
    """Builds everything from a config, then ``fit`` trains, evaluates and checkpoints."""

    def __init__(self, config: Dict[str, Any], output_dir: str, ctx: DistContext):
        self.config = config
        self.ctx = ctx
        self.device = ctx.device
        self.output_dir = output_dir
        self.last_path = os.path.join(output_dir, 'last.pt')
        self.best_path = os.path.join(output_dir, 'best.pt')
        self.settings = config['train']
        self.writer = None
        self.best_miou = -math.inf
        self.last_metrics: Optional[Dict[str, Any]] = None

    # -- construction ---------------------------------------------------------
    def _build(self) -> None:
        from seg_perception.data import label_space_for_config
        from seg_perception.models import build_model
        cfg, settings, ctx = self.config, self.settings, self.ctx
        data_cfg = cfg['data']
        space = label_space_for_config(data_cfg)
        model_cfg = dict(cfg['model'])
        architecture = model_cfg.pop('architecture')
        model = build_model(architecture, space.num_classes, **model_cfg)
        norm = getattr(model, 'normalization', None)
        norm = norm() if callable(norm) else norm
        self.mean, self.std = norm if norm else (IMAGENET_MEAN, IMAGENET_STD)
        self.data = data = build_training_data(cfg, ctx, self.mean, self.std, space)
        self.space = data.space     # the training set's own, where it has one
        self.info = ModelInfo.from_label_space(
            architecture, self.space, cfg['deploy']['input_size'], mean=self.mean,
            std=self.std, arch_config=offline_config(architecture, model_cfg),
            dataset=str(data_cfg.get('dataset', '')))
        schedule = cfg['schedule']

        # The network on its device, in its memory layout, wrapped for DDP.
        self.memory_format = (torch.channels_last if settings['channels_last']
                              else torch.contiguous_format)
        if ctx.distributed and settings['sync_bn']:
            if self.device.type == 'cuda':
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                LOGGER.info('train.sync_bn: SyncBatchNorm needs GPUs; on the CPU each process '
                            'normalises over its own %d images', data.micro_batch)
        model = model.to(self.device, memory_format=self.memory_format)
        self.model = model
        self.ema = build_ema(model, settings['ema_decay'])
        self.ddp = model
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.criterion = build_criterion(cfg, data.train_set, self.space, self.output_dir,
                                         ctx).to(self.device)
        self.distill = build_distillation(settings['distill'], self.info)
        if self.distill is not None:
            self.distill.to(self.device, memory_format=self.memory_format)
        self.optimizer = build_optimizer(model, cfg['optimizer'])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, PolyWithWarmup(
            data.total, schedule['power'], schedule['warmup_iterations'],
            schedule['warmup_factor'], schedule['policy']))
        self.amp_dtype, use_scaler, self.amp_name = resolve_amp(settings['amp'], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The network that is evaluated and deployed: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.settings['freeze_bn']:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # -- checkpoints ----------------------------------------------------------
    def _state(self, iteration: int, rng_states=None) -> Dict[str, Any]:
        """The checkpoint dict; without ``rng_states`` only what export needs (best.pt)."""
        state = {'model': self.model.state_dict(), 'model_info': self.info.to_dict(),
                 'iteration': iteration, 'epoch': iteration // self.data.steps_per_epoch,
                 'config': self.config,
                 'best_miou': self.best_miou if math.isfinite(self.best_miou) else None,
                 'metrics': nan_to_none(self.last_metrics) if self.last_metrics else None}
        if self.ema is not None:
            state['ema'] = self.ema.module.state_dict()
        if rng_states is not None:
            state.update({'optimizer': self.optimizer.state_dict(),
                          'lr_scheduler': self.scheduler.state_dict(),
                          'scaler': self.scaler.state_dict(), 'rng': rng_states,
                          'world_size': self.ctx.world_size})
        return state

    def _save(self, iteration: int) -> None:
        rng_states = all_gather_objects(self.ctx, capture_rng())
        if self.ctx.is_main:
            save_checkpoint(self.last_path, self._state(iteration, rng_states))
            LOGGER.info('iteration %d: wrote %s', iteration, self.last_path)
        barrier(self.ctx)

    def _load(self, path: str) -> int:
        state = load_checkpoint(path)
        missing = [k for k in ('optimizer', 'lr_scheduler', 'iteration', 'rng') if k not in state]
        if missing:
            raise InvalidValueError(f'{path} cannot be resumed: it lacks {", ".join(missing)} '
                                    '(only last.pt of a training run holds the full state)')
        log_config_changes(state.get('config') or {}, self.config, RESUME_FREE_KEYS)
        self.model.load_state_dict(state['model'])
        if self.ema is not None:
            if 'ema' in state:
                self.ema.module.load_state_dict(state['ema'])
            else:
                LOGGER.warning('%s holds no weight average: train.ema_decay starts one from '
                               'its weights', path)
                self.ema.module.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        # The schedule's shape (length, warmup) comes from the current config, so a run
        # can be extended; its position comes from the checkpoint.
        scheduler_state = dict(state['lr_scheduler'])
        scheduler_state['lr_lambdas'] = [None] * len(self.scheduler.lr_lambdas)
        self.scheduler.load_state_dict(scheduler_state)
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        best = state.get('best_miou')
        self.best_miou = -math.inf if best is None else float(best)
        rng = state['rng']
        iteration = int(state['iteration'])
        if len(rng) == self.ctx.world_size:
            restore_rng(rng[self.ctx.rank])
        else:
            LOGGER.warning('%s was written by %d processes, this run has %d: data order is '
                           'kept, random augmentation streams of the model are reseeded',
                           path, len(rng), self.ctx.world_size)
            seed_everything(self.settings['seed'] + self.ctx.rank + iteration)
        LOGGER.info('resumed %s at iteration %d (epoch %d)', path, iteration,
                    iteration // self.data.steps_per_epoch)
        return iteration

    # -- validation -----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, iteration: int) -> Dict[str, Any]:
        """mIoU on the validation split (every process a shard, matrices summed)."""
        network = self.eval_model
        network.eval()
        matrix = ConfusionMatrix(self.space.num_classes, self.space.ignore_index)
        for images, masks in self.data.val_loader:
            images = images.to(self.device, memory_format=self.memory_format)
            with self._autocast():
                logits = network(images)
            matrix.update(logits.argmax(1), masks)
        matrix.matrix = all_reduce_confusion(matrix.matrix)
        metrics = matrix.summary(self.space.class_names, self.space.drivable_ids)
        metrics['iteration'] = iteration
        self.last_metrics = metrics
        if self.ctx.is_main:
            per_class = ' '.join(f'{n} {v:.3f}' for n, v in metrics['per_class_iou'].items())
            LOGGER.info('iteration %d: val mIoU %.4f pixel acc %.4f | %s', iteration,
                        metrics['miou'], metrics['pixel_accuracy'], per_class)
            if self.writer is not None:
                self._write_eval(metrics, iteration)
        return metrics

    def _write_eval(self, metrics: Dict[str, Any], iteration: int) -> None:
        self.writer.add_scalar('val/mIoU', metrics['miou'], iteration)
        self.writer.add_scalar('val/pixel_accuracy', metrics['pixel_accuracy'], iteration)
        for name, value in metrics['per_class_iou'].items():
            if not math.isnan(value):
                self.writer.add_scalar(f'val_iou/{name}', value, iteration)
        for k in range(min(self.settings['vis_images'], len(self.data.val_set))):
            image, mask = self.data.val_set[k]
            batch = image.unsqueeze(0).to(self.device, memory_format=self.memory_format)
            with self._autocast():
                prediction = self.eval_model(batch).argmax(1)[0]
            self.writer.add_image(f'val_prediction/{k}', prediction_picture(
                image, mask, prediction, self.space, self.mean, self.std), iteration,
                dataformats='HWC')
        self.writer.flush()

    # -- the loop -------------------------------------------------------------
    def _open_outputs(self) -> None:
        if not self.ctx.is_main:
            return
        make_run_folder(self.output_dir)
        handler = attach_log_file(os.path.join(self.output_dir, 'train.log'))
        handler._seg_perception_run = True
        for path in remove_stale_temporaries(self.output_dir, RUN_FILES):
            LOGGER.warning('removed %s: the temporary of a write whose process was killed',
                           path)
        dump_config(self.config, os.path.join(self.output_dir, 'config.yaml'))
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.output_dir, 'tensorboard'))
        except ImportError as exc:
            LOGGER.warning('no TensorBoard logging (%s); pip install tensorboard', exc)

    def _train_step(self, batches) -> float:
        """One optimizer step over ``accumulate`` micro-batches; returns the mean loss."""
        accumulate = self.settings['accumulate']
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(accumulate):
            images, masks = next(batches)
            images = images.to(self.device, non_blocking=True,
                               memory_format=self.memory_format)
            masks = masks.to(self.device, non_blocking=True)
            sync = micro == accumulate - 1 or self.ddp is self.model
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                with self._autocast():
                    output = self.ddp(images)
                    loss = self.criterion(output, masks)
                    if self.distill is not None:
                        loss = loss + self.distill(images, output)
                    loss = loss / accumulate
                self.scaler.scale(loss).backward()
            total += loss.detach().float()
        if self.settings['grad_clip']:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings['grad_clip'])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(all_reduce_mean(self.ctx, total))

    def fit(self, resume: Optional[str] = None) -> Dict[str, Any]:
        """Train to the configured length (or ``max_iterations_this_run``); return a summary."""
        settings, ctx = self.settings, self.ctx
        if settings['threads']:
            torch.set_num_threads(settings['threads'])
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        self._open_outputs()
        barrier(ctx)
        seed_everything(settings['seed'] + ctx.rank)
        self._build()
        data = self.data
        iteration = self._load(resume) if resume else 0
        LOGGER.info('training %s (%.2f M parameters) on %s, %d process(es), %s; %d train / %s '
                    'images; batch %d (%d per process x %d accumulated); %d steps per '
                    'epoch; iterations %d -> %d', self.info.architecture,
                    sum(p.numel() for p in self.model.parameters()) / 1e6, self.device,
                    ctx.world_size, self.amp_name, len(data.train_set),
                    'no held-out validation' if data.val_set is None
                    else f'{len(data.val_set)} val', settings['batch_size'],
                    data.micro_batch, settings['accumulate'], data.steps_per_epoch, iteration,
                    data.total)
        self._log_extras()
        progress = Progress(data.total, iteration, settings['batch_size'], settings['log_every'],
                            enabled=ctx.is_main)
        start, stop_at = iteration, data.total
        if settings['max_iterations_this_run']:
            stop_at = min(data.total, start + settings['max_iterations_this_run'])
        samples_per_step = data.micro_batch * settings['accumulate']
        while iteration < stop_at:
            epoch, step = divmod(iteration, data.steps_per_epoch)
            data.sampler.set_epoch(epoch, start=step * samples_per_step,
                                   limit=data.steps_per_epoch * samples_per_step)
            batches = iter(data.loader_for(epoch))
            progress.pause()
            for _ in range(step, data.steps_per_epoch):
                self._set_train_mode()
                loss = self._train_step(batches)
                if not math.isfinite(loss) and not self.scaler.is_enabled():
                    raise TrainingDiverged(
                        f'the training loss became {loss} at iteration {iteration + 1}; '
                        'lower optimizer.lr, set train.grad_clip, or train.amp=off')
                iteration += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=iteration)
                lr = self.optimizer.param_groups[-1]['lr']
                progress.step(loss, lr, epoch)
                if self.writer is not None and iteration % settings['log_every'] == 0:
                    self.writer.add_scalar('train/loss', loss, iteration)
                    self.writer.add_scalar('train/lr', lr, iteration)
                self._after_step(iteration, stop_at)
                progress.pause()
                if iteration >= stop_at:
                    break
        progress.close()
        return self._finish(iteration, start)

    def _log_extras(self) -> None:
        """Say which of the optional parts of the recipe this run has."""
        if self.data.val_set is None:
            LOGGER.info('no held-out validation: data.train_splits %s includes the validation '
                        'split, so nothing is evaluated and last.pt is the model (no best.pt)',
                        self.config['data']['train_splits'])
        if self.ema is not None:
            LOGGER.info('weight average (train.ema_decay %g): evaluated, checkpointed as "ema" '
                        'and deployed', self.settings['ema_decay'])
        if self.data.full_frame_from is not None:
            LOGGER.info('from epoch %d on, crops are whole %s frames (train.full_frame_epochs '
                        '%d)',
                        self.data.full_frame_from, 'x'.join(
                            str(v) for v in self.config['deploy']['input_size']),
                        self.settings['full_frame_epochs'])

    def _after_step(self, iteration: int, stop_at: int) -> None:
        settings = self.settings
        due = iteration % settings['eval_every'] == 0 or iteration == self.data.total
        if self.data.val_loader is not None and due:
            metrics = self.evaluate(iteration)
            if metrics['miou'] > self.best_miou:
                self.best_miou = metrics['miou']
                if self.ctx.is_main:
                    save_checkpoint(self.best_path, self._state(iteration))
                    LOGGER.info('iteration %d: new best mIoU %.4f, wrote %s', iteration,
                                self.best_miou, self.best_path)
        if iteration % settings['checkpoint_every'] == 0 or \
                iteration in (self.data.total, stop_at):
            self._save(iteration)

    def _finish(self, iteration: int, start: int) -> Dict[str, Any]:
        total = self.data.total
        summary = {'iteration': iteration, 'total_iterations': total,
                   'finished': iteration >= total, 'iterations_this_run': iteration - start,
                   'best_miou': self.best_miou if math.isfinite(self.best_miou) else None,
                   'metrics': nan_to_none(self.last_metrics) if self.last_metrics else None,
                   'last_checkpoint': self.last_path,
                   'best_checkpoint': self.best_path if os.path.exists(self.best_path) else None}
        if self.ctx.is_main:
            write_text(os.path.join(self.output_dir, 'summary.json'),
                       json.dumps(summary, indent=2))
            state = 'finished' if summary['finished'] else 'stopped (resume with --resume)'
            best = 'n/a' if summary['best_miou'] is None else f'{self.best_miou:.4f}'
            if self.data.val_set is None:
                best = 'none (no held-out validation)'
            LOGGER.info('%s at iteration %d/%d; best val mIoU %s', state, iteration, total, best)
        if self.writer is not None:
            self.writer.close()
        return summary
