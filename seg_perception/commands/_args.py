"""Options that several commands share, defined once: the model, how to run it, sizes."""
from __future__ import annotations

import argparse
import re
from typing import Tuple

from seg_perception.choices import BACKENDS, RUN_PRECISIONS

MODEL_HELP = 'exported ONNX model (default: the model shipped with the package)'


def parse_size(text: str) -> Tuple[int, int]:
    """'1080x1920' -> (1080, 1920): height x width, as every size on the command line."""
    match = re.fullmatch(r'\s*(\d+)\s*[xX×]\s*(\d+)\s*', text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH such as 1080x1920, got {text!r}')
    return int(match.group(1)), int(match.group(2))


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def add_model_option(parser, *, required: bool = False) -> None:
    """``--model MODEL.onnx`` (the shipped model when left out, unless ``required``)."""
    parser.add_argument('--model', metavar='MODEL.onnx', required=required,
                        help='exported ONNX model' if required else MODEL_HELP)


def add_runtime_options(parser, *, backend: str = 'auto', lists: bool = False) -> None:
    """``--backend --precision --threads --engine-cache-dir``: how the model runs.

    ``lists``: the benchmark's form, where --backend and --precision take comma-separated
    lists to run every combination.
    """
    several = ' (comma-separated: every combination runs)' if lists else ''
    parser.add_argument('--backend', default=backend,
                        choices=None if lists else BACKENDS, metavar='BACKEND',
                        help=f'runtime backend: {", ".join(BACKENDS)}{several} '
                             f'(default {backend})')
    parser.add_argument('--precision', default='auto',
                        choices=None if lists else RUN_PRECISIONS, metavar='PRECISION',
                        help=f'{", ".join(RUN_PRECISIONS)}{several} (default auto: the '
                             'MODEL.cpu.int8.onnx beside the model on a CPU with AVX512-VNNI or '
                             'AVX-VNNI, fp16 on TensorRT, else fp32; fp16 and int8 need '
                             'TensorRT, or a quantised model for int8 on the CPU)')
    parser.add_argument('--threads', type=positive_int, metavar='N',
                        help='CPU inference threads (default: the physical cores, at most 8)')
    parser.add_argument('--engine-cache-dir', metavar='DIR',
                        help='where TensorRT keeps built engines (default '
                             '$SEG_PERCEPTION_ENGINE_CACHE, else ~/.cache/seg_perception)')


def add_drivable_option(parser) -> None:
    """``--drivable-classes CLASS ...``: names or ids that count as drivable."""
    parser.add_argument('--drivable-classes', nargs='+', metavar='CLASS',
                        help="class names or ids that count as drivable (default: the model's)")


def drivable_classes(values):
    """--drivable-classes as the runtime takes it: ids as ints, names as they are; None if
    not given."""
    return [int(v) if v.isdigit() else v for v in values] if values else None
