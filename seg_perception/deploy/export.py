"""Export a trained network to the one deployable ONNX graph.

The graph takes camera frames exactly as they arrive and does all preprocessing
itself, so every runtime (ONNX Runtime, TensorRT, the ROS node) only feeds bytes:

    images  uint8 N×H×W×3 RGB (N, H, W dynamic)
      -> float, NHWC -> NCHW
      -> bilinear resize to the network input size (ModelInfo.input_size)
      -> normalise with ModelInfo.mean/std (on the 0..1 scale)
      -> network -> logits N×C×h×w
      -> [camera mode] bilinear resize of the logits to H×W
      -> labels      uint8 N×H×W (or N×h×w in network mode): argmax class id
      -> confidence  uint8, round(max softmax × 255)      (optional)

Output resolution. 'camera' upsamples the C-channel logits bilinearly and takes
the argmax at camera resolution: exact, smooth class boundaries, but costly at
1080p, and the cost grows with classes × pixels. 'network' outputs labels at the
network size and leaves the (cheap, nearest) resize to the runtime; its labels
differ from 'camera' only along class boundaries (cost and agreement on real
frames: benchmarks/DESIGN.md).

The model description (ModelInfo) travels in the file's metadata_props, read
back with ``seg_perception.model_info.load_model_info``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import warnings
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from seg_perception.choices import OUTPUT_RESOLUTIONS, check_choice
from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.files import replaced_atomically
from seg_perception.model_info import ModelInfo
from seg_perception.models.deployable import DeployableSegmenter

LOG = logging.getLogger(__name__)
# The dynamo exporter's own opset (TensorRT 10 parses it). For TensorRT 8.x, which stops at
# opset 17, pass opset=17: that goes through the legacy exporter, since converting the dynamo
# graph down fails for some operators (Pad).
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
EXPORTERS = ('auto', 'dynamo', 'legacy')
INPUT_NAME = 'images'
# Frame sizes the graph accepts; the example traced through the exporter must lie inside.
_MAX_SIDE = 16384
_MAX_BATCH = 1024
_CHATTY_LOGGERS = ('onnxscript', 'onnx_ir', 'torch.onnx', 'torch.export', 'torch._dynamo',
                   'torch.fx')


class ExportError(SegPerceptionError, RuntimeError):
    """The exporter failed or produced a graph that does not check out."""


def _example_input(model: nn.Module, input_size: Tuple[int, int]) -> torch.Tensor:
    # Batch 2 and a frame size unlike the network's, so no exporter specialises on them.
    height, width = input_size[0] + 13, input_size[1] + 27
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8,
                         generator=generator).to(device)


@contextlib.contextmanager
def _quiet_exporter_logs():
    """Keep the exporters' INFO chatter (hundreds of lines) out of the command's output."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_dynamo(wrapper, example, output_names, opset):
    from torch.export import Dim
    dims = {0: Dim('batch', min=1, max=_MAX_BATCH), 1: Dim('height', min=2, max=_MAX_SIDE),
            2: Dim('width', min=2, max=_MAX_SIDE)}
    program = torch.onnx.export(wrapper, (example,), dynamo=True, verbose=False,
                                input_names=[INPUT_NAME], output_names=output_names,
                                dynamic_shapes={'images': dims}, opset_version=opset)
    return program.model_proto


