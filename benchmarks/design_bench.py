#!/usr/bin/env python3
"""Measure the design choices that the package's docstrings and comments justify.

Each section times (or counts) one choice on the shipped default model
(seg_perception/assets/default_model.onnx) and the sample bag's real frames
(seg_perception/assets/sample_bag), upscaled to 1920x1080 where the choice is about
camera-size frames, and writes the figures to benchmarks/DESIGN.md:

    python benchmarks/design_bench.py [--output benchmarks/DESIGN.md] [--runs 30]

Timings are medians of interleaved runs (the alternatives take turns, so a change
in the machine's load falls on all of them alike). The load average is recorded
before and after. A hand-written notes section at the end of the output file is
kept when the script rewrites it.
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from design_graphs import (all_activations_model, camera_head, logits_model,  # noqa: E402
                           network_head, normalisation_nodes, per_channel_normalisation,
                           preprocessing_model)
from design_report import report  # noqa: E402
from seg_perception.bench.pipeline_bench import NOTES_MARKER, machine  # noqa: E402
from seg_perception.model_info import load_model_info, resolve_model_path  # noqa: E402
from seg_perception.replay.bag_io import open_bag  # noqa: E402
from seg_perception.ros.conversions import image_to_rgb  # noqa: E402
from seg_perception.runtime.drivable import NEAREST, DrivableMasker  # noqa: E402
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from seg_perception.runtime.pipeline import SegmentationPipeline  # noqa: E402

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'seg_perception', 'assets')
SAMPLE_BAG = os.path.join(ASSETS, 'sample_bag')
INT8_MODEL = os.path.join(ASSETS, 'default_model.cpu.int8.onnx')
CAMERA = (1080, 1920)           # height, width
FILL_HOLES_PX = 500             # the bench's --fill-holes setting


# -- inputs -----------------------------------------------------------------------------------

def bag_frames(path: str) -> List[np.ndarray]:
    """Every camera image of the bag as RGB (ground-truth mask topics left out)."""
    with open_bag(path) as bag:
        topics = [name for name, topic in bag.topics.items()
                  if 'image_raw' in name and 'Image' in topic.msgtype]
        return [image_to_rgb(bag.deserialize(raw, msgtype))
                for _, msgtype, _, raw in bag.messages(topics)]


def resized(image: np.ndarray, size, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.resize(image, (size[1], size[0]), interpolation=interpolation)


# -- timing -----------------------------------------------------------------------------------

def interleaved(candidates: Dict[str, Callable[[], object]], runs: int,
                warmup: int = 2) -> Dict[str, List[float]]:
    """Milliseconds per call of each candidate, the candidates taking turns."""
    for call in candidates.values():
        for _ in range(warmup):
            call()
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, call in candidates.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def session(model, threads: int, spin: bool = False,
            profile_prefix: str = '') -> ort.InferenceSession:
    """A CPU session set up like OnnxRuntimeBackend's (sequential, optimisation 'all')."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for pool in ('intra_op', 'inter_op'):
        options.add_session_config_entry(f'session.{pool}.allow_spinning', str(int(spin)))
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=['CPUExecutionProvider'])


def profiled_node_ms(profile_path: str, names: Sequence[str]) -> float:
    """Summed median kernel time (ms) of the nodes ``names`` over the profiled runs."""
    import json
    with open(profile_path) as stream:
        events = json.load(stream)
    kernels = {f'{name}_kernel_time': [] for name in names}
    for event in events:
        if event.get('cat') == 'Node' and event['name'] in kernels:
            kernels[event['name']].append(event['dur'] / 1e3)
    return sum(median(times[1:] or times) for times in kernels.values() if times)


# -- the measurements -------------------------------------------------------------------------

