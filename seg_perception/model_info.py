"""What a consumer needs to know about a model, and the one loader that reads it.

The same description travels in three places: the training config's output, the
checkpoint (``checkpoint['model_info']``) and the exported ONNX file (its
``metadata_props``, one JSON string per key, prefixed ``seg_perception.``).
This module imports neither torch nor onnxruntime at import time, so the
vehicle path can use it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from seg_perception.choices import OUTPUT_RESOLUTIONS, PRECISIONS
from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.labels import LabelSpace

METADATA_PREFIX = 'seg_perception.'
FORMAT_VERSION = 1

# Inputs are normalised as the backbone's pretrained weights expect. The official
# EfficientNet-Lite0 weights want mean = std = 0.5 (timm's pretrained_cfg).
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelNotFoundError(SegPerceptionError, FileNotFoundError):
    """No model file at ``path`` (None: no path given and no default model installed)."""

    def __init__(self, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.path = path


class ModelInfoError(InvalidValueError):
    """A model file or checkpoint does not carry a usable description."""


@dataclass
class ModelInfo:
    """Architecture, label space and preprocessing of one trained model."""

    architecture: str
    num_classes: int
    class_names: List[str]
    palette: List[List[int]]
    drivable_ids: List[int]
    input_size: Tuple[int, int]            # network input (height, width)
    mean: Tuple[float, float, float] = IMAGENET_MEAN   # on the 0..1 scale, RGB
    std: Tuple[float, float, float] = IMAGENET_STD
    arch_config: Dict = field(default_factory=dict)    # kwargs of build_model()
    dataset: str = ''
    label_space: str = ''
    ignore_index: int = 255
    # Filled in by export: what the ONNX graph outputs and at which resolution.
    outputs: List[str] = field(default_factory=lambda: ['labels'])
    output_resolution: str = 'camera'      # 'camera' or 'network'
    # The channels of the 'masks' output (N×M×h×w uint8, 255 = on), e.g. ['lane_lines'],
    # and of the 'probabilities' output (N×P×h×w uint8, p × 255), as class names.
    masks: List[str] = field(default_factory=list)
    probabilities: List[str] = field(default_factory=list)
    # What the file's graph computes in: 'int8' for a quantised graph, 'fp16' for half
    # weights. load_model_info reads it from the graph itself.
    precision: str = 'fp32'
    # The most frames one run of the graph takes: 1 for an imported graph exported with a
    # fixed batch of one (the pipeline then runs it frame by frame); None: any number.
    max_batch: Optional[int] = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.validate()

    # -- checks --------------------------------------------------------------
    def validate(self) -> None:
        """Raise ModelInfoError naming the first inconsistent field."""
        if self.num_classes < 2:
            raise ModelInfoError(f'num_classes must be at least 2, got {self.num_classes}')
        if self.num_classes > 255:
            raise ModelInfoError('num_classes must fit a uint8 class id (<= 255)')
        if len(self.class_names) != self.num_classes:
            raise ModelInfoError(f'{len(self.class_names)} class names for '
                                 f'{self.num_classes} classes')
        if len(self.palette) != self.num_classes or any(len(c) != 3 for c in self.palette):
            raise ModelInfoError('palette must hold one RGB triple per class')
        if any(not 0 <= i < self.num_classes for i in self.drivable_ids):
            raise ModelInfoError(f'drivable ids {self.drivable_ids} out of range')
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ModelInfoError(f'input_size must be (height, width), got {self.input_size}')
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelInfoError('mean and std must be 3 values each, std > 0')
        if self.output_resolution not in OUTPUT_RESOLUTIONS:
            raise ModelInfoError(f'output_resolution must be camera or network, '
                                 f'got {self.output_resolution!r}')
        unknown = [name for name in self.probabilities if name not in self.class_names]
        if unknown:
            raise ModelInfoError(f'probabilities: {", ".join(unknown)} not among the classes')
        if len(set(self.masks)) != len(self.masks):
            raise ModelInfoError(f'masks: a name appears twice in {self.masks}')
        if self.max_batch is not None and (not isinstance(self.max_batch, int)
                                           or isinstance(self.max_batch, bool)
                                           or self.max_batch < 1):
            raise ModelInfoError(f'max_batch must be a whole number >= 1 or null, '
                                 f'got {self.max_batch!r}')
        if self.precision not in PRECISIONS:
            raise ModelInfoError(f'precision must be one of {", ".join(PRECISIONS)}, '
                                 f'got {self.precision!r}')

    # -- construction --------------------------------------------------------
    @classmethod
    def from_label_space(cls, architecture: str, space: LabelSpace,
                         input_size: Sequence[int], **kwargs) -> 'ModelInfo':
        return cls(architecture=architecture, num_classes=space.num_classes,
                   class_names=list(space.class_names),
                   palette=[list(c) for c in space.palette],
                   drivable_ids=list(space.drivable_ids), input_size=tuple(input_size),
                   label_space=space.name, ignore_index=space.ignore_index, **kwargs)

    def label_space_obj(self) -> LabelSpace:
        """The label space this model predicts, rebuilt from the metadata."""
        return LabelSpace(self.label_space or self.architecture, tuple(self.class_names),
                          tuple(tuple(c) for c in self.palette), tuple(self.drivable_ids),
                          self.ignore_index if self.ignore_index >= self.num_classes else 255)

    def summary(self) -> str:
        """One line for logs and reports: 'deeplabv3plus, efficientnet_lite0, 11 classes
        of camvid, network 360x480, network-resolution output'."""
        parts = [self.architecture]
        if self.arch_config.get('backbone'):
            parts.append(str(self.arch_config['backbone']))
        of_dataset = f' of {self.dataset}' if self.dataset else ''
        parts.append(f'{self.num_classes} classes{of_dataset}')
        parts.append('network {}x{}'.format(*self.input_size))
        parts.append(f'{self.output_resolution}-resolution output')
        return ', '.join(parts)

    # -- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d['input_size'] = list(self.input_size)
        d['mean'] = list(self.mean)
        d['std'] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'ModelInfo':
        required = ('architecture', 'num_classes', 'class_names', 'palette',
                    'drivable_ids', 'input_size')
        missing = [k for k in required if k not in d]
        if missing:
            raise ModelInfoError(f'model description lacks {", ".join(missing)}')
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_metadata(self) -> Dict[str, str]:
        """ONNX metadata_props: one JSON value per key."""
        return {METADATA_PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, props: Dict[str, str], source: str = 'model') -> 'ModelInfo':
        values = {}
        for key, raw in props.items():
            if key.startswith(METADATA_PREFIX):
                try:
                    values[key[len(METADATA_PREFIX):]] = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ModelInfoError(f'{source}: metadata {key} is not JSON: {exc}') from None
        if not values:
            raise ModelInfoError(
                f'{source} carries no seg_perception metadata (class names, palette, '
                'input size); export it with `seg-perception export`')
        try:
            return cls.from_dict(values)
        except ModelInfoError as exc:
            raise ModelInfoError(f'{source}: {exc}') from None


