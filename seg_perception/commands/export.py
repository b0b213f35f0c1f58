"""``seg-perception export``: a training checkpoint to the one deployable ONNX graph.

The work is done by :func:`seg_perception.deploy.export.export_onnx`; this is its shell.
"""
from __future__ import annotations

import argparse
import logging
import os

from seg_perception.commands._args import parse_size
from seg_perception.choices import OUTPUT_RESOLUTIONS
from seg_perception.deploy.export import (DEFAULT_OPSET, EXPORTERS, ExportError, export_onnx,
                                          parity_with_torch, smooth_test_frame)
from seg_perception.errors import CommandError

LOG = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception export``."""
    parser.add_argument('--checkpoint', required=True,
                        help='checkpoint written by seg-perception train (it carries the '
                             'architecture, classes and preprocessing)')
    parser.add_argument('--output', required=True, help='ONNX file to write')
    parser.add_argument('--input-size', type=parse_size, metavar='HxW',
                        help='network input size (default: the one the model was trained at)')
    parser.add_argument('--confidence', action='store_true',
                        help="also output 'confidence' (uint8, max softmax × 255)")
    parser.add_argument('--output-resolution', choices=OUTPUT_RESOLUTIONS, default='camera',
                        help='labels at camera resolution (bilinear logits, exact boundaries) '
                             'or at network resolution (cheaper; the runtime resizes)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--exporter', choices=EXPORTERS, default='auto',
                        help='torch exporter (auto: dynamo for opset >= 18, falling back '
                             'to legacy; legacy below 18)')
    parser.add_argument('--probabilities', nargs='+', default=[], metavar='CLASS',
                        help='also output the softmax probability (uint8, p × 255) of these '
                             "classes (names, space- or comma-separated) as 'probabilities'")
    parser.add_argument('--no-verify', action='store_true',
                        help='skip comparing ONNX Runtime with PyTorch on a test frame')


def run(args: argparse.Namespace) -> int:
    """Export a checkpoint; print the written path and a summary."""
    from seg_perception.models.checkpoint import build_model_from_checkpoint
    model, info = build_model_from_checkpoint(args.checkpoint)
    try:
        info = export_onnx(model, info, args.output, opset=args.opset,
                           with_confidence=args.confidence,
                           output_resolution=args.output_resolution,
                           input_size=args.input_size, exporter=args.exporter,
                           probabilities=[name.strip() for arg in args.probabilities
                                          for name in arg.split(',') if name.strip()])
    except ExportError as exc:
        raise CommandError(f'{args.checkpoint}: {exc}') from exc
    parameters = sum(p.numel() for p in model.parameters())
    print(args.output)
    print(f'  architecture   {info.architecture} ({parameters / 1e6:.2f} M parameters)')
    print(f'  classes        {info.num_classes} ({info.label_space or "custom"}): '
          f'{", ".join(info.class_names)}')
    print(f'  network input  {info.input_size[0]}x{info.input_size[1]}, '
          f'mean {list(info.mean)}, std {list(info.std)}')
    print(f'  graph          images uint8 NxHxWx3 RGB -> {", ".join(info.outputs)} uint8 '
          f'at {info.output_resolution} resolution, opset {args.opset}')
    print(f'  file size      {os.path.getsize(args.output) / 1e6:.1f} MB')
    if not args.no_verify:
        height, width = info.input_size
        frame = smooth_test_frame(height * 3 // 4 + 1, width * 3 // 4 + 3)
        agreement = parity_with_torch(args.output, model, info, frame)
        print(f'  check          ONNX Runtime equals PyTorch on {agreement:.4%} of pixels')
        if agreement < 0.999:
            LOG.warning('ONNX Runtime and PyTorch disagree on %.3f%% of pixels',
                        100 * (1 - agreement))
    return 0
