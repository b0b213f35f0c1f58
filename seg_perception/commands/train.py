"""``seg-perception train``: train a segmentation network from a config file.

The work is done by :func:`seg_perception.training.run.train`; this is its shell.
"""
from __future__ import annotations

import argparse
import logging
import os

from seg_perception.config import load_config
from seg_perception.errors import InvalidValueError
from seg_perception.training.run import train

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
    output = args.output
    if output is None:
        if args.config is None:
            raise InvalidValueError('give --output (the run to resume) or --config')
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
        raise InvalidValueError('no config: pass --config FILE')
    train(config, output, resume=resume)
    return 0
