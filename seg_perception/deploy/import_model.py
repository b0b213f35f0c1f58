"""Import a foreign segmentation graph: check it against its contract, wrap it, prove it.

``import_model`` reads the foreign ONNX file and the contract, checks one against the
other (ContractError naming the field), runs the unmodified graph on a real frame with the
contract's preprocessing done by hand (deploy/foreign.py), wraps the graph into the
deployable interface (deploy/wrap.py) with a ModelInfo in its metadata, and compares the
wrapped graph's labels and masks with the hand-made ones on the same frame. Less than
MIN_AGREEMENT of the pixels alike is an error and nothing is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict

import numpy as np

from seg_perception.choices import OUTPUT_RESOLUTIONS, check_choice
from seg_perception.deploy.contract import Contract, ContractError
from seg_perception.deploy.foreign import inspect_graph, reference_run
from seg_perception.deploy.wrap import INPUT, MIN_OPSET, wrap_graph
from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.files import replaced_atomically
from seg_perception.model_info import ModelInfo

MIN_AGREEMENT = 0.995


class ImportError_(SegPerceptionError, RuntimeError):
    """The foreign graph cannot be read or wrapped, or its wrapped form disagrees with it."""


@dataclass
class ImportResult:
    """What import_model wrote and how well the wrapped graph matches the foreign one."""

    info: ModelInfo
    agreement: Dict[str, float]        # output ('labels', 'mask:<name>') -> fraction alike

    @property
    def worst(self) -> float:
        return min(self.agreement.values())


def _load(path: str):
    import onnx
    if not os.path.isfile(path):
        raise FileNotFoundError(f'foreign model not found: {path}')
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise ImportError_(f'{path} is not a readable ONNX model: {exc}') from None
    opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 0)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            raise ImportError_(f'{path} uses opset {opset}; the wrapper needs {MIN_OPSET} and '
                               f'converting failed: {exc}') from None
    return model


def model_info_for(contract: Contract, plan, outputs, camera_size: bool,
                   source: str) -> ModelInfo:
    """The ModelInfo of the wrapped graph: classes from the contract, normalisation on the
    0..1 RGB scale that ModelInfo uses."""
    spec = contract.input
    order = slice(None, None, -1) if spec.color == 'bgr' else slice(None)
    unit = 255.0 * spec.scale
    mean = tuple(float(m) / unit for m in spec.mean[order])
    std = tuple(float(s) / unit for s in spec.std[order])
    space = contract.label_space()
    return ModelInfo.from_label_space(
        'imported', space, plan.size, mean=mean, std=std,
        arch_config={'source': os.path.basename(source), 'layout': spec.layout,
                     'color': spec.color, 'resize': spec.resize},
        outputs=list(outputs), output_resolution='camera' if camera_size else 'network',
        masks=list(contract.binary_heads()), probabilities=list(contract.probabilities),
        max_batch=plan.batch)


def _wrapped_results(path: str, frame: np.ndarray, info: ModelInfo) -> Dict[str, np.ndarray]:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    arrays = dict(zip(names, session.run(names, {INPUT: frame[np.newaxis]})))
    results = {'labels': arrays['labels'][0]}
    for index, name in enumerate(info.masks):
        results[f'mask:{name}'] = arrays['masks'][0, index]
    return results


def import_model(foreign_path: str, contract: Contract, output_path: str, frame: np.ndarray,
                 *, output_resolution: str = 'camera') -> ImportResult:
    """Wrap ``foreign_path`` by ``contract`` into ``output_path`` (written atomically, only
    when the wrapped graph agrees with the foreign one on ``frame``, a uint8 H×W×3 RGB
    image, on at least MIN_AGREEMENT of the pixels of its labels and of every mask)."""
    import onnx
    check_choice('output_resolution', output_resolution, OUTPUT_RESOLUTIONS)
    camera_size = output_resolution == 'camera'
    if not camera_size and contract.input.resize == 'letterbox':
        raise InvalidValueError('output_resolution network: a letterboxed model has no fixed '
                                'network-size output (the crop depends on the camera); use '
                                'camera')
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
            or frame.shape[2] != 3:
        raise InvalidValueError(f'the check frame must be uint8 H×W×3 RGB, got '
                                f'{getattr(frame, "dtype", type(frame).__name__)} '
                                f'{getattr(frame, "shape", "")}')
    if os.path.isdir(output_path):
        raise InvalidValueError(f'output {output_path} is a folder; give the .onnx file to write')
    model = _load(foreign_path)
    plan = inspect_graph(model, contract)
    reference = reference_run(foreign_path, frame, contract, plan, camera_size)
    model, outputs = wrap_graph(model, contract, plan, camera_size)
    info = model_info_for(contract, plan, outputs, camera_size, foreign_path)
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ImportError_(f'the wrapped graph fails onnx.checker: '
                           f'{str(exc).strip().splitlines()[0]}') from None
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with replaced_atomically(output_path) as temp_path:
        onnx.save(model, temp_path)
        wrapped = _wrapped_results(temp_path, frame, info)
        agreement = {key: float((wrapped[key] == reference[key]).mean()) for key in reference}
        worst = min(agreement, key=agreement.get)
        if agreement[worst] < MIN_AGREEMENT:
            raise ImportError_(f'the wrapped graph agrees with {foreign_path} run by the '
                               f'contract on only {agreement[worst]:.2%} of the pixels of '
                               f'{worst} (at least {MIN_AGREEMENT:.1%} needed); nothing written')
    return ImportResult(info, agreement)


__all__ = ['ContractError', 'ImportError_', 'ImportResult', 'import_model', 'MIN_AGREEMENT']
