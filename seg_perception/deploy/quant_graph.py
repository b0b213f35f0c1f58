"""Where the network lies inside the exported graph, for quantisation.

The exported graph (seg_perception.deploy.export) is

    images uint8 -> Transpose/Cast -> Resize -> Mul/Add (normalise)   pre-processing
      -> Conv ... Conv (the network, ending with the classifier)       network
      -> Resize -> ArgMax -> Cast [-> confidence ops]                  post-processing

Only the network is worth quantising: the pre-processing works on exact pixel
values, and the post-processing compares logits, where 8-bit rounding makes
near-ties flip. ``split_graph`` finds the three parts structurally (by data
flow, not by node names, which differ between exporters), so the quantiser can
be told exactly which nodes to quantise. Nothing here imports torch.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Set

from seg_perception.errors import InvalidValueError

# Operators with weights: the first one starts the network, the one that makes the
# logits ends it.
WEIGHTED_OPS = ('Conv', 'ConvTranspose', 'MatMul', 'Gemm')
QDQ_OPS = ('QuantizeLinear', 'DequantizeLinear')
# Operators between the classifier and the ArgMax that do not compute on the logits.
RESAMPLING_OPS = ('Resize', 'Upsample', 'Slice', 'Pad', 'Identity', 'Transpose', 'Reshape',
                  'Cast')


class GraphLayoutError(InvalidValueError):
    """The graph does not have the pre-processing -> network -> argmax layout of an export."""


@dataclass
class GraphSplit:
    """Node names of the three parts of an exported graph, in graph order."""

    pre: List[str]              # from the graph input to the normalised image
    network: List[str]          # needs the normalised image and makes the logits
    post: List[str]             # the rest: resize of logits, ArgMax, casts, shape arithmetic
    network_input: str          # tensor: the normalised image the network reads
    logits: str                 # tensor: the classifier's output
    classifier: str             # node that makes the logits (a Conv, or a head's Add)
    normaliser: str             # node that produces the network input
    op_types: Dict[str, str] = field(default_factory=dict)   # node name -> op type


def name_unnamed_nodes(graph) -> int:
    """Give every node a unique name (the quantiser selects nodes by name); return how many."""
    taken = {node.name for node in graph.node if node.name}
    renamed = 0
    for index, node in enumerate(graph.node):
        if node.name:
            continue
        candidate = f'{node.op_type}_{index}'
        while candidate in taken:
            candidate += '_'
        node.name = candidate
        taken.add(candidate)
        renamed += 1
    return renamed


def _walk(start: Iterable[int], neighbours: Dict[int, List[int]]) -> Set[int]:
    seen: Set[int] = set()
    stack = list(start)
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        stack.extend(neighbours.get(index, ()))
    return seen


def split_graph(graph) -> GraphSplit:
    """Split an exported graph into pre-processing, network and post-processing nodes."""
    nodes = list(graph.node)
    producer: Dict[str, int] = {}
    for index, node in enumerate(nodes):
        for output in node.output:
            producer[output] = index
    parents: Dict[int, List[int]] = defaultdict(list)
    children: Dict[int, List[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for tensor in node.input:
            if tensor in producer:
                parents[index].append(producer[tensor])
                children[producer[tensor]].append(index)

    weighted = [i for i, node in enumerate(nodes) if node.op_type in WEIGHTED_OPS]
    if not weighted:
        raise GraphLayoutError(f'the graph has no {"/".join(WEIGHTED_OPS)} node: nothing '
                               'to quantise')
    argmax = [i for i, node in enumerate(nodes) if node.op_type == 'ArgMax']
    if len(argmax) != 1:
        raise GraphLayoutError(f'expected one ArgMax (the labels output) in the graph, found '
                               f'{len(argmax)}; export the model with seg-perception export')
    # Walk back from the ArgMax over operators that only move or resample the logits
    # (the resize to camera size, a crop): what makes their input is the classifier.
    index = argmax[0]
    while index == argmax[0] or nodes[index].op_type in RESAMPLING_OPS:
        data = nodes[index].input[0] if nodes[index].input else ''
        if data not in producer:
            raise GraphLayoutError('the ArgMax reads a graph input: the graph has no network')
        index = producer[data]
    classifier = index
    first = min(weighted)
    network_input = nodes[first].input[0]
    if network_input not in producer:
        raise GraphLayoutError(f'the first layer {nodes[first].name} reads a graph input: '
                               'the graph has no pre-processing (not an exported model)')
    upstream = _walk([classifier], parents)                   # everything the logits need
    readers = [i for i, node in enumerate(nodes) if network_input in node.input]
    downstream = _walk(readers, children)                     # everything the image feeds
    in_network = upstream & downstream
    pre = _walk([producer[network_input]], parents)
    names = [node.name for node in nodes]
    return GraphSplit(
        pre=[names[i] for i in sorted(pre)],
        network=[names[i] for i in sorted(in_network)],
        post=[names[i] for i in range(len(nodes)) if i not in in_network and i not in pre],
        network_input=network_input, logits=nodes[classifier].output[0],
        classifier=names[classifier], normaliser=names[producer[network_input]],
        op_types={node.name: node.op_type for node in nodes})


def qdq_neighbours(graph, node_names: Iterable[str]) -> Dict[str, List[str]]:
    """For each named node that reads a DequantizeLinear output or feeds a QuantizeLinear,
    the names of those Q/DQ nodes; nodes without any are left out."""
    producer = {}
    consumers: Dict[str, List] = defaultdict(list)
    for node in graph.node:
        for output in node.output:
            producer[output] = node
        for tensor in node.input:
            consumers[tensor].append(node)
    wanted = set(node_names)
    found: Dict[str, List[str]] = {}
    for node in graph.node:
        if node.name not in wanted:
            continue
        hits = [producer[t].name for t in node.input
                if t in producer and producer[t].op_type == 'DequantizeLinear']
        hits += [c.name for t in node.output for c in consumers[t]
                 if c.op_type == 'QuantizeLinear']
        if hits:
            found[node.name] = hits
    return found


def is_quantized(graph) -> bool:
    """Whether the graph already holds quantisation operators."""
    quantized_ops = set(QDQ_OPS) | {'QLinearConv', 'QLinearMatMul', 'ConvInteger',
                                    'MatMulInteger', 'DynamicQuantizeLinear'}
    return any(node.op_type in quantized_ops for node in graph.node)
