#!/usr/bin/env python3
"""Do two exported models run the same network? Same operators in the same order, same weights'
shapes: then they cost the same to run, whatever the weights, and a retrained default model
keeps the shipped one's speed without a new timing.

    python benchmarks/compare_graphs.py seg_perception/assets/default_model.onnx NEW.onnx

Prints a markdown summary and exits 0 when the graphs match, 1 when they differ (the first
differences named). Node names, weight values and metadata are not compared.
"""
import argparse
import sys
from typing import List, Tuple

import onnx


def signature(path: str) -> Tuple[List[str], List[Tuple[str, Tuple[int, ...]]]]:
    """(operator of each node in graph order, (dtype, shape) of each weight in graph order)."""
    model = onnx.load(path, load_external_data=False)
    ops = [f'{node.domain + "." if node.domain else ""}{node.op_type}'
           for node in model.graph.node]
    weights = [(onnx.TensorProto.DataType.Name(tensor.data_type), tuple(tensor.dims))
               for tensor in model.graph.initializer]
    return ops, weights


def differences(first: List, second: List, what: str, limit: int = 5) -> List[str]:
    lines = []
    if len(first) != len(second):
        lines.append(f'{what}: {len(first)} against {len(second)}')
    for index, (a, b) in enumerate(zip(first, second)):
        if a != b:
            lines.append(f'{what} {index}: {a} against {b}')
            if len(lines) >= limit:
                break
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('reference', help='ONNX model, e.g. the shipped default')
    parser.add_argument('candidate', help='ONNX model to compare with it')
    args = parser.parse_args()
    ops_a, weights_a = signature(args.reference)
    ops_b, weights_b = signature(args.candidate)
    diff = differences(ops_a, ops_b, 'node') + differences(weights_a, weights_b, 'weight')
    print(f'- reference: `{args.reference}`: {len(ops_a)} nodes, {len(weights_a)} weights')
    print(f'- candidate: `{args.candidate}`: {len(ops_b)} nodes, {len(weights_b)} weights')
    if not diff:
        print('- same operators in the same order and same weight shapes: same runtime cost')
        return 0
    print('- the graphs differ (time the candidate before shipping it):')
    for line in diff:
        print(f'  - {line}')
    return 1


if __name__ == '__main__':
    sys.exit(main())
