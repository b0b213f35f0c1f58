"""``seg-perception models``: every registered architecture with its parameter count."""
from __future__ import annotations

import argparse
import json
from typing import Dict, List

from seg_perception.errors import InvalidValueError


def describe_models(num_classes: int = 19) -> List[Dict]:
    """One row per architecture at its default settings: name, parameters, size multiple.

    A builder that fails gives a row with 'error' instead of counts.
    """
    import torch

    from seg_perception.models.checkpoint import offline_config
    from seg_perception.models import build_model, list_models
    rows = []
    for name in list_models():
        config = offline_config(name, {})
        try:
            # Meta tensors: counts without allocating (or initialising) any weights.
            with torch.device('meta'):
                model = build_model(name, num_classes, **config)
        except Exception:  # noqa: BLE001 - some builders need real tensors; try those on CPU
            try:
                model = build_model(name, num_classes, **config)
            except Exception as exc:  # noqa: BLE001 - report the failing builder, list the rest
                rows.append({'name': name, 'error': f'{type(exc).__name__}: {exc}'})
                continue
        parameters = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append({'name': name, 'parameters': int(parameters),
                     'trainable_parameters': int(trainable),
                     'size_multiple': int(getattr(model, 'size_multiple', 1))})
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception models``."""
    parser.add_argument('--num-classes', type=int, default=19,
                        help='classes of the output layer the counts assume (default 19, '
                             'Cityscapes)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON); exit status 1 if any architecture failed to build."""
    if args.num_classes < 2:
        raise InvalidValueError(f'--num-classes must be at least 2, got {args.num_classes}')
    rows = describe_models(args.num_classes)
    if args.json:
        print(json.dumps({'num_classes': args.num_classes, 'models': rows}, indent=2))
    else:
        width = max([len('architecture')] + [len(r['name']) for r in rows])
        print(f'{"architecture":<{width}}  {"parameters":>12}  {"millions":>8}  '
              f'{"size multiple":>13}')
        for row in rows:
            if 'error' in row:
                print(f'{row["name"]:<{width}}  failed to build: {row["error"]}')
                continue
            print(f'{row["name"]:<{width}}  {row["parameters"]:>12,}  '
                  f'{row["parameters"] / 1e6:>8.2f}  {row["size_multiple"]:>13}')
        print(f'{len(rows)} architectures, parameter counts for {args.num_classes} classes '
              'at default settings')
    return 1 if any('error' in r for r in rows) else 0
