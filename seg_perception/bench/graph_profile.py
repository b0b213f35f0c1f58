"""Where the exported graph spends its time: its preprocessing, the network, its argmax.

The graph does more than the network: uint8 → float, transpose, resize and
normalisation in front, (camera-size resize,) argmax and confidence behind. An
ONNX Runtime profile of the batch the pipeline feeds splits a call into the three
parts, so the benchmark can say how much of a frame is spent outside the network.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Set, Tuple

import cv2
import numpy as np


def wrapper_nodes(graph, camera_resize: bool) -> Tuple[Set[str], Set[str]]:
    """Names of the graph's preprocessing nodes (before the first Conv) and postprocessing
    nodes (ArgMax and everything computed from the logits it reads)."""
    nodes = list(graph.node)
    first_conv = next((i for i, n in enumerate(nodes)
                       if n.op_type in ('Conv', 'QLinearConv', 'ConvInteger')), len(nodes))
    pre = {n.name for n in nodes[:first_conv]}
    producer = {out: n for n in nodes for out in n.output}
    argmax = next((n for n in nodes if n.op_type == 'ArgMax'), None)
    if argmax is None:
        return pre, set()
    logits = argmax.input[0]
    post = set()
    if camera_resize and producer.get(logits) is not None \
            and producer[logits].op_type == 'Resize':
        post.add(producer[logits].name)
        logits = producer[logits].input[0]
    # Everything downstream of the logits tensor.
    tensors = {logits}
    for node in nodes:
        if any(name in tensors for name in node.input):
            post.add(node.name)
            tensors.update(node.output)
    return pre, post


def graph_split(model_path: str, pipeline, frames, runs: int = 5) -> Dict[str, float]:
    """Median ms per call spent in the graph's preprocessing, network and postprocessing,
    on the batch ``pipeline`` feeds for ``frames`` (ONNX Runtime CPU profile)."""
    import onnx
    import onnxruntime as ort
    info = pipeline.info
    graph = onnx.load(model_path, load_external_data=False).graph
    fed_camera_size = pipeline.resize == 'graph'
    pre, post = wrapper_nodes(graph, camera_resize=fed_camera_size
                              and info.output_resolution == 'camera')
    if fed_camera_size:
        batch = np.stack(frames)
    else:
        height, width = info.input_size
        batch = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)
                          for f in frames])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = pipeline.backend.describe().get('threads') or 0
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, 'profile')
        session = ort.InferenceSession(model_path, options, providers=['CPUExecutionProvider'])
        session.run(None, {'images': batch})          # warm-up, dropped below
        for _ in range(runs):
            session.run(None, {'images': batch})
        with open(session.end_profiling()) as stream:
            events = json.load(stream)
    calls = [e for e in events if e.get('name') == 'model_run']
    parts = {'preprocess': [], 'network': [], 'postprocess': []}
    for call in calls[1:]:
        begin, end = call['ts'], call['ts'] + call['dur']
        sums = dict.fromkeys(parts, 0.0)
        for event in events:
            if event.get('cat') != 'Node' or not event['name'].endswith('_kernel_time') \
                    or not begin <= event['ts'] <= end:
                continue
            name = event['name'][:-len('_kernel_time')]
            part = 'preprocess' if name in pre else 'postprocess' if name in post \
                else 'network'
            sums[part] += event['dur'] / 1000.0
        for part, value in sums.items():
            parts[part].append(value)
    return {part: float(np.median(values)) if values else 0.0
            for part, values in parts.items()}
