"""benchmarks/DESIGN.md from design_bench.py's measurements: one section per design choice,
each naming the module whose docstring or comment the figures stand behind.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np


def _ms(value: float) -> str:
    return f'{value:.2f}' if value < 10 else f'{value:.1f}'


def _table(rows: Dict[str, float], unit: str = 'median ms') -> List[str]:
    lines = [f'| | {unit} |', '| --- | --- |']
    lines += [f'| {key} | {_ms(value)} |' for key, value in rows.items()]
    return lines


def report(results: dict, context: dict, notes: str) -> str:
    m, load = context['machine'], context['load']
    up = results['upsampling']
    spin = results['spinning']
    norm = results['normalisation']
    drv = results['drivable']
    lines = [
        '# Design measurements', '',
        'The figures behind the design choices that docstrings and comments in '
        '`seg_perception/` explain; the code says why, this file says how much.', '',
        f'- date: {context["date"]}',
        f'- command: `{context["command"]}`',
        f'- machine: {m["cpu"]}, {m["cores"]} cores, {m["memory"]}; {m["os"]}; '
        f'Python {m["python"]}; {m["versions"]}',
        f'- load average (1/5/15 min) before: {", ".join(f"{v:.1f}" for v in load[0])}; '
        f'after: {", ".join(f"{v:.1f}" for v in load[1])}',
        f'- model: shipped default ({context["model"]}), network {context["size"][0]}x'
        f'{context["size"][1]} (height x width), {context["classes"]} classes; ONNX Runtime '
        'on the CPU, '
        f'{context["threads"]} threads, no spinning unless stated',
        f'- frames: the {context["frames"]} camera images of `seg_perception/assets/sample_bag` '
        f'(960x540 and 1164x874), upscaled to 1920x1080 where a row says 1080p',
        f'- timings: medians of {context["runs"]} or more interleaved runs', '',
        '## Where the frame is resized (`runtime/pipeline.py`)', '',
        'The network-resolution graph fed a 1080p frame resizes it itself; the pipeline '
        'feeds it the network size after cv2.resize.', '',
        *_table(results['resize']), '',
        '## Logits upsampling against label upsampling (`runtime/pipeline.py`, '
        '`deploy/export.py`)', '',
        'Exact: bilinear upsampling of the logits to 1080p, then argmax (what a '
        "camera-resolution export does, with the graph's own Resize). Fast: argmax at network "
        'size, then nearest upsampling of the class ids (what the pipeline does with a '
        'network-resolution export). Logits: the shipped graph cut at its ArgMax '
        f'({"×".join(map(str, up["logits_shape"]))}); their argmax equals the shipped '
        f'graph\'s labels on every frame: {"yes" if up["same_as_product"] else "NO"}.', '',
        *_table(up['times']), '',
        '| labels equal to the exact ones at 1080p | mean | worst frame |', '| --- | --- | --- |',
        f'| cv2 INTER_NEAREST_EXACT (the pipeline) | {np.mean(up["agree_exact"]):.2%} '
        f'| {min(up["agree_exact"]):.2%} |',
        f'| cv2 INTER_NEAREST | {np.mean(up["agree_plain"]):.2%} '
        f'| {min(up["agree_plain"]):.2%} |',
        f'| INTER_NEAREST_EXACT at the frame\'s own size | {np.mean(up["agree_own"]):.2%} '
        f'| {min(up["agree_own"]):.2%} |', '',
        f'Network-size pixels on a class boundary: {np.mean(up["boundary"]):.2%} on average. '
        'Of the 1080p pixels where the two differ, '
        f'{np.mean(up["near_boundary"]):.2%} (worst frame '
        f'{min(up["near_boundary"]):.2%}) lie within one network pixel of a class boundary.',
        '',
        '## Idle threads spinning (`runtime/onnxruntime_backend.py`)', '',
        f'The pipeline on 1080p frames (ego region, holes < {context["fill_holes_px"]} px, colour '
        'overlay), its ONNX Runtime threads spinning or not; CPU ms is the process\'s CPU '
        'time per frame (user + system).', '',
        '| threads | total ms | infer ms | postprocess ms | CPU ms per frame |',
        '| --- | --- | --- | --- | --- |',
        *[f'| {"spinning" if key else "not spinning (default)"} | {_ms(v["total"])} '
          f'| {_ms(v["infer"])} | {_ms(v["postprocess"])} | {_ms(v["cpu"])} |'
          for key, v in spin.items()], '',
        '## Scalar normalisation constants (`models/deployable.py`)', '',
        'The shipped INT8 model (`default_model.cpu.int8.onnx`, scalar constants) against the '
        'same file with the constants as 1×3×1×1 tensors, fed network-size frames. '
        '"normalisation" is the ONNX Runtime profile\'s median kernel time of the Mul and Add.',
        '', '| constants | whole graph, median ms | whole graph, fastest ms '
        '| normalisation, median ms |', '| --- | --- | --- | --- |',
        *[f'| {key} | {_ms(norm["total"][key])} | {_ms(norm["fastest"][key])} '
          f'| {_ms(norm["normalisation"][key])} |'
          for key in norm['total']], '',
        f'Labels identical on all {norm["frames"]} frames: '
        f'{"yes" if norm["labels_equal"] else "no"}.', '',
        '## Drivable mask at network size (`runtime/drivable.py`)', '',
        'DrivableMasker on the network-size labels with the mask resized to 1080p, against '
        'the same masker on the 1080p (nearest-upsampled) labels.', '',
        '| options | at network size, then resized, ms | on the 1080p labels, ms | '
        'mask pixels equal |', '| --- | --- | --- | --- |',
        *[f'| {title} | {_ms(v["times"]["at network size, then resized"])} '
          f'| {_ms(v["times"]["on the 1080p labels"])} | {v["equal"]:.3%} |'
          for title, v in drv['masker'].items()], '',
        f'Counting the areas of the {drv["components"]} non-drivable components of a 1080p '
        'mask (uint16 ids):', '',
        *_table(drv['count']), '',
        '## Colour overlay lookup (`ros/outputs.py`)', '',
        '1080p class ids to RGB through a 256-entry table (results equal: '
        f'{"yes" if drv["colour_equal"] else "no"}):', '',
        *_table(drv['colour']), '',
        '## Activations a histogram calibrator keeps (`deploy/quantize.py`)', '',
        'Every float tensor the model computes for one frame (the entropy and percentile '
        'calibrators collect these for every frame until they bin them):', '',
        '| frame | float tensors | MiB |', '| --- | --- | --- |',
        *[f'| {title} | {count} | {size / 2 ** 20:.0f} |'
          for title, (size, count) in results['calibration'].items()], '',
    ]
    return '\n'.join(lines) + '\n' + notes