def _export_legacy(wrapper, example, output_names, opset, folder):
    import onnx
    axes = {0: 'batch', 1: 'height', 2: 'width'}
    dynamic_axes = {name: dict(axes) for name in [INPUT_NAME] + output_names}
    path = os.path.join(folder, 'legacy.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        # The traced network sees one fixed input size, so its shape checks are constants.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(wrapper, (example,), path, dynamo=False, verbose=False,
                          input_names=[INPUT_NAME], output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True)
    return onnx.load(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_exporter(wrapper, example, output_names, opset, use_dynamo, fallback):
    """The ONNX ModelProto of ``wrapper``; ExportError naming each exporter that failed."""
    failures = []
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad(), _quiet_exporter_logs():
        if use_dynamo:
            try:
                return _export_dynamo(wrapper, example, output_names, opset)
            except Exception as exc:  # noqa: BLE001 - the exporter raises many types
                if not fallback:
                    raise ExportError(f'dynamo export failed: {_first_line(exc)}') from exc
                failures.append(f'dynamo: {_first_line(exc)}')
                LOG.warning('dynamo export failed (%s); trying the legacy exporter',
                            _first_line(exc))
        try:
            return _export_legacy(wrapper, example, output_names, opset, scratch)
        except Exception as exc:  # noqa: BLE001 - as above
            failures.append(f'legacy: {_first_line(exc)}')
            raise ExportError(f'export failed ({"; ".join(failures)})') from exc


def _check_graph(proto, output_names: Sequence[str]) -> None:
    import onnx
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f'the exported graph fails onnx.checker: {_first_line(exc)}') from exc
    inputs = [i for i in proto.graph.input
              if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ExportError(f'exported graph has inputs {[i.name for i in inputs]}, '
                          f'expected [{INPUT_NAME!r}]')
    got = [o.name for o in proto.graph.output]
    if got != list(output_names):
        raise ExportError(f'exported graph has outputs {got}, expected {list(output_names)}')
    for value in list(inputs) + list(proto.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            raise ExportError(f'exported graph: {value.name} is not uint8')


def _check_runtime(path: str, output_names: Sequence[str]) -> None:
    """Open the file in ONNX Runtime: the same loader the vehicle uses."""
    import onnxruntime as ort
    try:
        session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(f'ONNX Runtime cannot load the exported graph {path}: {exc}') from None
    got = [o.name for o in session.get_outputs()]
    if got != list(output_names):
        raise ExportError(f'ONNX Runtime sees outputs {got} in {path}')


def export_onnx(model: nn.Module, info: ModelInfo, path: str, *, opset: int = DEFAULT_OPSET,
                with_confidence: bool = False, output_resolution: str = 'camera',
                input_size: Optional[Sequence[int]] = None,
                exporter: str = 'auto', probabilities: Sequence[str] = ()) -> ModelInfo:
    """Export ``model`` as the deployable graph to ``path``; return the ModelInfo it carries.

    ``input_size`` (height, width) overrides the network input size of ``info``.
    ``probabilities``: class names whose softmax probability the graph also outputs
    ('probabilities', uint8 N×P×H×W, p × 255); only when asked, since each costs a channel
    at the output resolution.
    ``exporter``: 'dynamo' (torch.export based, opset >= 18), 'legacy' (TorchScript
    based, deprecated by torch but still the one for opset <= 17) or 'auto' (dynamo
    for opset >= 18, falling back to legacy if it fails; legacy below). The file is
    checked with onnx.checker and opened in ONNX Runtime before this returns; it is
    written atomically, so a failed export never leaves a broken file behind.
    Raises ExportError when the exporter fails or its graph does not check out.
    """
    import onnx
    check_choice('output_resolution', output_resolution, OUTPUT_RESOLUTIONS)
    if exporter not in EXPORTERS:
        raise InvalidValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    size = tuple(int(v) for v in (input_size if input_size is not None else info.input_size))
    if len(size) != 2 or min(size) < 1:
        raise InvalidValueError(f'input_size must be (height, width), got {input_size}')
    output_names = ['labels'] + (['confidence'] if with_confidence else [])
    output_names += ['probabilities'] if probabilities else []
    info = dataclasses.replace(info, input_size=size, outputs=output_names,
                               output_resolution=output_resolution,
                               probabilities=list(probabilities))

    if os.path.isdir(path):
        raise InvalidValueError(f'output {path} is a folder; give the path of the .onnx file to '
                                f'write')
    was_training = model.training
    model.eval()
    wrapper = DeployableSegmenter(model, info, with_confidence=with_confidence,
                                  output_resolution=output_resolution)
    wrapper.to(next((p.device for p in model.parameters()), torch.device('cpu'))).eval()
    use_dynamo = exporter == 'dynamo' or (exporter == 'auto' and opset >= DYNAMO_MIN_OPSET)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        proto = _run_exporter(wrapper, _example_input(model, size), output_names, opset,
                              use_dynamo, fallback=exporter == 'auto')
    finally:
        model.train(was_training)

    got_opset = next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')),
                     None)
    if got_opset != opset:
        raise ExportError(f'the exporter produced opset {got_opset}, not the requested {opset}'
                          + ('; use exporter="legacy" for opsets below 18' if use_dynamo else ''))
    del proto.metadata_props[:]
    for key, value in info.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (f'seg_perception {info.architecture}, {info.num_classes} classes, '
                        f'network input {size[0]}x{size[1]}')
    _check_graph(proto, output_names)

    with replaced_atomically(path) as temp_path:
        onnx.save(proto, temp_path)
        _check_runtime(temp_path, output_names)
    return info


def parity_with_torch(path: str, model: nn.Module, info: ModelInfo,
                      images: torch.Tensor) -> float:
    """Fraction of pixels where ONNX Runtime's labels equal PyTorch's for ``images``.

    ``images`` is a uint8 N×H×W×3 tensor; ``info`` is what export_onnx returned.
    """
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    onnx_labels = session.run(['labels'], {INPUT_NAME: images.cpu().numpy()})[0]
    was_training = model.training
    model.eval()
    wrapper = DeployableSegmenter(model, info, output_resolution=info.output_resolution)
    try:
        with torch.no_grad():
            outputs = wrapper(images)      # labels, then any probabilities the info asks for
        torch_labels = (outputs[0] if isinstance(outputs, tuple) else outputs).cpu().numpy()
    finally:
        model.train(was_training)
    if onnx_labels.shape != torch_labels.shape:
        raise ExportError(f'ONNX labels have shape {onnx_labels.shape}, '
                          f'PyTorch {torch_labels.shape}')
    return float((onnx_labels == torch_labels).mean())


def smooth_test_frame(height: int, width: int) -> torch.Tensor:
    """A deterministic frame with gradients and edges (noise would make near-ties)."""
    rows = torch.linspace(0, 1, height).view(height, 1)
    cols = torch.linspace(0, 1, width).view(1, width)
    red = rows * 255
    green = cols * 255
    blue = ((rows * 4).floor() + (cols * 6).floor()) % 2 * 200 + 20
    frame = torch.stack([red.expand(height, width), green.expand(height, width),
                         blue.expand(height, width)], dim=-1)
    return frame.round().to(torch.uint8).unsqueeze(0)
