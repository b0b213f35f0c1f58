"""Latency, throughput and memory of the inference pipeline (``seg-perception bench``).

For each backend × precision asked for, the real pipeline (seg_perception.runtime
.pipeline) runs on camera-size frames (default 1920×1080) with the model at its
network size; per-stage latency (median, p95), frames per second and peak memory
(ru_maxrss) are reported. With ``--naive`` the same run also times the pipeline a
user would otherwise write (bench/naive.py) on the same model, and torchvision's
deeplabv3_mobilenet_v3_large through it. Each configuration runs in its own
process, so the peak memory of one does not include another's (and the ONNX
Runtime pipeline's is measured without torch loaded).

Without ``--model`` the shipped default model is used; without one, a DeepLabV3+
(EfficientNet-Lite0, light decoder, 19 classes, random weights: speed does not
depend on them) is built and exported at 512×1024 with network-resolution output.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np

from seg_perception.runtime.cpu_features import cpu_description

STAGES = ('convert', 'infer', 'postprocess', 'total')
NOTES_MARKER = '<!-- notes: kept when the benchmark rewrites this file -->'


# -- the model ----------------------------------------------------------------

def model_files(args, scratch: str):
    """(onnx path, checkpoint path or None, description if built here or None)."""
    from seg_perception.model_info import default_model_path, resolve_model_path
    if args.model or default_model_path():
        # without --model, --checkpoint is the default model's own training checkpoint
        return resolve_model_path(args.model), args.checkpoint, None
    import torch

    from seg_perception.models.checkpoint import make_checkpoint, save_checkpoint
    from seg_perception.deploy.export import export_onnx
    from seg_perception.labels import CITYSCAPES
    from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo
    from seg_perception.models import build_model
    torch.manual_seed(0)
    config = {'backbone': 'efficientnet_lite0', 'decoder': 'light'}
    model = build_model('deeplabv3plus', CITYSCAPES.num_classes, **config).eval()
    info = ModelInfo.from_label_space('deeplabv3plus', CITYSCAPES, (512, 1024),
                                      mean=LITE0_MEAN, std=LITE0_STD, arch_config=config,
                                      dataset='cityscapes')
    path = os.path.join(scratch, 'deeplabv3plus_lite0_light.onnx')
    info = export_onnx(model, info, path, output_resolution='network')
    checkpoint = save_checkpoint(os.path.join(scratch, 'deeplabv3plus.pt'),
                                 make_checkpoint(model, info))
    return path, checkpoint, ('DeepLabV3+ EfficientNet-Lite0 light decoder, 19 classes, '
                              'random weights, exported at 512x1024, network-resolution output')


# -- one configuration, in its own process --------------------------------------

def run_config(config: dict) -> dict:
    label = _label(config)
    print(f'bench: {label} ...', file=sys.stderr, flush=True)
    env = dict(os.environ)
    if config['kind'] != 'pipeline':
        # Idle OpenMP threads in torch busy-wait by default, which on a shared CPU slows the
        # naive forward down badly. Passive waiting is the fair comparison with our ONNX
        # Runtime session, whose threads do not spin either (benchmarks/DESIGN.md).
        env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    done = subprocess.run([sys.executable, '-m', __name__, json.dumps(config)],
                          capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        message = (done.stderr.strip().splitlines() or ['failed'])[-1]
        return {'label': label, 'kind': config['kind'], 'error': message}
    result = json.loads(lines[-1])
    if config['kind'] == 'pipeline':    # the precision it ran at: an INT8 file runs as int8
        label = _label(dict(config, precision=result['describe'].get('precision', 'fp32')))
    return dict(result, label=label, kind=config['kind'])


def _label(config: dict) -> str:
    if config['kind'] == 'pipeline':
        return f'pipeline {config["backend"]} {config["precision"]}'
    return 'naive, same model' if config['kind'] == 'naive' else 'naive, torchvision'


def _frames(config: dict) -> List[np.ndarray]:
    """Road-like synthetic frames: smooth gradients, edges and noise, RGB."""
    height, width = config['input_size']
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    base = np.stack([np.broadcast_to(rows * 200, (height, width)),
                     np.broadcast_to(cols * 120 + 60, (height, width)),
                     np.where(rows > 0.55, 90.0, 200.0) + 0 * cols], axis=-1)
    frames = []
    for _ in range(config['batch']):
        noise = rng.normal(0, 12, (height, width, 3)).astype(np.float32)
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return frames


def worker(config: dict) -> dict:
    frames = _frames(config)
    if config['kind'] == 'pipeline':
        from seg_perception.runtime.pipeline import SegmentationPipeline
        seg = SegmentationPipeline(
            config['model'], backend=config['backend'], precision=config['precision'],
            threads=config['threads'] or None, engine_cache_dir=config['engine_cache_dir'],
            want_color=config['color'], keep_ego_region=config['ego'],
            fill_holes_px=config['fill_holes'])
        describe = seg.describe()

        def step():
            results = seg.process(frames)
            timing = {k: sum(r.timings[k] for r in results)
                      for k in ('convert', 'upsample', 'drivable', 'overlay', 'postprocess')}
            timing.update(infer=results[0].timings['infer'], total=results[0].timings['total'])
            return timing
    else:
        from seg_perception.bench.naive import naive_from_checkpoint, naive_torchvision
        if config['kind'] == 'naive':
            naive = naive_from_checkpoint(config['checkpoint'], config['threads'])
        else:
            from seg_perception.model_info import load_model_info
            info = load_model_info(config['model'])
            naive = naive_torchvision(info.num_classes, info.input_size, config['threads'])
        describe = {'name': naive.name, 'device': 'cpu', 'precision': 'fp32',
                    'threads': naive.torch.get_num_threads()}

        def step():
            return naive.process(frames)[1]
    for _ in range(config['warmup']):
        step()
    samples = [step() for _ in range(config['iterations'])]
    stats = {}
    for key in samples[0]:
        values = np.array([s[key] for s in samples])
        stats[key] = {'median': float(np.median(values)),
                      'p95': float(np.percentile(values, 95)), 'min': float(values.min())}
    seconds = sum(s['total'] for s in samples) / 1000.0
    result = {'describe': _plain(describe), 'stages_ms': stats,
              'fps': config['batch'] * len(samples) / seconds,
              'peak_rss_mb': _peak_rss_mb(), 'torch_loaded': 'torch' in sys.modules}
    if config['kind'] == 'pipeline' and describe['name'].startswith('onnxruntime') \
            and describe['name'] != 'onnxruntime-tensorrt':
        from seg_perception.bench.graph_profile import graph_split
        result['graph_ms'] = graph_split(config['model'], seg, frames)
    return result


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux: VmHWM of /proc/self/status. ru_maxrss would do, but Linux carries it over
    from the parent through fork + exec, so a worker started by a parent that holds
    torch and a model would report the parent's peak.
    """
    try:
        with open('/proc/self/status') as stream:
            for line in stream:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == 'darwin' else 1.0)


