"""Shared pieces of the TensorRT tests: a tiny model with the exported interface, frames."""
import numpy as np
import onnx
from onnx import TensorProto, helper

from seg_perception.labels import CAMVID
from seg_perception.model_info import ModelInfo

ENV = {'trt_version': '10.3.0', 'gpu_name': 'Fake GPU', 'compute_capability': '8.7'}


def write_model(path, qdq=False, qoperator=False, metadata=True):
    """A tiny graph with the exported interface (uint8 images -> uint8 labels)."""
    nodes = [helper.make_node('Cast', ['images'], ['x'], to=TensorProto.FLOAT)]
    last = 'x'
    inits = [helper.make_tensor('scale', TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor('zero', TensorProto.INT8, [], [0])]
    if qdq:
        nodes += [helper.make_node('QuantizeLinear', ['x', 'scale', 'zero'], ['q']),
                  helper.make_node('DequantizeLinear', ['q', 'scale', 'zero'], ['dq'])]
        last = 'dq'
    if qoperator:
        nodes += [helper.make_node('DynamicQuantizeLinear', ['x'], ['q', 's', 'z']),
                  helper.make_node('ConvInteger', ['q', 'q'], ['ci'])]
    nodes += [helper.make_node('ArgMax', [last], ['am'], axis=3, keepdims=0),
              helper.make_node('Cast', ['am'], ['labels'], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info('images', TensorProto.UINT8,
                                                   ['n', 'h', 'w', 3])],
        [helper.make_tensor_value_info('labels', TensorProto.UINT8, ['n', 'h', 'w'])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    if metadata:
        info = ModelInfo.from_label_space('deeplabv3plus', CAMVID, (64, 128))
        for key, value in info.to_metadata().items():
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return str(path)


def frames(batch, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), np.uint8)
