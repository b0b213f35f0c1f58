"""``seg-perception class-weights``: class weights from the training labels, cached.

The work is done by :mod:`seg_perception.training.class_weights`; this is its shell.
"""
from __future__ import annotations

import os
from pathlib import Path

from seg_perception.errors import InvalidValueError
from seg_perception.training.class_weights import CACHE_NAME, METHODS, cached_class_weights


def configure_parser(parser) -> None:
    """Arguments of ``seg-perception class-weights``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--config', help='training config YAML (its data: section is used)')
    source.add_argument('--dataset', help='dataset name (camvid, cityscapes, bdd100k, '
                        'bdd100k_drivable, apolloscape, folder); needs --root')
    parser.add_argument('--root', help='dataset folder (with --dataset)')
    parser.add_argument('--label-space', help='label space name (with --dataset folder)')
    parser.add_argument('--split', default='train',
                        help='split or role to count (default: train = the train_split)')
    parser.add_argument('--method', choices=METHODS, default='median_freq')
    parser.add_argument('--output', help=f'cache JSON file (default: <root>/{CACHE_NAME})')
    parser.add_argument('--recompute', action='store_true', help='ignore a cached result')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='threads reading label files')


def _resolve_root(root, config_path: Path):
    """A relative root, tried as training does: cwd, repository root, config folder."""
    if not isinstance(root, str) or not root or os.path.isabs(os.path.expanduser(root)):
        return root
    from seg_perception.config import repo_root
    for base in (os.getcwd(), repo_root(), str(config_path.parent)):
        candidate = os.path.normpath(os.path.join(base, os.path.expanduser(root)))
        if os.path.exists(candidate):
            return candidate
    return root


def _data_config(args) -> dict:
    if args.config:
        import yaml
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f'config file {path} not found')
        loaded = yaml.safe_load(path.read_text()) or {}
        # a training config (data: section) or a bare data section
        cfg = loaded.get('data', loaded) if isinstance(loaded, dict) else None
        if not isinstance(cfg, dict) or 'dataset' not in cfg:
            raise InvalidValueError(f'{path}: no data: section with a "dataset" key')
        cfg = dict(cfg, root=args.root or _resolve_root(cfg.get('root'), path))
        return cfg
    if not args.root:
        raise InvalidValueError('--dataset needs --root')
    cfg = {'dataset': args.dataset, 'root': args.root}
    if args.label_space:
        cfg['label_space'] = args.label_space
    return cfg


def run(args) -> int:
    """Count the labels (or reuse the cache) and print one weight per class."""
    from seg_perception.data import build_dataset

    cfg = _data_config(args)
    dataset = build_dataset(cfg, args.split)
    result = cached_class_weights(dataset, args.method, dataset_name=str(cfg['dataset']).lower(),
                                  cache_path=args.output, recompute=args.recompute,
                                  workers=args.workers, progress=True)
    labelled = max(1, result['labelled'])
    origin = 'cached in' if result['cached'] else 'written to'
    print(f'{result["key"]}: {result["num_images"]} images, {origin} {result["cache_path"]}')
    width = max(len(n) for n in result['class_names'])
    for name, pixels, weight in zip(result['class_names'], result['pixels'], result['weights']):
        print(f'  {name:<{width}}  {100.0 * pixels / labelled:7.3f} %  {weight:10.4f}')
    return 0