def machine() -> Dict[str, str]:
    cpu = cpu_description()
    memory = ''
    try:
        with open('/proc/meminfo') as stream:
            memory = f'{int(stream.readline().split()[1]) / 1024 ** 2:.0f} GiB'
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for module in ('onnxruntime', 'cv2', 'numpy', 'torch'):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return {'cpu': cpu, 'cores': str(os.cpu_count()), 'memory': memory,
            'os': platform.platform(), 'python': platform.python_version(),
            'versions': ', '.join(f'{k} {v}' for k, v in versions.items())}


# -- reporting ----------------------------------------------------------------

def _cell(stats: Optional[dict]) -> str:
    return f'{stats["median"]:.1f} / {stats["p95"]:.1f}' if stats else '-'


def _outside_network(row: dict) -> Optional[float]:
    """Share of the frame time spent outside the network (pipeline + in-graph pre/post)."""
    stages, graph = row.get('stages_ms', {}), row.get('graph_ms')
    if not graph or 'total' not in stages:
        return None
    # The profile's split of the graph, applied to the measured inference time.
    in_graph = (graph['preprocess'] + graph['postprocess']) / max(sum(graph.values()), 1e-9)
    outside = stages['convert']['median'] + stages['postprocess']['median'] \
        + in_graph * stages['infer']['median']
    return outside / stages['total']['median']