def measure_resize(model_path, frames, size, threads, runs, folder) -> dict:
    """Graph resize of a camera frame against cv2.resize before the graph."""
    full = session(model_path, threads)
    pre = session(preprocessing_model(model_path, folder), threads)
    name = full.get_inputs()[0].name
    camera = resized(frames[0], CAMERA)[None]
    network = resized(frames[0], size)[None]
    times = interleaved({
        'graph fed 1080p': lambda: full.run(None, {name: camera}),
        'graph fed network size': lambda: full.run(None, {name: network}),
        'preprocessing nodes, 1080p': lambda: pre.run(None, {name: camera}),
        'preprocessing nodes, network size': lambda: pre.run(None, {name: network}),
        'cv2.resize 1080p -> network (INTER_LINEAR)': lambda: resized(camera[0], size),
    }, runs)
    return {key: median(values) for key, values in times.items()}


def measure_upsampling(model_path, frames, size, classes, threads, runs, folder) -> dict:
    """Bilinear logits upsampling + argmax at 1080p against argmax + nearest upsampling."""
    logits_session = session(logits_model(model_path, folder), threads)
    product = session(model_path, threads)
    camera = session(camera_head(model_path, classes), threads)
    network = session(network_head(classes), threads)
    sizes = np.array([1, classes, *CAMERA], np.int64)
    name = logits_session.get_inputs()[0].name
    agree_exact, agree_plain, agree_own, boundary, near_boundary = [], [], [], [], []
    first_logits, same_as_product = None, True
    for frame in frames:
        batch = resized(frame, size)[None]
        logits = logits_session.run(None, {name: batch})[0]
        first_logits = logits if first_logits is None else first_logits
        exact = camera.run(None, {'logits': logits, 'sizes': sizes})[0][0]
        small = network.run(None, {'logits': logits})[0][0]
        # The cut graph is the product's: its argmax gives the shipped graph's labels.
        same_as_product &= np.array_equal(small, product.run(None, {name: batch})[0][0])
        fast = resized(small, CAMERA, NEAREST)
        agree_exact.append(float((fast == exact).mean()))
        # Where they differ: within one network pixel of a class boundary, or not.
        kernel = np.ones((3, 3), np.uint8)
        band = resized((cv2.dilate(small, kernel) != cv2.erode(small, kernel)).view(np.uint8),
                       CAMERA, NEAREST).astype(bool)
        differ = fast != exact
        near_boundary.append(float((differ & band).sum() / max(1, differ.sum())))
        agree_plain.append(float((resized(small, CAMERA, cv2.INTER_NEAREST) == exact).mean()))
        own = frame.shape[:2]
        exact = camera.run(None, {'logits': logits,
                                  'sizes': np.array([1, classes, *own], np.int64)})[0][0]
        agree_own.append(float((resized(small, own, NEAREST) == exact).mean()))
        edges = (small[1:, :] != small[:-1, :])[:, :-1] | (small[:, 1:] != small[:, :-1])[:-1, :]
        boundary.append(float(edges.mean()))
    small = network.run(None, {'logits': first_logits})[0][0]
    times = interleaved({
        'camera: bilinear logits to 1080p + argmax': lambda: camera.run(
            None, {'logits': first_logits, 'sizes': sizes}),
        'network: argmax at network size': lambda: network.run(None, {'logits': first_logits}),
        'network: nearest upsampling of ids to 1080p': lambda: resized(small, CAMERA, NEAREST),
    }, runs)
    return {'times': {key: median(values) for key, values in times.items()},
            'agree_exact': agree_exact, 'agree_plain': agree_plain, 'agree_own': agree_own,
            'boundary': boundary, 'near_boundary': near_boundary,
            'same_as_product': same_as_product,
            'logits_shape': list(first_logits.shape)}


