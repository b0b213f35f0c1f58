"""A foreign ONNX graph read through its contract: the checks, and the reference run.

``inspect_graph`` checks the contract against the graph (input rank, layout, dtype and
size; output names; declared channel counts) and ``check_outputs`` against what the graph
actually outputs on a frame. ``reference_run`` is the contract done by hand: OpenCV and
numpy around an ONNX Runtime session of the unmodified graph. The wrapped graph
(deploy/wrap.py) must agree with it; import_model.py compares the two.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from seg_perception.deploy.contract import BinaryHead, Contract, ContractError

_DTYPES = {1: 'float32', 10: 'float16'}      # onnx.TensorProto element types the input takes


@dataclass
class GraphPlan:
    """What the wrapper needs to know about the foreign graph, checked against the contract."""

    input_name: str
    input_dtype: str                          # float32 | float16
    size: Tuple[int, int]                     # network input (height, width)
    batch: Optional[int] = None               # 1: the graph takes one frame a run; None: any
    output_dims: Dict[str, List[Optional[int]]] = field(default_factory=dict)
    channels: Dict[str, int] = field(default_factory=dict)   # head output -> channels (probe)
    ranks: Dict[str, int] = field(default_factory=dict)


@dataclass
class Letterbox:
    """Where the resized frame sits in the network input."""

    top: int
    left: int
    height: int
    width: int


def _dims(value) -> List[Optional[int]]:
    return [d.dim_value if d.HasField('dim_value') else None
            for d in value.type.tensor_type.shape.dim]


def _show(dims) -> str:
    return 'x'.join('?' if d is None else str(d) for d in dims)


def inspect_graph(model, contract: Contract) -> GraphPlan:
    """Check ``contract`` against the graph's declared inputs and outputs; ContractError
    naming the field when they do not fit."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    spec = contract.input
    if spec.name is None:
        if len(inputs) != 1:
            raise ContractError(f'input.name: the graph has {len(inputs)} inputs '
                                f'({", ".join(i.name for i in inputs)}); name the image input')
        value = inputs[0]
    else:
        value = next((i for i in inputs if i.name == spec.name), None)
        if value is None:
            raise ContractError(f'input.name: the graph has no input {spec.name!r}; its inputs: '
                                f'{", ".join(i.name for i in inputs)}')
    others = [i.name for i in inputs if i is not value]
    if others:
        raise ContractError(f'input.name: the graph also needs inputs {", ".join(others)}; '
                            'only one image input can be fed')
    dims = _dims(value)
    if len(dims) != 4:
        raise ContractError(f'input.layout: graph input {value.name} has rank {len(dims)} '
                            f'({_show(dims)}); a contract feeds rank 4, NCHW or NHWC')
    if dims[0] not in (None, 1):
        raise ContractError(f'input: graph input {value.name} has a fixed batch of {dims[0]} '
                            f'({_show(dims)}); import a graph exported with batch 1 or a '
                            'dynamic batch')
    dtype = _DTYPES.get(value.type.tensor_type.elem_type)
    if dtype is None:
        raise ContractError(f'input.dtype: graph input {value.name} is not float32 or float16 '
                            f'(ONNX element type {value.type.tensor_type.elem_type})')
    if spec.dtype is not None and spec.dtype != dtype:
        raise ContractError(f'input.dtype: {spec.dtype}, but graph input {value.name} is {dtype}')
    channel_axis, spatial = (1, (2, 3)) if spec.layout == 'NCHW' else (3, (1, 2))
    if dims[channel_axis] not in (None, 3):
        raise ContractError(f'input.layout: {spec.layout} puts the 3 colour channels at axis '
                            f'{channel_axis}, but graph input {value.name} is {_show(dims)}')
    fixed = tuple(dims[a] for a in spatial)
    if spec.size is not None and None not in fixed and tuple(spec.size) != fixed:
        raise ContractError(f'input.size: {list(spec.size)}, but graph input {value.name} is '
                            f'fixed at {fixed[0]}x{fixed[1]} ({_show(dims)} {spec.layout})')
    size = spec.size if spec.size is not None else fixed
    if None in size:
        raise ContractError(f'input.size: graph input {value.name} takes any size '
                            f'({_show(dims)}); give the size to run it at, [height, width]')
    outputs = {o.name: _dims(o) for o in model.graph.output}
    for where, name in _head_outputs(contract):
        if name not in outputs:
            raise ContractError(f'{where}.output: the graph has no output {name!r}; its '
                                f'outputs: {", ".join(outputs)}')
    plan = GraphPlan(value.name, dtype, (int(size[0]), int(size[1])), dims[0], outputs)
    for where, name in _head_outputs(contract):
        dims = outputs[name]
        if len(dims) == 4 and dims[1] is not None:
            _check_channels(contract, where, name, dims[1], len(dims))
    return plan