def markdown_table(rows: List[dict]) -> str:
    lines = ['| configuration | backend | convert ms | infer ms | postprocess ms | total ms '
             '| frames/s | outside network | peak RSS MB |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        if 'error' in row:
            lines.append(f'| {row["label"]} | not run: {row["error"]} | | | | | | | |')
            continue
        stages, describe = row['stages_ms'], row['describe']
        share = _outside_network(row)
        lines.append(
            f'| {row["label"]} | {describe["name"]}, {describe["device"]}, '
            f'{describe["precision"]}, {describe.get("threads", "-")} threads '
            f'| {_cell(stages.get("convert"))} | {_cell(stages.get("infer"))} '
            f'| {_cell(stages.get("postprocess"))} | {_cell(stages.get("total"))} '
            f'| {row["fps"]:.2f} | {"-" if share is None else f"{share:.1%}"} '
            f'| {row["peak_rss_mb"]:.0f} |')
    return '\n'.join(lines)


def summary_lines(rows: List[dict]) -> List[str]:
    ok = [r for r in rows if 'error' not in r]
    ours = [r for r in ok if r['kind'] == 'pipeline']
    naive = next((r for r in ok if r['kind'] == 'naive'), None)
    lines = []
    for row in ours:
        graph = row.get('graph_ms')
        if graph:
            share = _outside_network(row)
            lines.append(
                f'- {row["label"]}: outside the network {share:.1%} of the frame: convert '
                f'{row["stages_ms"]["convert"]["median"]:.1f} ms, upsample + drivable + '
                f'overlay {row["stages_ms"]["postprocess"]["median"]:.1f} ms, and in the graph '
                f'(ONNX Runtime profile: network {graph["network"]:.1f} ms) preprocessing '
                f'{graph["preprocess"]:.1f} ms, argmax/confidence {graph["postprocess"]:.1f} ms')
        if naive:
            lines.append(f'- {row["label"]}: {row["fps"] / naive["fps"]:.2f}x the naive '
                         'pipeline\'s throughput on the same model')
    return lines


def write_results(report: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if path.lower().endswith('.json'):
        with open(path, 'w') as stream:
            json.dump(report, stream, indent=2)
        return
    notes = ''
    if os.path.isfile(path):
        with open(path) as stream:
            text = stream.read()
        if NOTES_MARKER in text:
            notes = text[text.index(NOTES_MARKER):]
    machine = report['machine']
    settings = report['settings']
    load = report['load_average']
    text = '\n'.join([
        '# Inference benchmark', '',
        f'- date: {report["date"]}',
        f'- command: `{report["command"]}`',
        f'- machine: {machine["cpu"]}, {machine["cores"]} cores, {machine["memory"]}; '
        f'{machine["os"]}; Python {machine["python"]}; {machine["versions"]}',
        f'- load average (1/5/15 min) before: {", ".join(f"{v:.1f}" for v in load[0])}; '
        f'after: {", ".join(f"{v:.1f}" for v in load[1])}',
        f'- model: {report["model"]}',
        f'- camera frames {settings["input_size"][1]}x{settings["input_size"][0]} RGB, '
        f'{settings["batch"]} per call, {settings["iterations"]} timed calls after '
        f'{settings["warmup"]} warm-up calls',
        '', 'Times are per call (median / p95, ms); frames/s from the summed call times. '
        '"outside network" is convert + postprocess + the share of the inference time that '
        'an ONNX Runtime profile attributes to the graph\'s own preprocessing and argmax, '
        'over the total.', '',
        markdown_table(report['results']), '', *summary_lines(report['results']), '', notes])
    with open(path, 'w') as stream:
        stream.write(text.rstrip() + '\n')


if __name__ == '__main__':
    # One configuration in a fresh process (run_config starts it): JSON in, JSON out.
    print(json.dumps(worker(json.loads(sys.argv[1]))))
