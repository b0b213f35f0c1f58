"""``seg-perception quantize``: static INT8 post-training quantisation into a QDQ graph.

The exported fp32 graph is calibrated on real camera frames with ONNX Runtime's
static quantiser and written as a QDQ model (QuantizeLinear/DequantizeLinear
pairs around the network's layers), which both ONNX Runtime (CPU) and TensorRT
(explicit quantisation) run in INT8:

* ``--target cpu``: asymmetric uint8 activations, symmetric int8 weights, Q/DQ on
  layer inputs and outputs, so ONNX Runtime fuses them into integer kernels.
* ``--target tensorrt``: symmetric int8 activations and weights (TensorRT's only
  INT8 scheme), float bias, Q/DQ on layer inputs only (TensorRT's recommended
  placement; it fuses the rest). Build it with ``seg-perception build-engine
  --precision int8``.

Only the network is quantised (see quant_graph): the uint8 -> float conversion,
resize and normalisation before it and the logits resize and ArgMax after it stay
in float, and so does each classifier (its logits decide the labels, and 8-bit
logits make near-ties flip). Weights are per output channel by default: the
depthwise convolutions of EfficientNet-Lite lose a lot with one scale per tensor.
The model description (metadata_props) is carried over, with the precision added.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.files import replaced_atomically
from seg_perception.model_info import METADATA_PREFIX, load_model_info
from seg_perception.deploy import quant_graph

LOG = logging.getLogger(__name__)

TARGETS = ('cpu', 'tensorrt')
CALIBRATIONS = ('minmax', 'entropy', 'percentile')
DEFAULT_COUNT = 100
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.tif', '.tiff', '.webp')
INPUT_NAME = 'images'
# Operators quantised for TensorRT: the weighted layers and the residual Add, whose
# quantised inputs let TensorRT fuse it into the preceding convolution.
TENSORRT_OPS = ('Conv', 'ConvTranspose', 'MatMul', 'Gemm', 'Add')
# Extra metadata keys (JSON values, like the ModelInfo ones; ModelInfo ignores them).
PRECISION_KEY = METADATA_PREFIX + 'precision'
QUANTIZATION_KEY = METADATA_PREFIX + 'quantization'


class QuantizeError(InvalidValueError):
    """Quantisation cannot proceed; the message names the file or option at fault."""


@dataclass
class QuantizationResult:
    """What ``quantize_model`` did."""

    output: str
    target: str
    calibration: str
    activation_type: str
    weight_type: str
    per_channel: bool
    images: int
    quantized_nodes: int
    float_nodes: List[str] = field(default_factory=list)   # network nodes kept in float
    seconds: float = 0.0

    def record(self) -> dict:
        """The quantisation record stored in the model's metadata."""
        keys = ('target', 'calibration', 'activation_type', 'weight_type', 'per_channel',
                'images')
        return {k: v for k, v in asdict(self).items() if k in keys}


# -- calibration images -------------------------------------------------------------

