"""Where the network lies inside the exported graph, for quantisation.

The exported graph (seg_perception.deploy.export) is

    images uint8 -> Transpose/Cast -> Resize -> Mul/Add (normalise)   pre-processing
      -> Conv ... Conv (the network, ending with the classifier)       network
      -> Resize -> ArgMax -> Cast [-> confidence ops]                  post-processing

and an imported one (deploy/wrap.py) the same around a foreign network that may end in
several heads (classes, drivable area, lane lines), each decided by its own ArgMax, or
by a threshold (Greater) for a one-channel head.

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
# Operators between a classifier and its decision that do not compute on the logits.
RESAMPLING_OPS = ('Resize', 'Upsample', 'Slice', 'Pad', 'Identity', 'Transpose', 'Reshape',
                  'Cast', 'Squeeze', 'Unsqueeze')
# Operators that turn a head's scores into labels or a mask: after the last weighted layer,
# each reads (through resampling) the output of one head's classifier.
DECISION_OPS = ('ArgMax', 'Greater')


class GraphLayoutError(InvalidValueError):
    """The graph does not have the pre-processing -> network -> argmax layout of an export."""


@dataclass
class GraphSplit:
    """Node names of the three parts of an exported graph, in graph order."""

    pre: List[str]              # from the graph input to the normalised image
    network: List[str]          # needs the normalised image and makes the logits
    post: List[str]             # the rest: resize of logits, ArgMax, casts, shape arithmetic
    network_input: str          # tensor: the normalised image the network reads
    logits: List[str]           # tensors: each head's classifier output
    classifiers: List[str]      # nodes that make the logits (a Conv, or a head's Add)
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
    classifiers = _classifiers(nodes, producer, children, set(weighted))
    first = min(weighted)
    network_input = nodes[first].input[0]
    if network_input not in producer:
        raise GraphLayoutError(f'the first layer {nodes[first].name} reads a graph input: '
                               'the graph has no pre-processing (not an exported model)')
    upstream = _walk(classifiers, parents)                    # everything the logits need
    readers = [i for i, node in enumerate(nodes) if network_input in node.input]
    downstream = _walk(readers, children)                     # everything the image feeds
    in_network = upstream & downstream
    pre = _walk([producer[network_input]], parents)
    names = [node.name for node in nodes]
    return GraphSplit(
        pre=[names[i] for i in sorted(pre)],
        network=[names[i] for i in sorted(in_network)],
        post=[names[i] for i in range(len(nodes)) if i not in in_network and i not in pre],
        network_input=network_input, logits=[nodes[i].output[0] for i in classifiers],
        classifiers=[names[i] for i in classifiers], normaliser=names[producer[network_input]],
        op_types={node.name: node.op_type for node in nodes})


def _classifiers(nodes, producer: Dict[str, int], children: Dict[int, List[int]],
                 weighted: Set[int]) -> List[int]:
    """The nodes whose outputs the decisions read: walking back from each ArgMax or
    threshold that no weighted layer follows, over operators that only move or resample
    the logits (the resize to camera size, a crop), what makes their input is a classifier."""
    decisions = [i for i, node in enumerate(nodes) if node.op_type in DECISION_OPS
                 and not _walk(children.get(i, ()), children) & weighted]
    if not decisions:
        raise GraphLayoutError('the graph has no ArgMax or threshold after its last '
                               f'{"/".join(WEIGHTED_OPS)} layer (the labels output); export '
                               'the model with seg-perception export or import-model')
    found = set()
    for decision in decisions:
        index = decision
        while index == decision or nodes[index].op_type in RESAMPLING_OPS:
            data = nodes[index].input[0] if nodes[index].input else ''
            if data not in producer:
                raise GraphLayoutError(f'{nodes[decision].op_type} {nodes[decision].name} '
                                       'reads a graph input: the graph has no network')
            index = producer[data]
        if index not in decisions:       # a foreign ids head's own ArgMax: its walk counts
            found.add(index)
    return sorted(found)


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
