"""``seg-perception train``: train a segmentation network from a config file.

One process (CPU or one GPU) or many under ``torchrun`` (DDP from the environment,
see distributed.py). The run folder gets ``config.yaml`` (the effective config),
``train.log``, ``tensorboard/``, ``last.pt`` (every ``train.checkpoint_every``
iterations and at the end) and ``best.pt`` (best validation mIoU). ``--resume``
continues from ``last.pt`` exactly: weights, optimizer, LR schedule, GradScaler,
RNG states and the position in the current epoch's data order.

Iterations count optimizer steps; one step consumes ``train.batch_size`` images
in total (split over processes and ``train.accumulate`` micro-batches), so a
config trains the same recipe on any number of GPUs.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict, List, Optional

LOGGER = logging.getLogger('seg_perception.training')


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``seg-perception train``."""
    parser.add_argument('--config', metavar='YAML',
                        help='training config, e.g. config/train/camvid.yaml (with --resume '
                             'it may be left out: the run folder\'s config.yaml is used)')
    parser.add_argument('--output', metavar='DIR',
                        help='run folder for checkpoints and logs (default runs/<config name>)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run in --output from its last.pt exactly where it '
                             'stopped (starts fresh when there is no last.pt yet)')
    parser.add_argument('--resume-from', metavar='CHECKPOINT',
                        help='continue from this checkpoint instead of OUTPUT/last.pt')
    parser.add_argument('overrides', nargs='*', metavar='KEY=VALUE',
                        help='config overrides with dotted keys, e.g. train.batch_size=4 '
                             'data.root=/data/camvid schedule.epochs=10')


def run(args: argparse.Namespace) -> int:
    """Entry point of the CLI subcommand."""
    from .config import load_config
    output = args.output
    if output is None:
        if args.config is None:
            raise ValueError('give --output (the run to resume) or --config')
        output = os.path.join('runs', os.path.splitext(os.path.basename(args.config))[0])
    resume = args.resume_from
    if resume is None and args.resume:
        resume = os.path.join(output, 'last.pt')
        if not os.path.isfile(resume):
            LOGGER.warning('--resume: %s does not exist yet; starting a new run', resume)
            resume = None
    if args.config is not None:
        config = load_config(args.config, args.overrides)
    elif resume is not None or os.path.isfile(os.path.join(output, 'config.yaml')):
        config = load_config(os.path.join(output, 'config.yaml'), args.overrides)
    else:
        raise ValueError('no config: pass --config FILE')
    train(config, output, resume=resume)
    return 0


def train(config: Dict[str, Any], output_dir: str, resume: Optional[str] = None
          ) -> Dict[str, Any]:
    """Train as ``config`` says (a dict from config.load_config); return a summary.

    ``resume`` is a checkpoint written by an earlier run of the same config. Without
    it, an existing ``output_dir/last.pt`` is an error rather than overwritten.
    """
    from .distributed import init_distributed, shutdown
    ctx = init_distributed(config['train']['device'])
    try:
        from .trainer import Trainer
        trainer = Trainer(config, output_dir, ctx)
        if resume is None and ctx.is_main and os.path.exists(trainer.last_path):
            raise ValueError(f'{trainer.last_path} exists: pass --resume to continue that run, '
                             'or choose another --output')
        return trainer.fit(resume)
    finally:
        package_logger = logging.getLogger('seg_perception')
        for handler in list(package_logger.handlers):
            if getattr(handler, '_seg_perception_run', False):   # this run's train.log
                package_logger.removeHandler(handler)
                handler.close()
        shutdown(ctx)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m seg_perception.training`` (the same as ``seg-perception train``)."""
    from .cli import main as cli_main
    import sys
    return cli_main(['train'] + list(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
    raise SystemExit(main())