def _head_outputs(contract: Contract) -> List[Tuple[str, str]]:
    heads = []
    if contract.classes is not None:
        heads.append(('classes', contract.classes.output))
    if contract.drivable is not None:
        heads.append(('drivable', contract.drivable.output))
    heads.extend((head.field, head.output) for head in contract.masks.values())
    return heads


def _head(contract: Contract, where: str):
    if where == 'classes':
        return contract.classes
    if where == 'drivable':
        return contract.drivable
    return contract.masks[where.split('.', 1)[1]]


def _check_channels(contract: Contract, where: str, name: str, channels: int,
                    rank: int) -> None:
    head = _head(contract, where)
    if head.kind == 'ids':
        if rank == 4 and channels != 1:
            raise ContractError(f'{where}.kind: ids, but output {name} has {channels} channels '
                                '(ids come as N×H×W or N×1×H×W)')
        return
    if where == 'classes':
        count = head.space.num_classes
        if channels != count:
            raise ContractError(f'classes.names: {count} classes named, but output {name} has '
                                f'{channels} channels')
        return
    positive = positive_channel(head, channels)
    if not 0 <= positive < max(channels, 1) or (channels == 1 and positive != 0):
        raise ContractError(f'{where}.positive: channel {positive} does not exist; output '
                            f'{name} has {channels} channel{"s" if channels != 1 else ""}')


def positive_channel(head: BinaryHead, channels: int) -> int:
    """The channel that means "on": as given, else 1 of two or more, else the only one."""
    if head.positive is not None:
        return head.positive
    return 1 if channels >= 2 else 0


def check_outputs(contract: Contract, plan: GraphPlan, outputs: Dict[str, np.ndarray]) -> None:
    """Check the heads against the arrays the graph produced; record channels and ranks."""
    for where, name in _head_outputs(contract):
        array = outputs[name]
        head = _head(contract, where)
        expected = (3, 4) if head.kind == 'ids' else (4,)
        if array.ndim not in expected:
            raise ContractError(f'{where}.output: {name} has shape {list(array.shape)}; '
                                f'{head.kind} must be ' +
                                ('N×H×W or N×1×H×W' if head.kind == 'ids' else 'N×C×H×W'))
        channels = array.shape[1] if array.ndim == 4 else 1
        _check_channels(contract, where, name, channels, array.ndim)
        plan.channels[name] = channels
        plan.ranks[name] = array.ndim


