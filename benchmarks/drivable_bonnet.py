#!/usr/bin/env python3
"""The default model's drivable IoU on the comma10k frames of the sample bag, bonnet counted.

    python benchmarks/drivable_bonnet.py              # prints a markdown report
    python benchmarks/drivable_bonnet.py --model try=runs/tries/ema/candidate/model.onnx

Without ``--model`` it scores the shipped models (fp32, and the INT8 file when shipped); each
``--model NAME=PATH`` (repeatable) scores that ONNX file instead, under that name: a recipe
try or a candidate default model before it ships.

The sample bag's dash camera ground truth (``/camera/dash/ground_truth/drivable_mask``) is
255 drivable, 0 not drivable and 128 the ego car's hood (comma10k's "my car"). Each model
runs through the runtime pipeline (ONNX Runtime, as the node runs it, at the file's own
precision) and its drivable mask is scored three ways, per frame and pooled over the frames
(one IoU of the summed counts):

a. hood left out: hood pixels are not scored (how the README's earlier figure was measured);
b. hood counted as not drivable, no ego mask: what a user without a mask gets;
c. hood counted as not drivable, the frame's hood given to the pipeline as its ego mask
   (``process(..., ego_masks=[...])``: ego pixels are never drivable).

(c) equals (a) by construction: the ego pixels are exactly the hood pixels (a) leaves out,
and all of them become correct "not drivable" pixels, which no IoU counts. What it shows is
that the pipeline honours the mask. The hood masks come from the ground truth itself, one per
frame; a real vehicle has one fixed mask per camera, drawn once, which fits less exactly, so
two more rows give the frame's hood mask grown (d) and shrunk (e) by ``--margin`` pixels: a
mask drawn too large hides road, one drawn too small leaves bonnet to be called road.
"""
import argparse
import datetime
import os
import platform
import shlex
import sys
from typing import Dict, List, Tuple

import cv2
import numpy as np

from seg_perception.commands.demo import GROUND_TRUTH_TOPIC, sample_bag_path
from seg_perception.evaluation.metrics import ConfusionMatrix
from seg_perception.evaluation.tables import markdown_table
from seg_perception.model_info import default_model_path
from seg_perception.replay.bag_io import open_bag, stamp_ns
from seg_perception.runtime.cpu_features import cpu_description
from seg_perception.runtime.pipeline import SegmentationPipeline

DASH = '/camera/dash/image_raw/compressed'
HOOD, DRIVABLE = 128, 255
WAYS = (('a', 'hood left out'), ('b', 'hood counted, no ego mask'),
        ('c', 'hood counted, hood as ego mask'), ('d', 'hood counted, ego mask grown {} px'),
        ('e', 'hood counted, ego mask shrunk {} px'))


def dash_frames(bag: str) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(RGB frame, 0 / 128 / 255 ground truth) pairs of the dash camera, in time order."""
    frames: Dict[int, np.ndarray] = {}
    truths: Dict[int, np.ndarray] = {}
    with open_bag(bag, allow_salvage=False) as source:
        for _, msgtype, _, raw in source.messages([DASH, GROUND_TRUTH_TOPIC]):
            msg = source.deserialize(raw, msgtype)
            stamp = stamp_ns(msg.header)
            if msgtype.endswith('CompressedImage'):
                bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
                frames[stamp] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                truths[stamp] = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width)
    if not frames or frames.keys() != truths.keys():
        sys.exit(f'{bag}: dash frames and ground-truth masks do not pair up')
    return [(frames[s], truths[s]) for s in sorted(frames)]


def confusion(predicted_drivable: np.ndarray, truth: np.ndarray,
              hood_scored: bool) -> ConfusionMatrix:
    """Binary confusion (1 = drivable) of one frame; hood pixels ignored unless scored."""
    target = (truth == DRIVABLE).astype(np.uint8)
    if not hood_scored:
        target[truth == HOOD] = 255
    matrix = ConfusionMatrix(2, ignore_index=255)
    matrix.update((predicted_drivable == DRIVABLE).astype(np.uint8), target)
    return matrix


def score(model: str, pairs, margin: int) -> Dict[str, List[ConfusionMatrix]]:
    """Per way, the per-frame confusion matrices of ``model``'s drivable mask."""
    pipeline = SegmentationPipeline(model, backend='onnxruntime')
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    frames = {way: [] for way, _ in WAYS}
    for frame, truth in pairs:
        hood = (truth == HOOD).astype(np.uint8)
        egos = {'c': hood, 'd': cv2.dilate(hood, kernel), 'e': cv2.erode(hood, kernel)}
        plain = pipeline.process([frame])[0].drivable_mask
        frames['a'].append(confusion(plain, truth, hood_scored=False))
        frames['b'].append(confusion(plain, truth, hood_scored=True))
        for way, ego in egos.items():
            with_ego = pipeline.process([frame], ego_masks=[ego])[0].drivable_mask
            frames[way].append(confusion(with_ego, truth, hood_scored=True))
    return frames