def measure_spinning(model_path, frames, threads, runs) -> dict:
    """The pipeline at 1080p with the backend's threads spinning or not.

    The two pipelines take turns in blocks (a spinning pool keeps spinning for a while
    after a call, which would land on the other one's next call); the first call of each
    block is not counted. CPU time is this process's user + system time per frame.
    """
    info = load_model_info(model_path)
    camera = [resized(frame, CAMERA) for frame in frames]
    pipelines = {}
    for spin in (False, True):
        backend = OnnxRuntimeBackend(model_path, info, threads=threads, spin=spin)
        pipelines[spin] = SegmentationPipeline(backend=backend, keep_ego_region=True,
                                               fill_holes_px=FILL_HOLES_PX, want_color=True,
                                               reuse_outputs=True)
    stats = {spin: {'total': [], 'infer': [], 'postprocess': [], 'cpu': []} for spin in pipelines}
    block = 6
    for round_index in range(max(1, runs // (block - 1))):
        for spin, pipeline in pipelines.items():
            pipeline.process([camera[round_index % len(camera)]])
            before = resource.getrusage(resource.RUSAGE_SELF)
            for index in range(block - 1):
                result = pipeline.process([camera[(round_index + index) % len(camera)]])[0]
                for stage in ('total', 'infer', 'postprocess'):
                    stats[spin][stage].append(result.timings[stage])
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            stats[spin]['cpu'].append(cpu * 1e3 / (block - 1))
    return {spin: {stage: median(values) for stage, values in by_stage.items()}
            for spin, by_stage in stats.items()}


def measure_normalisation(frames, size, threads, runs, folder) -> dict:
    """INT8 graph with scalar against per-channel normalisation constants."""
    scalar = onnx.load(INT8_MODEL)
    models = {'scalar': scalar, 'per-channel (1×3×1×1)': per_channel_normalisation(scalar)}
    inputs = [resized(frame, size)[None] for frame in frames]
    name = scalar.graph.input[0].name
    sessions = {key: session(model, threads) for key, model in models.items()}
    equal = all(np.array_equal(*(s.run(None, {name: x})[0] for s in sessions.values()))
                for x in inputs)
    times = interleaved({key: (lambda s=s: s.run(None, {name: inputs[0]}))
                         for key, s in sessions.items()}, runs)
    nodes = normalisation_nodes(scalar)
    profiled = {}
    for key, model in models.items():
        profiling = session(model, threads,
                            profile_prefix=os.path.join(folder, key.split()[0]))
        for _ in range(runs + 1):
            profiling.run(None, {name: inputs[0]})
        profiled[key] = profiled_node_ms(profiling.end_profiling(), nodes)
    return {'total': {key: median(values) for key, values in times.items()},
            'fastest': {key: min(values) for key, values in times.items()},
            'normalisation': profiled, 'labels_equal': equal, 'frames': len(inputs)}


def measure_drivable(model_path, frames, size, classes, drivable_ids, threads, runs) -> dict:
    """DrivableMasker at network size then resized, against on the upsampled labels."""
    network = session(model_path, threads)
    name = network.get_inputs()[0].name
    labels = [network.run(None, {name: resized(frame, size)[None]})[0][0] for frame in frames]
    upsampled = [resized(ids, CAMERA, NEAREST) for ids in labels]
    result = {}
    for title, options in (('lookup only', {}),
                           (f'ego region + holes < {FILL_HOLES_PX} px',
                            {'keep_ego_region': True, 'fill_holes_px': FILL_HOLES_PX})):
        masker = DrivableMasker(drivable_ids, **options)
        small = [masker(ids, size=CAMERA) for ids in labels]
        big = [masker(ids) for ids in upsampled]
        equal = float(np.mean([(a == b).mean() for a, b in zip(small, big)]))
        out = np.empty(CAMERA, np.uint8)
        times = interleaved({
            'at network size, then resized': lambda: masker(labels[0], out=out, size=CAMERA),
            'on the 1080p labels': lambda: masker(upsampled[0], out=out),
        }, runs * 3)
        result[title] = {'times': {key: median(values) for key, values in times.items()},
                         'equal': equal}
    masker = DrivableMasker(drivable_ids)
    inverted = cv2.bitwise_not(masker(upsampled[0]))
    count, components = cv2.connectedComponents(inverted, None, 8, cv2.CV_16U)
    count_times = interleaved({
        'cv2.calcHist': lambda: cv2.calcHist([components], [0], None, [count], [0, count]),
        'np.bincount': lambda: np.bincount(components.reshape(-1), minlength=count),
    }, runs * 3)
    colours = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    table = colours.reshape(256, 1, 3)
    ids = np.ascontiguousarray(upsampled[0])
    colour_equal = np.array_equal(cv2.applyColorMap(ids, table), colours[ids])
    colour_times = interleaved({
        'cv2.applyColorMap': lambda: cv2.applyColorMap(ids, table),
        'palette[labels]': lambda: colours[ids],
    }, runs * 3)
    return {'masker': result, 'components': count,
            'count': {key: median(values) for key, values in count_times.items()},
            'colour': {key: median(values) for key, values in colour_times.items()},
            'colour_equal': colour_equal}


def measure_calibration_memory(model_path, frames, threads) -> dict:
    """Bytes of every float activation of one frame: what a histogram calibrator keeps."""
    model = all_activations_model(onnx.load(model_path))
    probe = session(model, threads)
    name = probe.get_inputs()[0].name
    result = {}
    for title, frame in (('1080p frame', resized(frames[0], CAMERA)),
                         (f'{frames[0].shape[1]}x{frames[0].shape[0]} frame', frames[0])):
        outputs = probe.run(None, {name: frame[None]})
        result[title] = (sum(array.nbytes for array in outputs if array.dtype == np.float32),
                         sum(1 for array in outputs if array.dtype == np.float32))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', default=os.path.join('benchmarks', 'DESIGN.md'),
                        help='Markdown file to write (default: benchmarks/DESIGN.md)')
    parser.add_argument('--runs', type=int, default=30, help='timed runs per alternative')
    parser.add_argument('--threads', type=int, default=2, help='ONNX Runtime intra-op threads')
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    model_path = resolve_model_path(None)
    info = load_model_info(model_path)
    size, classes = tuple(info.input_size), info.num_classes
    frames = bag_frames(SAMPLE_BAG)
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix='design_bench_') as folder:
        steps = [
            ('resize', lambda: measure_resize(model_path, frames, size, args.threads,
                                              args.runs, folder)),
            ('upsampling', lambda: measure_upsampling(model_path, frames, size, classes,
                                                      args.threads, args.runs, folder)),
            ('spinning', lambda: measure_spinning(model_path, frames, args.threads, args.runs)),
            ('normalisation', lambda: measure_normalisation(frames, size, args.threads,
                                                            args.runs, folder)),
            ('drivable', lambda: measure_drivable(model_path, frames, size, classes,
                                                  info.drivable_ids, args.threads, args.runs)),
            ('calibration', lambda: measure_calibration_memory(model_path, frames,
                                                               args.threads)),
        ]
        for name, step in steps:
            start = time.perf_counter()
            results[name] = step()
            print(f'design_bench: {name} ({time.perf_counter() - start:.0f} s)',
                  file=sys.stderr, flush=True)
    context = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join(['python', 'benchmarks/design_bench.py', *(argv or sys.argv[1:])]),
        'machine': machine(), 'load': (load_before, os.getloadavg()),
        'model': os.path.relpath(model_path), 'size': size, 'classes': classes,
        'threads': args.threads, 'frames': len(frames), 'runs': args.runs,
        'fill_holes_px': FILL_HOLES_PX,
    }
    notes = ''
    if os.path.isfile(args.output):
        with open(args.output) as stream:
            text = stream.read()
        notes = text[text.index(NOTES_MARKER):] if NOTES_MARKER in text else ''
    with open(args.output, 'w') as stream:
        stream.write(report(results, context, notes))
    print(f'design_bench: wrote {args.output}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
