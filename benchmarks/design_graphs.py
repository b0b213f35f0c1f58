"""The graph variants design_bench.py times against the shipped default model.

Each builds, from the shipped ONNX graph or from scratch, the piece of a graph that one
design choice is about: the network cut at its logits, its own preprocessing alone, the
camera- and network-resolution heads, the normalisation as per-channel tensors instead of
scalars, and every activation as an output (what a calibrator reads).
"""
from __future__ import annotations

import os
from typing import List

import numpy as np
import onnx
from onnx import helper, numpy_helper


def consumers(graph, tensor: str):
    return [node for node in graph.node if tensor in node.input]


def only_node(graph, op_type: str, index: int = 0):
    return [node for node in graph.node if node.op_type == op_type][index]


def logits_model(model_path: str, folder: str) -> str:
    """The shipped graph cut at the ArgMax's input: network-size logits out."""
    graph = onnx.load(model_path).graph
    logits = only_node(graph, 'ArgMax').input[0]
    path = os.path.join(folder, 'logits.onnx')
    onnx.utils.extract_model(model_path, path, [graph.input[0].name], [logits])
    return path


def preprocessing_model(model_path: str, folder: str) -> str:
    """The shipped graph's own preprocessing: transpose, cast, bilinear resize."""
    graph = onnx.load(model_path).graph
    path = os.path.join(folder, 'preprocessing.onnx')
    onnx.utils.extract_model(model_path, path, [graph.input[0].name],
                             [only_node(graph, 'Resize').output[0]])
    return path


def camera_head(model_path: str, classes: int) -> onnx.ModelProto:
    """Logits -> the graph's own bilinear Resize to camera size -> ArgMax -> uint8.

    The camera-resolution export does exactly this after the network; the Resize
    attributes are copied from the shipped graph's logits resize.
    """
    source = only_node(onnx.load(model_path).graph, 'Resize', -1)
    resize = helper.make_node('Resize', ['logits', '', '', 'sizes'], ['big'], name='resize')
    resize.attribute.extend(source.attribute)
    nodes = [resize,
             helper.make_node('ArgMax', ['big'], ['ids'], axis=1, keepdims=0),
             helper.make_node('Cast', ['ids'], ['labels'], to=onnx.TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, 'camera_head',
        [helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT,
                                       [1, classes, 'h', 'w']),
         helper.make_tensor_value_info('sizes', onnx.TensorProto.INT64, [4])],
        [helper.make_tensor_value_info('labels', onnx.TensorProto.UINT8, [1, 'H', 'W'])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])


def network_head(classes: int) -> onnx.ModelProto:
    """Logits -> ArgMax -> uint8 at network size (the network-resolution export)."""
    nodes = [helper.make_node('ArgMax', ['logits'], ['ids'], axis=1, keepdims=0),
             helper.make_node('Cast', ['ids'], ['labels'], to=onnx.TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, 'network_head',
        [helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT,
                                       [1, classes, 'h', 'w'])],
        [helper.make_tensor_value_info('labels', onnx.TensorProto.UINT8, [1, 'h', 'w'])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])


def per_channel_normalisation(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its scalar normalisation constants as 1×3×1×1 tensors.

    The normalisation is the Mul fed by the first Resize and the Add after it; the
    values are unchanged, only their shape (what export wrote before scalars).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    mul = consumers(graph, only_node(graph, 'Resize').output[0])[0]
    add = consumers(graph, mul.output[0])[0]
    names = {mul.input[1], add.input[1]}
    for index, tensor in enumerate(graph.initializer):
        if tensor.name in names:
            value = numpy_helper.to_array(tensor)
            channels = np.broadcast_to(value, (3,)).reshape(1, 3, 1, 1).astype(value.dtype)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(channels, tensor.name))
    return model


def normalisation_nodes(model: onnx.ModelProto) -> List[str]:
    graph = model.graph
    mul = consumers(graph, only_node(graph, 'Resize').output[0])[0]
    return [mul.name, consumers(graph, mul.output[0])[0].name]


def all_activations_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every float node output made a graph output (what calibrators do)."""
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {info.name: info.type.tensor_type.elem_type
             for info in list(graph.value_info) + list(graph.output)}
    present = {output.name for output in graph.output}
    for node in graph.node:
        for name in node.output:
            if name and name not in present and types.get(name) == onnx.TensorProto.FLOAT:
                graph.output.append(helper.make_tensor_value_info(
                    name, onnx.TensorProto.FLOAT, None))
                present.add(name)
    return model
