"""Make the exported graph's uint8 input acceptable to TensorRT, without changing its results.

TensorRT accepts UINT8 only as a network input or output type: inside the
network a uint8 tensor may only be cast. The exported graph transposes the
uint8 frames (NHWC -> NCHW, cheaper on one byte per value for a CPU) and reads
their shape before casting them to float; an imported model (deploy/wrap.py)
casts first but reads the uint8 frames' shape too. ``cast_uint8_inputs_first`` moves
every Cast of a uint8 input in front of the Transpose and points Shape nodes at
the cast tensor (same shape), so that the Cast is the input's only consumer.
The file on disk is left as it is; TensorRT parses the rewritten bytes.
"""
from __future__ import annotations

from typing import List, Tuple

UINT8 = 2          # onnx.TensorProto.UINT8, without importing onnx at module import


def _consumers(graph, tensor: str):
    return [node for node in graph.node if tensor in node.input]


def cast_uint8_inputs_first(model) -> List[str]:
    """Rewrite ``model`` (an onnx.ModelProto) in place; return what was changed."""
    from onnx import helper
    graph = model.graph
    changes: List[str] = []
    for graph_input in graph.input:
        if graph_input.type.tensor_type.elem_type != UINT8:
            continue
        name = graph_input.name
        readers = _consumers(graph, name)
        transposes = [n for n in readers if n.op_type == 'Transpose']
        for transpose in transposes:
            casts = _consumers(graph, transpose.output[0])
            if not casts or any(c.op_type != 'Cast' for c in casts):
                continue
            targets = {helper.get_attribute_value(a) for c in casts for a in c.attribute
                       if a.name == 'to'}
            if len(targets) != 1:
                continue
            cast_name = f'{name}_cast_for_tensorrt'
            cast = helper.make_node('Cast', [name], [cast_name], to=targets.pop(),
                                    name=cast_name)
            # The old Casts' outputs are now made by the Transpose of the cast frames.
            transpose.input[0] = cast_name
            old_output = transpose.output[0]
            transpose.output[0] = casts[0].output[0]
            for extra in casts[1:]:
                for node in graph.node:
                    for index, tensor in enumerate(node.input):
                        if tensor == extra.output[0]:
                            node.input[index] = casts[0].output[0]
            for old in casts:
                graph.node.remove(old)
            graph.node.insert(0, cast)          # reads a graph input only: first is in order
            changes.append(f'cast {name} before {transpose.name or "its Transpose"} '
                           f'(was Transpose -> {old_output} -> Cast)')
        # The cast made above, or one the graph has already (an imported model casts
        # first): Shape nodes read it instead of the uint8 input.
        cast = next((n for n in _consumers(graph, name) if n.op_type == 'Cast'), None)
        if cast is None:
            continue
        for node in _consumers(graph, name):
            if node.op_type == 'Shape':
                node.input[0] = cast.output[0]
                changes.append(f'{node.name or "Shape"} reads the cast {name}')
    return changes


def uint8_input_readers(model) -> List[Tuple[str, str]]:
    """(node name, op type) of every node that reads a uint8 graph input."""
    names = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == UINT8}
    return [(n.name, n.op_type) for n in model.graph.node if set(n.input) & names]