def pooled_iou(matrices: List[ConfusionMatrix]) -> float:
    total = ConfusionMatrix(2, ignore_index=255)
    for matrix in matrices:
        total.merge(matrix)
    return total.drivable_iou([1])


def report(models: List[Tuple[str, str]], pairs, margin: int, command: str) -> str:
    hood = [np.count_nonzero(t == HOOD) / t.size for _, t in pairs]
    lines = ['# Drivable IoU on the comma10k frames of the sample bag, bonnet counted', '',
             f'- date: {datetime.date.today().isoformat()}',
             f'- machine: {cpu_description()}, {os.cpu_count()} cores, '
             f'{platform.platform()}, Python {platform.python_version()}',
             f'- command: `{command}`',
             f'- frames: {len(pairs)} ({pairs[0][0].shape[1]}×{pairs[0][0].shape[0]}); '
             f'hood share of the pixels per frame: '
             + ' '.join(f'{100 * h:.0f}%' for h in hood), '']
    header = ['model', 'drivable IoU', 'pooled'] + [str(i) for i in range(len(pairs))]
    rows = []
    for name, model in models:
        frames = score(model, pairs, margin)
        for way, label in WAYS:
            pooled = f'**{pooled_iou(frames[way]):.3f}**'
            rows.append([name, f'({way}) {label.format(margin)}', pooled]
                        + [f'{m.drivable_iou([1]):.2f}' for m in frames[way]])
    lines.append(markdown_table(header, rows, align='ll' + 'r' * (len(header) - 2)))
    return '\n'.join(lines)


def named_model(text: str) -> Tuple[str, str]:
    """``NAME=PATH`` of ``--model``, the file checked to exist."""
    name, sep, path = text.partition('=')
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f'expected NAME=PATH, got {text!r}')
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f'{path}: no such model file')
    return name, path


def shipped_models() -> List[Tuple[str, str]]:
    """The packaged default model, and its INT8 form when shipped."""
    fp32 = default_model_path()
    if fp32 is None:
        sys.exit('the default model is not installed')
    models = [('fp32', fp32)]
    int8 = os.path.join(os.path.dirname(fp32), 'default_model.cpu.int8.onnx')
    if os.path.exists(int8):
        models.append(('INT8', int8))
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', default=sample_bag_path(), help='default: the sample bag')
    parser.add_argument('--margin', type=int, default=10,
                        help='pixels the hood mask is grown and shrunk by in (d), (e) '
                             '(default 10)')
    parser.add_argument('--model', action='append', default=[], metavar='NAME=PATH',
                        type=named_model,
                        help='score this ONNX model under NAME instead of the shipped ones '
                             '(repeatable)')
    args = parser.parse_args()
    if args.margin < 1:
        parser.error(f'--margin must be at least 1, got {args.margin}')
    models = args.model or shipped_models()
    command = ' '.join(['python benchmarks/drivable_bonnet.py']
                       + [shlex.quote(arg) for arg in sys.argv[1:]])
    print(report(models, dash_frames(args.bag), args.margin, command))
    return 0


if __name__ == '__main__':
    sys.exit(main())
