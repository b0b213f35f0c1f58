"""``seg-perception quantize``: static INT8 post-training quantisation into a QDQ graph.

The work is done by :mod:`seg_perception.deploy.quantize`; this is its shell.
"""
from __future__ import annotations

import argparse

from seg_perception.deploy.quantize import (CALIBRATIONS, DEFAULT_COUNT, TARGETS, QuantizeError,
                                            dataset_images, find_images, quantize_model,
                                            spread_pick)
from seg_perception.model_info import load_model_info, resolve_model_path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception quantize``."""
    parser.add_argument('--model', required=True, help='fp32 ONNX model from seg-perception export')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', metavar='DIR',
                        help='folder of calibration frames (searched recursively)')
    source.add_argument('--dataset', metavar='NAME',
                        help='calibrate on a dataset split (camvid, cityscapes, ...); '
                             'needs --root')
    parser.add_argument('--root', metavar='DIR', help='dataset folder for --dataset')
    parser.add_argument('--split', default='train', help='dataset split (default train)')
    parser.add_argument('--count', type=int, default=DEFAULT_COUNT,
                        help=f'calibration frames, spread over the set (default {DEFAULT_COUNT})')
    parser.add_argument('--target', choices=TARGETS, required=True,
                        help='cpu: uint8 activations for ONNX Runtime; tensorrt: symmetric '
                             'int8 for build-engine --precision int8')
    parser.add_argument('--output', required=True, help='quantised ONNX file to write')
    parser.add_argument('--calibration', choices=CALIBRATIONS, default='minmax',
                        help='activation range estimate (default minmax)')
    parser.add_argument('--exclude', nargs='+', default=[], metavar='NODE_OR_OP',
                        help='network node names or operator types to keep in float')
    parser.add_argument('--per-tensor', action='store_true',
                        help='one weight scale per tensor instead of per output channel')
    parser.add_argument('--reduce-range', action='store_true',
                        help='7-bit weights (x86 CPUs without VNNI can saturate with 8)')
    parser.add_argument('--quantize-classifier', action='store_true',
                        help='also quantise the final classifier layer (kept float by default)')


def run(args: argparse.Namespace) -> int:
    """Quantise; print the output path and a summary."""
    if args.dataset and not args.root:
        raise QuantizeError('--dataset needs --root (the dataset folder)')
    if args.count < 1:
        raise QuantizeError(f'--count must be at least 1, got {args.count}')
    load_model_info(resolve_model_path(args.model))   # a foreign model fails before any image
    if args.images:
        paths = find_images(args.images)
    else:
        paths = dataset_images(args.dataset, args.root, args.split)
    chosen = spread_pick(paths, args.count)
    result = quantize_model(args.model, args.output, chosen, target=args.target,
                            calibration=args.calibration, exclude=args.exclude,
                            per_channel=not args.per_tensor, reduce_range=args.reduce_range,
                            quantize_classifier=args.quantize_classifier)
    print(args.output)
    print(f'  target         {result.target}: {result.activation_type} activations, '
          f'{result.weight_type} weights ({"per channel" if result.per_channel else "per tensor"})')
    print(f'  calibration    {result.calibration} on {result.images} of {len(paths)} images')
    print(f'  quantised      {result.quantized_nodes} network nodes; float: '
          f'{", ".join(result.float_nodes) or "none"}')
    print(f'  time           {result.seconds:.1f} s')
    if args.target == 'tensorrt':
        print(f'  next           seg-perception build-engine --model {args.output} '
              '--precision int8')
    return 0