_INT8_OPS = frozenset({'QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger',
                       'MatMulInteger', 'QLinearMatMul'})


@dataclass
class GraphFacts:
    """What a model file says about itself, read in one pass."""

    metadata: Dict[str, str]
    precision: Optional[str] = None       # None: not known (no onnx package to look)
    classes_scored: Optional[int] = None  # channels of the logits the argmax picks from


def read_onnx(path: str) -> GraphFacts:
    """Read an ONNX file once: its metadata_props, its precision and how many classes its
    argmax chooses among, without building an inference session."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'model file not found: {path}')
    try:
        import onnx
    except ImportError:      # onnxruntime alone is enough, only slower to open
        import onnxruntime as ort
        try:
            sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise ModelInfoError(f'{path} is not a readable ONNX model: {exc}') from None
        return GraphFacts(dict(sess.get_modelmeta().custom_metadata_map))
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise ModelInfoError(f'{path} is not a readable ONNX model: {exc}') from None
    return GraphFacts({p.key: p.value for p in model.metadata_props}, _precision(model),
                      _classes_scored(model))


def _precision(model) -> str:
    import onnx
    if any(node.op_type in _INT8_OPS for node in model.graph.node):
        return 'int8'
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return 'fp16'
    return 'fp32'


def _classes_scored(model) -> Optional[int]:
    """The channel count at the ArgMax's axis, when the graph's shapes say it (else None)."""
    argmaxes = [n for n in model.graph.node if n.op_type == 'ArgMax']
    if len(argmaxes) != 1:
        return None
    node = argmaxes[0]
    axis = next((a.i for a in node.attribute if a.name == 'axis'), 0)
    shapes = {v.name: v for v in model.graph.value_info}
    if node.input[0] not in shapes:
        import onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - a graph shape inference cannot follow
            return None
        shapes = {v.name: v for v in inferred.graph.value_info}
    value = shapes.get(node.input[0])
    if value is None:
        return None
    dims = value.type.tensor_type.shape.dim
    if not -len(dims) <= axis < len(dims) or not dims[axis].HasField('dim_value'):
        return None
    return int(dims[axis].dim_value)


def read_onnx_metadata(path: str) -> Dict[str, str]:
    """An ONNX file's metadata_props (see read_onnx for everything it says)."""
    return read_onnx(path).metadata


def load_model_info(path: str) -> ModelInfo:
    """The one loader: the ModelInfo of an exported ONNX model, its precision read from the
    graph, checked against what the graph computes (ModelInfoError when it does not fit)."""
    facts = read_onnx(path)
    info = ModelInfo.from_metadata(facts.metadata, source=str(path))
    if facts.precision is not None:
        info.precision = facts.precision
    if facts.classes_scored is not None and facts.classes_scored > info.num_classes:
        # Its argmax would publish class ids that the class map does not name.
        raise ModelInfoError(f'{path}: the graph scores {facts.classes_scored} classes but its '
                             f'metadata names {info.num_classes} ({", ".join(info.class_names)})'
                             '; re-export it, or fix the class names')
    return info


def default_model_path() -> Optional[str]:
    """The ONNX model shipped with the package, or None when this install has none."""
    path = os.path.join(os.path.dirname(__file__), 'assets', 'default_model.onnx')
    return path if os.path.isfile(path) else None


def resolve_model_path(path: Optional[str]) -> str:
    """The model file to load: ``path`` (``~`` expanded), or the shipped default model when
    ``path`` is empty; FileNotFoundError naming what is missing. Every consumer (commands,
    node, replay) resolves through here."""
    if not path:
        default = default_model_path()
        if default is None:
            raise ModelNotFoundError('no model given and no default model is installed '
                                     '(seg_perception/assets/default_model.onnx): pass '
                                     '--model MODEL.onnx, a model made by `seg-perception '
                                     'export`')
        return default
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise ModelNotFoundError(f'model file not found: {path}', path)
    return path
