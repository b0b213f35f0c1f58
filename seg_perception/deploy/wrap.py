"""Graph surgery: a foreign segmentation graph inside the package's deployable interface.

    images  uint8 N×H×W×3 RGB (N, H, W dynamic)
      -> float, NHWC -> NCHW, [BGR], resize to the network size (stretch, or letterbox:
         scaled to fit and padded), x * scale, (x - mean) / std, [NHWC], [float16]
      -> the foreign graph, unchanged
      -> each head: bilinear resize to H×W (network mode: to the network size; letterbox:
         to the network size, crop, then to H×W), then argmax / threshold
      -> labels         uint8 N×H×W class ids (drivable-only model: 0 / 1)
      -> masks          uint8 N×M×H×W, 255 = on         (when the contract has binary heads)
      -> probabilities  uint8 N×P×H×W, round(p × 255)   (when the contract asks for classes)

The nodes are added with onnx.helper around the foreign nodes, which are left as they are,
so any exporter's graph can be wrapped (no re-tracing). The resizes are ONNX Resize in
half-pixel linear mode: what cv2.INTER_LINEAR and torch's bilinear, align_corners=False do.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from seg_perception.deploy.contract import BinaryHead, Contract
from seg_perception.deploy.foreign import GraphPlan, positive_channel

INPUT = 'images'
RESERVED = ('images', 'labels', 'masks', 'probabilities', 'confidence')
MIN_OPSET = 13       # Squeeze/Unsqueeze with axes inputs, Softmax over one axis
_PREFIX = 'seg_perception/'


class _Builder:
    """Nodes and constants appended under one prefix, with unique names."""

    def __init__(self):
        self.nodes = []
        self.initializers = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f'{_PREFIX}{hint}_{self._count}'

    def const(self, hint: str, value, dtype) -> str:
        from onnx import numpy_helper
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: Optional[str] = None,
           output: Optional[str] = None, **attributes) -> str:
        from onnx import helper
        output = output or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output],
                                           name=self.name(op_type), **attributes))
        return output


def _resize(b: _Builder, x: str, size: str, nearest: bool = False) -> str:
    """Resize N×C×h×w ``x`` to the int64 [height, width] tensor ``size``."""
    leading = b.op('Slice', [b.op('Shape', [x]), b.const('zero', [0], np.int64),
                             b.const('two', [2], np.int64)])
    sizes = b.op('Concat', [leading, size], axis=0)
    mode = dict(mode='nearest', nearest_mode='round_prefer_ceil') if nearest \
        else dict(mode='linear')
    return b.op('Resize', [x, '', '', sizes], coordinate_transformation_mode='half_pixel',
                **mode)


class _Geometry:
    """Camera size, network size and (letterbox) the box of the frame in the network input."""

    def __init__(self, b: _Builder, images: str, contract: Contract, plan: GraphPlan):
        shape = b.op('Shape', [images])
        self.camera = b.op('Slice', [shape, b.const('one', [1], np.int64),
                                     b.const('three', [3], np.int64)], 'camera_size')
        self.network = b.const('network_size', plan.size, np.int64)
        self.letterbox = contract.input.resize == 'letterbox'
        if not self.letterbox:
            return
        camera = b.op('Cast', [self.camera], to=1)
        network = b.const('network_size_f', plan.size, np.float32)
        scale = b.op('ReduceMin', [b.op('Div', [network, camera])], keepdims=1)
        fitted = b.op('Round', [b.op('Mul', [camera, scale])])
        fitted = b.op('Min', [b.op('Max', [fitted, b.const('one_f', [1.0], np.float32)]),
                              network])
        self.fitted = b.op('Cast', [fitted], 'fitted_size', to=7)
        margin = b.op('Sub', [self.network, self.fitted])
        self.start = b.op('Div', [margin, b.const('two_i', [2], np.int64)], 'box_start')
        self.end = b.op('Add', [self.start, self.fitted], 'box_end')
        self.after = b.op('Sub', [margin, self.start])


def _preprocess(b: _Builder, contract: Contract, plan: GraphPlan, geo: _Geometry) -> None:
    spec = contract.input
    x = b.op('Transpose', [b.op('Cast', [INPUT], to=1)], perm=[0, 3, 1, 2])
    if spec.color == 'bgr':
        x = b.op('Gather', [x, b.const('bgr', [2, 1, 0], np.int64)], axis=1)
    if geo.letterbox:
        x = _resize(b, x, geo.fitted)
        zeros = b.const('zeros', [0, 0], np.int64)
        pads = b.op('Concat', [zeros, geo.start, zeros, geo.after], axis=0)
        x = b.op('Pad', [x, pads, b.const('pad_value', spec.pad_value, np.float32)])
    else:
        x = _resize(b, x, geo.network)
    std = np.asarray(spec.std, np.float32)
    x = b.op('Mul', [x, b.const('scale', (np.float32(spec.scale) / std).reshape(1, 3, 1, 1),
                                np.float32)])
    x = b.op('Add', [x, b.const('shift', (-np.asarray(spec.mean, np.float32) / std)
                                .reshape(1, 3, 1, 1), np.float32)])
    if spec.layout == 'NHWC':
        x = b.op('Transpose', [x], perm=[0, 2, 3, 1])
    if plan.input_dtype == 'float16':
        x = b.op('Cast', [x], to=10)
    b.op('Identity', [x], output=plan.input_name)


def _to_output_size(b: _Builder, x: str, geo: _Geometry, camera_size: bool,
                    nearest: bool = False) -> str:
    """N×C×h×w scores to the camera size (one resize, as the families' own inference does),
    or (letterbox) to the network size, cropped to the frame, then to the camera size."""
    if camera_size and not geo.letterbox:
        return _resize(b, x, geo.camera, nearest)
    x = _resize(b, x, geo.network, nearest)
    if geo.letterbox:
        x = b.op('Slice', [x, geo.start, geo.end, b.const('hw_axes', [2, 3], np.int64)])
    if camera_size:
        x = _resize(b, x, geo.camera, nearest)
    return x


def _scores(b: _Builder, output: str, plan: GraphPlan) -> str:
    """A head's output as float32 N×C×h×w."""
    x = b.op('Cast', [output], to=1)
    if plan.ranks[output] == 3:
        x = b.op('Unsqueeze', [x, b.const('axis1', [1], np.int64)])
    return x


def _class_head(b: _Builder, contract: Contract, plan: GraphPlan, geo: _Geometry,
                camera_size: bool) -> str:
    head = contract.classes
    scores = _to_output_size(b, _scores(b, head.output, plan), geo, camera_size,
                             nearest=head.kind == 'ids')
    if head.kind == 'ids':
        ids = b.op('Squeeze', [scores, b.const('axis1', [1], np.int64)])
    else:
        ids = b.op('ArgMax', [scores], axis=1, keepdims=0)
    b.op('Cast', [ids], output='labels', to=2)
    if contract.probabilities:
        probabilities = scores if head.kind == 'probabilities' else \
            b.op('Softmax', [scores], axis=1)
        wanted = [head.space.class_id(name) for name in contract.probabilities]
        picked = b.op('Gather', [probabilities, b.const('classes', wanted, np.int64)], axis=1)
        scaled = b.op('Round', [b.op('Mul', [picked, b.const('f255', 255.0, np.float32)])])
        clipped = b.op('Clip', [scaled, b.const('f0', 0.0, np.float32),
                                b.const('f255', 255.0, np.float32)])
        b.op('Cast', [clipped], output='probabilities', to=2)
    return scores


def _binary_head(b: _Builder, head: BinaryHead, plan: GraphPlan, geo: _Geometry,
                 camera_size: bool) -> str:
    """A bool N×H×W: the head says "on"."""
    channels = plan.channels[head.output]
    scores = _to_output_size(b, _scores(b, head.output, plan), geo, camera_size,
                             nearest=head.kind == 'ids')
    positive = positive_channel(head, channels if head.kind != 'ids' else 2)
    if head.kind == 'ids' or channels >= 2:
        if head.kind == 'ids':
            picked = b.op('Cast', [b.op('Squeeze', [scores, b.const('axis1', [1], np.int64)])],
                          to=7)
        else:
            picked = b.op('ArgMax', [scores], axis=1, keepdims=0)
        return b.op('Equal', [picked, b.const('positive', positive, np.int64)])
    threshold = 0.0 if head.kind == 'logits' else 0.5
    squeezed = b.op('Squeeze', [scores, b.const('axis1', [1], np.int64)])
    return b.op('Greater', [squeezed, b.const('threshold', threshold, np.float32)])


def _postprocess(b: _Builder, contract: Contract, plan: GraphPlan, geo: _Geometry,
                 camera_size: bool) -> List[str]:
    outputs = ['labels']
    if contract.classes is not None:
        _class_head(b, contract, plan, geo, camera_size)
    else:
        on = _binary_head(b, contract.drivable, plan, geo, camera_size)
        b.op('Cast', [on], output='labels', to=2)
    heads = contract.binary_heads()
    if heads:
        planes = []
        for head in heads.values():
            # In float up to the output's Cast: TensorRT takes uint8 only at the graph's edge.
            on = _binary_head(b, head, plan, geo, camera_size)
            mask = b.op('Where', [on, b.const('f255', 255.0, np.float32),
                                  b.const('f0', 0.0, np.float32)])
            planes.append(b.op('Unsqueeze', [mask, b.const('axis1', [1], np.int64)]))
        b.op('Cast', [b.op('Concat', planes, axis=1)], output='masks', to=2)
        outputs.append('masks')
    if contract.probabilities:
        outputs.append('probabilities')
    return outputs


def _rename(graph, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` everywhere in ``graph`` and its subgraphs."""
    from onnx import AttributeProto
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                _rename(attribute.g, old, new)
            for sub in attribute.graphs:
                _rename(sub, old, new)
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            if value.name == old:
                value.name = new


def _free_reserved_names(model, plan: GraphPlan) -> None:
    """Move foreign values named like the wrapper's inputs and outputs out of the way."""
    names = {v for node in model.graph.node for v in list(node.input) + list(node.output)}
    names |= {v.name for v in list(model.graph.input) + list(model.graph.initializer)}
    for reserved in RESERVED:
        if reserved in names:
            _rename(model.graph, reserved, 'foreign/' + reserved)
            if plan.input_name == reserved:
                plan.input_name = 'foreign/' + reserved
            plan.output_dims = {('foreign/' + k if k == reserved else k): v
                                for k, v in plan.output_dims.items()}
            plan.channels = {('foreign/' + k if k == reserved else k): v
                             for k, v in plan.channels.items()}
            plan.ranks = {('foreign/' + k if k == reserved else k): v
                          for k, v in plan.ranks.items()}


def wrap_graph(model, contract: Contract, plan: GraphPlan, camera_size: bool = True):
    """The deployable ModelProto around foreign ``model`` (changed in place and returned);
    ``plan`` must have been filled in by check_outputs. Returns (model, output names)."""
    from onnx import TensorProto, helper
    _free_reserved_names(model, plan)
    heads = [contract.classes, contract.drivable] + list(contract.masks.values())
    for head in heads:
        if head is not None and head.output in RESERVED:
            head.output = 'foreign/' + head.output
    b = _Builder()
    geo = _Geometry(b, INPUT, contract, plan)
    _preprocess(b, contract, plan, geo)
    outputs = _postprocess(b, contract, plan, geo, camera_size)
    graph = model.graph
    graph.input.remove(next(i for i in graph.input if i.name == plan.input_name))
    graph.input.insert(0, helper.make_tensor_value_info(
        INPUT, TensorProto.UINT8, ['batch', 'height', 'width', 3]))
    del graph.output[:]
    ranks = {'labels': 3, 'masks': 4, 'probabilities': 4}
    for name in outputs:
        shape = ['batch'] + ([None] if ranks[name] == 4 else []) + \
            (['height', 'width'] if camera_size else list(plan.size))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.UINT8, shape))
    # The preprocessing runs first: topological order is what the checker wants.
    nodes = b.nodes + list(graph.node)
    needed = _producers_of(plan.input_name, b.nodes)
    pre = [n for n in b.nodes if id(n) in needed]
    post = [n for n in b.nodes if n not in pre]
    del graph.node[:]
    graph.node.extend(pre + [n for n in nodes if n not in b.nodes] + post)
    graph.initializer.extend(b.initializers)
    return model, outputs


def _producers_of(network_input: str, nodes) -> set:
    """The ids of the wrapper's ``nodes`` that the network input depends on."""
    producers = {out: n for n in nodes for out in n.output}
    needed, stack = set(), [network_input]
    while stack:
        value = stack.pop()
        producer = producers.get(value)
        if producer is None or id(producer) in needed:
            continue
        needed.add(id(producer))
        stack.extend(producer.input)
    return needed
