#!/usr/bin/env python3
"""Latency and label agreement of an fp32 model and its INT8 (QDQ) versions in ONNX Runtime.

Runs each model on the CPU with the same frames: latency (median and 90th
percentile over ``--runs`` timed runs after warm-up, one frame per run) and the
fraction of pixels whose label equals the fp32 model's, on every image of
``--images``. Prints a Markdown table for benchmarks/INT8.md.

    python3 benchmarks/int8_bench.py --fp32 model.onnx --int8 model.cpu.int8.onnx \\
        model.trt.int8.onnx --images /work/shared/data/camvid/val --count 20 \\
        --size 512x1024 --threads 2 --runs 20

``--random-weights-model DIR`` first exports the DeepLabV3+/Lite0 light model with
random weights (zero-mean classifier, so that its labels vary) at ``--size`` and
quantises it for both targets into DIR, calibrating on ``--calibration``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_perception.deploy import quantize  # noqa: E402
from seg_perception.runtime.cpu_features import cpu_description  # noqa: E402


def make_random_models(folder: str, size, calibration: str, count: int):
    """Export DeepLabV3+/Lite0 (random weights) and quantise it for cpu and tensorrt."""
    import torch
    from seg_perception import models
    from seg_perception.deploy.export import export_onnx
    from seg_perception.labels import CAMVID
    from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    config = {'backbone': 'efficientnet_lite0', 'decoder': 'light'}
    model = models.build_model('deeplabv3plus', CAMVID.num_classes, **config).eval()
    with torch.no_grad():
        model.classifier.weight.sub_(model.classifier.weight.mean(dim=0, keepdim=True))
        model.classifier.bias.zero_()
    info = ModelInfo.from_label_space('deeplabv3plus', CAMVID, size, arch_config=config,
                                      mean=LITE0_MEAN, std=LITE0_STD, dataset='random')
    fp32 = os.path.join(folder, 'deeplabv3plus_lite0.onnx')
    export_onnx(model, info, fp32)
    frames = quantize.spread_pick(quantize.find_images(calibration), count)
    outputs = []
    for target in ('cpu', 'tensorrt'):
        path = os.path.join(folder, f'deeplabv3plus_lite0.{target}.int8.onnx')
        result = quantize.quantize_model(fp32, path, frames, target=target)
        print(f'quantised for {target} in {result.seconds:.0f} s', file=sys.stderr)
        outputs.append(path)
    return fp32, outputs


def session(path: str, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def interleaved_latency_ms(sessions, frame: np.ndarray, runs: int, warmup: int = 3):
    """(min, median, p90) ms per session, timing the sessions in turn on each round, so
    that load from other processes on a shared CPU falls on all of them alike."""
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, {'images': frame})
    times = [[] for _ in sessions]
    for _ in range(runs):
        for sess, record in zip(sessions, times):
            start = time.perf_counter()
            sess.run(None, {'images': frame})
            record.append((time.perf_counter() - start) * 1000)
    results = []
    for record in times:
        record.sort()
        results.append((record[0], statistics.median(record), record[int(0.9 * (len(record) - 1))]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fp32')
    parser.add_argument('--int8', nargs='*', default=[])
    parser.add_argument('--random-weights-model', metavar='DIR')
    parser.add_argument('--calibration', default='/work/shared/data/camvid/train')
    parser.add_argument('--calibration-count', type=int, default=32)
    parser.add_argument('--images', required=True, help='frames for latency and agreement')
    parser.add_argument('--count', type=int, default=20)
    parser.add_argument('--size', default='512x1024', help='frame size fed (HxW)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=20)
    args = parser.parse_args()
    import cv2
    height, width = (int(v) for v in args.size.lower().split('x'))
    if args.random_weights_model:
        args.fp32, args.int8 = make_random_models(args.random_weights_model, (height, width),
                                                  args.calibration, args.calibration_count)
    if not args.fp32:
        parser.error('give --fp32 (and --int8) or --random-weights-model')
    paths = quantize.spread_pick(quantize.find_images(args.images), args.count)
    frames = [cv2.resize(quantize.read_rgb(p), (width, height),
                         interpolation=cv2.INTER_AREA)[None] for p in paths]
    reference = session(args.fp32, args.threads)
    expected = [reference.run(None, {'images': f})[0] for f in frames]
    shares = np.bincount(np.concatenate([e.ravel() for e in expected])) / sum(
        e.size for e in expected)
    print(f'CPU: {cpu_description()}, {os.cpu_count()} logical CPUs, {args.threads} threads; '
          f'{len(frames)} frames of {height}x{width} from {args.images}; fp32 label shares '
          f'{np.round(shares, 3).tolist()}\n')
    models = [args.fp32] + list(args.int8)
    sessions = [reference] + [session(p, args.threads) for p in args.int8]
    load = os.getloadavg()[0]
    timings = interleaved_latency_ms(sessions, frames[0], args.runs)
    print(f'1-minute load average when timing started: {load:.1f} on {os.cpu_count()} CPUs\n')
    print('| model | file | min ms | median ms | p90 ms | labels equal to fp32 '
          '(mean / worst frame) |')
    print('|---|---|---|---|---|---|')
    for path, sess, (fastest, median, p90) in zip(models, sessions, timings):
        agreement = [float((sess.run(None, {'images': f})[0] == e).mean())
                     for f, e in zip(frames, expected)]
        record = quantize.quantization_record(path)
        kind = 'fp32' if record is None else (
            f'INT8 {record["target"]} ({record["activation_type"]} activations, '
            f'{"per-channel" if record["per_channel"] else "per-tensor"} weights, '
            f'{record["calibration"]})')
        print(f'| {kind} | {os.path.basename(path)} | {fastest:.1f} | {median:.1f} | '
              f'{p90:.1f} | {np.mean(agreement):.2%} / {min(agreement):.2%} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