# -- the reference: the contract done with OpenCV, numpy and the unmodified graph --------------
def letterbox_box(camera: Tuple[int, int], network: Tuple[int, int]) -> Letterbox:
    """Where a camera frame lands when scaled to fit ``network`` with its aspect kept."""
    scale = np.float32(min(np.float32(network[0]) / np.float32(camera[0]),
                           np.float32(network[1]) / np.float32(camera[1])))
    height = int(min(max(np.round(np.float32(camera[0]) * scale), 1), network[0]))
    width = int(min(max(np.round(np.float32(camera[1]) * scale), 1), network[1]))
    return Letterbox((network[0] - height) // 2, (network[1] - width) // 2, height, width)


def preprocess(frame: np.ndarray, contract: Contract, plan: GraphPlan) -> np.ndarray:
    """A uint8 H×W×3 RGB frame as the graph's input tensor (batch of one)."""
    spec = contract.input
    height, width = plan.size
    image = frame.astype(np.float32)
    if spec.color == 'bgr':
        image = image[:, :, ::-1]
    if spec.resize == 'letterbox':
        box = letterbox_box(frame.shape[:2], plan.size)
        canvas = np.full((height, width, 3), spec.pad_value, np.float32)
        canvas[box.top:box.top + box.height, box.left:box.left + box.width] = cv2.resize(
            np.ascontiguousarray(image), (box.width, box.height), interpolation=cv2.INTER_LINEAR)
        image = canvas
    else:
        image = cv2.resize(np.ascontiguousarray(image), (width, height),
                           interpolation=cv2.INTER_LINEAR)
    image = (image * np.float32(spec.scale) - np.float32(spec.mean)) / np.float32(spec.std)
    if spec.layout == 'NCHW':
        image = image.transpose(2, 0, 1)
    return np.ascontiguousarray(image[np.newaxis]).astype(plan.input_dtype)


def run_graph(path: str, plan: GraphPlan, tensor: np.ndarray) -> Dict[str, np.ndarray]:
    """Every output of the unmodified graph for ``tensor``."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {plan.input_name: tensor})))


def _scores_at(scores: np.ndarray, contract: Contract, plan: GraphPlan,
               camera: Tuple[int, int], camera_size: bool, nearest: bool) -> np.ndarray:
    """C×h×w scores brought to the camera size as wrap.py does: directly, or by the network
    size (letterbox: cropped there), or to the network size only (not camera_size)."""
    interpolation = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    planes = np.ascontiguousarray(scores.transpose(1, 2, 0).astype(np.float32))

    def resize(image, size):
        out = cv2.resize(image, (size[1], size[0]), interpolation=interpolation)
        return out.reshape(size + (planes.shape[2],))

    letterbox = contract.input.resize == 'letterbox'
    if camera_size and not letterbox:
        return resize(planes, tuple(camera)).transpose(2, 0, 1)
    planes = resize(planes, plan.size)
    if letterbox:
        box = letterbox_box(camera, plan.size)
        planes = np.ascontiguousarray(planes[box.top:box.top + box.height,
                                             box.left:box.left + box.width])
    if camera_size:
        planes = resize(planes, tuple(camera))
    return planes.transpose(2, 0, 1)


def reference_run(path: str, frame: np.ndarray, contract: Contract, plan: GraphPlan,
                  camera_size: bool = True) -> Dict[str, np.ndarray]:
    """What the wrapped graph should output for ``frame``: 'labels' and, per binary head,
    'mask:<name>' (H×W uint8), computed outside the graph."""
    outputs = run_graph(path, plan, preprocess(frame, contract, plan))
    check_outputs(contract, plan, outputs)
    camera = frame.shape[:2]
    results = {}
    if contract.classes is not None:
        head = contract.classes
        scores = outputs[head.output][0]
        if head.kind == 'ids':
            ids = scores.reshape((1,) + scores.shape[-2:])
            results['labels'] = _scores_at(ids, contract, plan, camera, camera_size,
                                           True)[0].astype(np.uint8)
        else:
            results['labels'] = _scores_at(scores, contract, plan, camera, camera_size,
                                           False).argmax(axis=0).astype(np.uint8)
    for name, head in contract.binary_heads().items():
        on = _binary_reference(outputs[head.output][0], head, contract, plan, camera,
                               camera_size)
        results[f'mask:{name}'] = np.where(on, 255, 0).astype(np.uint8)
    if contract.classes is None:
        on = _binary_reference(outputs[contract.drivable.output][0], contract.drivable,
                               contract, plan, camera, camera_size)
        results['labels'] = on.astype(np.uint8)
    return results


def _binary_reference(scores, head: BinaryHead, contract, plan, camera, camera_size):
    if head.kind == 'ids':
        ids = scores.reshape((1,) + scores.shape[-2:])
        ids = _scores_at(ids, contract, plan, camera, camera_size, True)[0]
        return ids.astype(np.int64) == positive_channel(head, 2)
    channels = scores.shape[0]
    scores = _scores_at(scores, contract, plan, camera, camera_size, False)
    if channels == 1:
        return scores[0] > (0.0 if head.kind == 'logits' else 0.5)
    return scores.argmax(axis=0) == positive_channel(head, channels)