def find_images(folder: str) -> List[str]:
    """Image files below ``folder`` (recursively), sorted; FileNotFoundError if none."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'calibration image folder not found: {folder}')
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(parent, f) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')]
    if not found:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found under {folder}')
    return sorted(found)


def dataset_images(name: str, root: str, split: str = 'train') -> List[str]:
    """The image files of a dataset split (seg_perception.data layouts; imports torch)."""
    from seg_perception.data import build_dataset
    dataset = build_dataset({'dataset': name, 'root': root}, split)
    if not dataset.samples:
        raise FileNotFoundError(f'dataset {name} split {split} under {root} has no images')
    return [sample[0] for sample in dataset.samples]


def spread_pick(paths: Sequence[str], count: int) -> List[str]:
    """``count`` paths spread evenly over the list (video frames: not just the first few)."""
    if count < 1:
        raise QuantizeError(f'--count must be at least 1, got {count}')
    if count >= len(paths):
        return list(paths)
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to H×W×3 uint8 RGB, or raise QuantizeError naming it."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise QuantizeError(f'cannot read calibration image {path} (missing or not an image)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageCalibrationReader:
    """ONNX Runtime calibration data: one camera frame per batch, as the graph takes it.

    Frames keep their own size: the graph resizes them to the network input, exactly
    as in deployment. (ONNX Runtime's CalibrationDataReader is duck-typed: get_next;
    set_range serves the frames in chunks.)
    """

    def __init__(self, paths: Sequence[str], input_name: str = INPUT_NAME):
        self.paths = list(paths)
        self.input_name = input_name
        self._next, self._end = 0, len(self.paths)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._next >= self._end:
            return None
        frame = read_rgb(self.paths[self._next])
        self._next += 1
        return {self.input_name: np.ascontiguousarray(frame[None])}

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self.paths))

    def rewind(self) -> None:
        self._next, self._end = 0, len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


# -- quantisation -------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_onnxruntime_tools():
    """The quantiser prints progress to stdout and logs at INFO; keep it at debug level."""
    chatty = logging.getLogger('onnxruntime.quantization.shape_inference')
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        chatty.setLevel(level)
        if captured.getvalue().strip():
            LOG.debug('onnxruntime.quantization: %s', captured.getvalue().strip())


def _settings(target: str):
    from onnxruntime.quantization import QuantType
    if target == 'tensorrt':
        extra = {'ActivationSymmetric': True, 'WeightSymmetric': True,
                 'QuantizeBias': False,    # TensorRT takes float bias and fuses it
                 'OpTypesToExcludeOutputQuantization': list(TENSORRT_OPS)}
        return QuantType.QInt8, QuantType.QInt8, list(TENSORRT_OPS), extra
    return QuantType.QUInt8, QuantType.QInt8, None, {'WeightSymmetric': True}


def _select_nodes(split: quant_graph.GraphSplit, exclude: Sequence[str],
                  quantize_classifier: bool):
    """Network nodes to quantise and the network nodes kept in float."""
    network = set(split.network)
    unknown = [e for e in exclude
               if e not in network and e not in {split.op_types[n] for n in network}]
    if unknown:
        raise QuantizeError(f'--exclude {" ".join(unknown)}: no such node name or operator '
                            'type in the network part of the graph')
    keep_float = [n for n in split.network
                  if n in exclude or split.op_types[n] in exclude
                  or (n in split.classifiers and not quantize_classifier)]
    chosen = [n for n in split.network if n not in keep_float]
    return chosen, keep_float


def quantize_model(model_path: str, output_path: str, image_paths: Sequence[str], *,
                   target: str = 'cpu', calibration: str = 'minmax',
                   exclude: Sequence[str] = (), per_channel: bool = True,
                   reduce_range: bool = False,
                   quantize_classifier: bool = False) -> QuantizationResult:
    """Quantise an exported model to a QDQ INT8 graph calibrated on ``image_paths``.

    ``target``: 'cpu' (uint8 activations, ONNX Runtime) or 'tensorrt' (symmetric int8).
    ``calibration``: 'minmax', 'entropy' or 'percentile'. ``exclude``: node names or
    operator types of the network to keep in float. The output is written atomically
    and opened in ONNX Runtime before this returns. Raises FileNotFoundError for a
    missing model, ModelInfoError for a model without seg_perception metadata and
    QuantizeError for other bad input.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in TARGETS:
        raise QuantizeError(f'unknown target {target!r}; choose one of {", ".join(TARGETS)}')
    if calibration not in CALIBRATIONS:
        raise QuantizeError(f'unknown calibration {calibration!r}; choose one of '
                            f'{", ".join(CALIBRATIONS)}')
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f'model file not found: {model_path}')
    info = load_model_info(model_path)          # refuses files without our metadata
    if not image_paths:
        raise QuantizeError('no calibration images given')
    original = onnx.load(model_path)
    if quant_graph.is_quantized(original.graph):
        raise QuantizeError(f'{model_path} is already quantised; quantise the fp32 export')
    started = time.monotonic()
    activation_type, weight_type, op_types, extra = _settings(target)
    method = {'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
              'percentile': CalibrationMethod.Percentile}[calibration]
    if calibration != 'minmax':
        # The histogram calibrators keep every activation of every frame they are given
        # until they bin them (hundreds of MB a frame, benchmarks/DESIGN.md): give them
        # one frame at a time, so memory stays flat whatever --count is.
        extra['CalibStridedMinMax'] = 1
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='seg_quantize_') as scratch:
        prepared = os.path.join(scratch, 'prepared.onnx')
        try:
            with _quiet_onnxruntime_tools():
                quant_pre_process(model_path, prepared)
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference raises many types
            LOG.warning('quantisation pre-processing failed (%s); quantising the model as is',
                        exc)
            onnx.save(original, prepared)
        model = onnx.load(prepared)
        if quant_graph.name_unnamed_nodes(model.graph):
            onnx.save(model, prepared)
        split = quant_graph.split_graph(model.graph)
        chosen, keep_float = _select_nodes(split, list(exclude), quantize_classifier)
        if not chosen:
            raise QuantizeError('every network node is excluded: nothing to quantise')
        LOG.info('quantising %d network nodes for %s (%s calibration on %d images); '
                 '%d pre-processing, %d post-processing and %d network nodes stay float',
                 len(chosen), target, calibration, len(image_paths), len(split.pre),
                 len(split.post), len(keep_float))
        quantized_path = os.path.join(scratch, 'quantized.onnx')
        with _quiet_onnxruntime_tools():
            quantize_static(prepared, quantized_path, ImageCalibrationReader(image_paths),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=activation_type, weight_type=weight_type,
                            nodes_to_quantize=chosen, calibrate_method=method,
                            extra_options=extra)
        quantized = onnx.load(quantized_path)

    # The normalised image feeds the first quantised layer, so only the node that makes it
    # may (and does) feed a QuantizeLinear.
    touched = quant_graph.qdq_neighbours(
        quantized.graph, [n for n in split.pre + split.post if n != split.normaliser])
    if touched:
        raise QuantizeError(f'internal error: pre/post-processing nodes were quantised: '
                            f'{sorted(touched)}')
    result = QuantizationResult(
        output=output_path, target=target, calibration=calibration,
        activation_type='int8' if target == 'tensorrt' else 'uint8', weight_type='int8',
        per_channel=per_channel, images=len(image_paths), quantized_nodes=len(chosen),
        float_nodes=keep_float)
    props = {p.key: p.value for p in quantized.metadata_props}
    props.update({p.key: p.value for p in original.metadata_props})
    props[PRECISION_KEY] = json.dumps('int8')
    props[QUANTIZATION_KEY] = json.dumps(result.record())
    del quantized.metadata_props[:]
    for key, value in props.items():
        quantized.metadata_props.add(key=key, value=value)
    quantized.doc_string = (f'seg_perception {info.architecture}, INT8 QDQ for {target} '
                            f'({calibration} calibration on {len(image_paths)} images)')
    _save_checked(quantized, output_path)
    result.seconds = time.monotonic() - started
    return result


def _save_checked(model, output_path: str) -> None:
    """Write atomically after ONNX Runtime has opened the file."""
    import onnx
    import onnxruntime as ort
    with replaced_atomically(output_path) as temp_path:
        onnx.save(model, temp_path)
        try:
            ort.InferenceSession(temp_path, providers=['CPUExecutionProvider'])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise QuantizeError(f'ONNX Runtime cannot load the quantised model: {exc}') from None


def quantization_record(model_path: str) -> Optional[dict]:
    """The quantisation record of a model written by quantize_model, or None."""
    from seg_perception.model_info import read_onnx_metadata
    raw = read_onnx_metadata(model_path).get(QUANTIZATION_KEY)
    return json.loads(raw) if raw else None
