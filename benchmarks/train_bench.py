#!/usr/bin/env python3
"""Training throughput of a config's model: images/s and minutes per epoch.

Times full optimizer steps (forward, loss, backward, SGD step) of the model a
training config builds, on synthetic batches, for each combination of crop size
and precision; optionally also the data pipeline alone (the config's real
dataset and training transforms through a DataLoader). Prints a Markdown table
for benchmarks/TRAINING.md.

    python3 benchmarks/train_bench.py --config config/train/camvid.yaml \\
        --crops 360x480,256x256 --amp off,bf16 --steps 5 [--data]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_perception.config import load_config  # noqa: E402
from seg_perception.data import build_dataset, build_transforms, \
    label_space_for_config  # noqa: E402
from seg_perception.training.losses import build_loss  # noqa: E402
from seg_perception.models import build_model  # noqa: E402
from seg_perception.training.optimizer import build_optimizer  # noqa: E402
from seg_perception.training.precision import resolve_amp  # noqa: E402
from seg_perception.runtime.cpu_features import cpu_description  # noqa: E402


def parse_size(text: str):
    height, _, width = text.lower().partition('x')
    return int(height), int(width)


def time_steps(config, crop, amp_mode: str, batch: int, steps: int, warmup: int,
               channels_last: bool) -> dict:
    """Median seconds per optimizer step of the config's model on random data."""
    space = label_space_for_config(config['data'])
    model_cfg = dict(config['model'])
    model = build_model(model_cfg.pop('architecture'), space.num_classes, **model_cfg)
    device = torch.device('cpu')
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    loss_cfg = {k: v for k, v in config['loss'].items() if k != 'class_weighting'}
    criterion = build_loss(loss_cfg, space.num_classes, space.ignore_index)
    optimizer = build_optimizer(model, config['optimizer'])
    dtype, _, amp_name = resolve_amp(amp_mode, device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *crop, generator=generator).contiguous(
        memory_format=memory_format)
    masks = torch.randint(0, space.num_classes, (batch, *crop), generator=generator)
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = criterion(model(images), masks)
        loss.backward()
        optimizer.step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return {'seconds': statistics.median(times), 'amp': amp_name}


def time_data(config, batches: int, batch: int, workers: int) -> float:
    """Images/s of the config's training dataset + transforms through a DataLoader."""
    model_cfg = dict(config['model'])
    space = label_space_for_config(config['data'])
    model = build_model(model_cfg.pop('architecture'), space.num_classes,
                        **dict(model_cfg, pretrained=False))
    norm = getattr(model, 'normalization', ((0.5,) * 3, (0.5,) * 3))
    norm = norm() if callable(norm) else norm
    dataset = build_dataset(config['data'], 'train',
                            build_transforms(config['data'], True, *norm))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True)
    iterator = iter(loader)
    next(iterator)                      # worker start-up is not throughput
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='config/train/camvid.yaml')
    parser.add_argument('--crops', default='360x480,256x256',
                        help='comma-separated HxW training crops')
    parser.add_argument('--amp', default='off,bf16', help='comma-separated: off, bf16, auto')
    parser.add_argument('--batch', type=int, default=None, help='default: train.batch_size')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per setting')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    parser.add_argument('--no-channels-last', action='store_true')
    parser.add_argument('--epoch-images', type=int, default=367,
                        help='images per epoch for the minutes column (CamVid train: 367)')
    parser.add_argument('--data', action='store_true',
                        help='also time the data pipeline (needs the dataset on disk)')
    parser.add_argument('--data-batches', type=int, default=10)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('overrides', nargs='*', metavar='KEY=VALUE')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    batch = args.batch or config['train']['batch_size']
    channels_last = not args.no_channels_last
    load_before = os.getloadavg()
    print(f'# {datetime.datetime.now().isoformat(timespec="minutes")} | {cpu_description()} | '
          f'{os.cpu_count()} logical CPUs, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads | load average before '
          f'{load_before[0]:.1f}')
    print(f'# model: {config["model"]} | batch {batch} | channels_last {channels_last}')
    print('| crop (H×W) | precision | s/step | images/s | min/epoch |')
    print('|---|---|---|---|---|')
    for crop_text in args.crops.split(','):
        crop = parse_size(crop_text)
        for amp_mode in args.amp.split(','):
            result = time_steps(config, crop, amp_mode.strip(), batch, args.steps,
                                args.warmup, channels_last)
            per_second = batch / result['seconds']
            minutes = args.epoch_images / per_second / 60
            print(f'| {crop[0]}×{crop[1]} | {result["amp"]} | {result["seconds"]:.2f} | '
                  f'{per_second:.1f} | {minutes:.1f} |', flush=True)
    if args.data:
        for workers in sorted({0, config['train']['workers']}):
            rate = time_data(config, args.data_batches, batch, workers)
            print(f'# data pipeline ({workers} workers): {rate:.1f} images/s')
    load_after = os.getloadavg()
    print(f'# load average after {load_after[0]:.1f} (1 min), {load_after[1]:.1f} (5 min)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
