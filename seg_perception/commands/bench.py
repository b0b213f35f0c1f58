"""``seg-perception bench``: per-stage latency of the pipeline and of the naive alternative.

The work is done by :mod:`seg_perception.bench.pipeline_bench`; this is its shell.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile

from seg_perception.bench.pipeline_bench import (machine, markdown_table, model_files,
                                                 run_config, summary_lines, write_results)
from seg_perception.commands._args import add_runtime_options, parse_size
from seg_perception.errors import InvalidValueError
from seg_perception.choices import BACKENDS, RUN_PRECISIONS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception bench``."""
    parser.add_argument('--model', help='exported ONNX model (default: the shipped model, '
                        'else a random DeepLabV3+ Lite0 exported at 512x1024)')
    parser.add_argument('--checkpoint', help='checkpoint of the same model, for --naive')
    parser.add_argument('--input-size', type=parse_size, default=(1080, 1920), metavar='HxW',
                        help='camera frame size (default 1080x1920)')
    parser.add_argument('--batch', type=int, default=1, help='cameras per call (default 1)')
    parser.add_argument('--iterations', type=int, default=20, help='timed calls (default 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls first (default 3)')
    add_runtime_options(parser, lists=True)
    parser.add_argument('--naive', action='store_true',
                        help='also time the naive PyTorch pipeline on the same model and on '
                             'torchvision deeplabv3_mobilenet_v3_large')
    parser.add_argument('--no-torchvision', action='store_true',
                        help='with --naive, skip the torchvision model')
    parser.add_argument('--color', action='store_true', help='pipeline makes the overlay too')
    parser.add_argument('--ego', action='store_true', help='pipeline keeps the ego region')
    parser.add_argument('--fill-holes', type=int, default=0, metavar='PX',
                        help='pipeline fills drivable holes smaller than PX')
    parser.add_argument('--output', help='write the results: .md (markdown) or .json')


def run(args: argparse.Namespace) -> int:
    """Run every configuration, print a table, write --output."""
    for name in ('batch', 'iterations'):
        if getattr(args, name) < 1:
            raise InvalidValueError(f'--{name} must be at least 1')
    backends = [b.strip() for b in args.backend.split(',') if b.strip()]
    precisions = [p.strip() for p in args.precision.split(',') if p.strip()]
    for value, known, what in ((backends, BACKENDS, 'backend'),
                               (precisions, RUN_PRECISIONS, 'precision')):
        unknown = [v for v in value if v not in known]
        if unknown:
            raise InvalidValueError(f'unknown {what} {unknown[0]!r}; choose from '
                                    f'{", ".join(known)}')
    with tempfile.TemporaryDirectory(prefix='seg_bench_') as scratch:
        model, checkpoint, built = model_files(args, scratch)
        common = {'model': model, 'input_size': list(args.input_size), 'batch': args.batch,
                  'iterations': args.iterations, 'warmup': args.warmup,
                  'threads': args.threads or 0}
        configs = [dict(common, kind='pipeline', backend=b, precision=p, color=args.color,
                        ego=args.ego, fill_holes=args.fill_holes,
                        engine_cache_dir=args.engine_cache_dir)
                   for b in backends for p in precisions]
        if args.naive:
            if checkpoint:
                configs.append(dict(common, kind='naive', checkpoint=checkpoint))
            else:
                print('--naive: no checkpoint of this model (--checkpoint); skipping the naive '
                      'pipeline on the same model', file=sys.stderr)
            if not args.no_torchvision:
                configs.append(dict(common, kind='torchvision'))
        load_before = os.getloadavg()
        rows = [run_config(config) for config in configs]
        load_after = os.getloadavg()
    from seg_perception.model_info import load_model_info
    report = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'command': shlex.join(['seg-perception'] + sys.argv[1:]),
              'machine': machine(), 'load_average': [load_before, load_after],
              'model': built or f'{model} ({load_model_info(model).summary()})',
              'settings': common, 'results': rows}
    print(markdown_table(rows))
    for line in summary_lines(rows):
        print(line)
    if args.output:
        write_results(report, args.output)
        print(f'wrote {args.output}')
    return 0 if all('error' not in r for r in rows) else 1
