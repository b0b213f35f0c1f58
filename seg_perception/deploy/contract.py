"""The contract of a foreign segmentation graph: how to feed it and how to read its outputs.

A contract is a small YAML file (config/contracts/ holds one per family) read by
``seg-perception import-model``. Every mistake is reported as one ContractError line that
names the field: ``input.layout: ...``, ``classes.names: ...``. This module only parses and
checks the YAML itself; deploy/foreign.py checks it against the graph.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from seg_perception.errors import SegPerceptionError
from seg_perception.labels import LabelSpace, get_label_space

LAYOUTS = ('NCHW', 'NHWC')
COLORS = ('rgb', 'bgr')
RESIZES = ('stretch', 'letterbox')
HEAD_KINDS = ('logits', 'probabilities', 'ids')
INPUT_DTYPES = ('float32', 'float16')
# The labels of a model that has only a drivable head.
DRIVABLE_ONLY_NAMES = ('not_drivable', 'drivable')
DRIVABLE_ONLY_PALETTE = ((0, 0, 0), (128, 64, 128))

_TOP_KEYS = ('input', 'classes', 'drivable', 'masks', 'probabilities')
_INPUT_KEYS = ('name', 'layout', 'size', 'color', 'scale', 'mean', 'std', 'resize',
               'pad_value', 'dtype')
_CLASSES_KEYS = ('output', 'kind', 'names', 'label_space', 'drivable', 'palette')
_BINARY_KEYS = ('output', 'kind', 'positive')


class ContractError(SegPerceptionError, ValueError):
    """A contract that is malformed or does not fit its graph; the message names the field."""


@dataclass
class InputSpec:
    """How a camera frame becomes the graph's input tensor."""

    name: Optional[str] = None            # None: the graph's only input
    layout: str = 'NCHW'
    size: Optional[Tuple[int, int]] = None  # (height, width); None: fixed by the graph
    color: str = 'rgb'
    scale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = 'stretch'
    pad_value: float = 0.0                # letterbox border, in 0..255 pixel units
    dtype: Optional[str] = None           # None: what the graph declares


@dataclass
class ClassHead:
    """The per-pixel class output."""

    output: str
    kind: str
    space: LabelSpace


@dataclass
class BinaryHead:
    """A head that says yes or no per pixel (drivable area, lane lines)."""

    field: str                            # where it sits in the contract, for messages
    output: str
    kind: str
    positive: Optional[int]               # None: 1 for two or more channels, else the one


@dataclass
class Contract:
    """A parsed contract; ``source`` names it in messages."""

    input: InputSpec
    classes: Optional[ClassHead] = None
    drivable: Optional[BinaryHead] = None
    masks: Dict[str, BinaryHead] = field(default_factory=dict)
    probabilities: List[str] = field(default_factory=list)
    source: str = 'contract'

    def label_space(self) -> LabelSpace:
        """What the wrapped graph's labels mean."""
        if self.classes is not None:
            return self.classes.space
        return LabelSpace('drivable', DRIVABLE_ONLY_NAMES, DRIVABLE_ONLY_PALETTE, (1,))

    def binary_heads(self) -> Dict[str, BinaryHead]:
        """The heads published as masks: ``masks``, plus ``drivable`` beside a class head."""
        heads = dict(self.masks)
        if self.drivable is not None and self.classes is not None:
            heads['drivable'] = self.drivable
        return heads


def load_contract(path: str) -> Contract:
    """Read and check a contract file (ContractError naming the field; OSError when unreadable)."""
    with open(path, encoding='utf-8') as stream:
        try:
            data = yaml.safe_load(stream)
        except yaml.YAMLError as exc:
            raise ContractError(f'{path}: not valid YAML: {str(exc).splitlines()[0]}') from None
    try:
        return parse_contract(data, source=str(path))
    except ContractError as exc:
        raise ContractError(f'{path}: {exc}') from None


def parse_contract(data, source: str = 'contract') -> Contract:
    """A Contract from the YAML's data; ContractError naming the first bad field."""
    data = _mapping(data, 'the contract', _TOP_KEYS)
    if 'classes' not in data and 'drivable' not in data:
        raise ContractError('classes: give a class head (classes:) or a drivable head '
                            '(drivable:), or both')
    contract = Contract(_input(_mapping(data.get('input') or {}, 'input', _INPUT_KEYS)),
                        source=source)
    if 'classes' in data:
        contract.classes = _classes(_mapping(data['classes'], 'classes', _CLASSES_KEYS))
    if 'drivable' in data:
        contract.drivable = _binary(data['drivable'], 'drivable')
    masks = _mapping(data.get('masks') or {}, 'masks', None)
    for name, spec in masks.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ContractError(f'masks: {name!r} is not a usable mask name (letters, digits, _)')
        contract.masks[name] = _binary(spec, f'masks.{name}')
    if 'drivable' in contract.masks and contract.drivable is not None:
        raise ContractError('masks.drivable: the drivable head is already published as the '
                            'drivable mask')
    contract.probabilities = _probabilities(data.get('probabilities') or [], contract)
    return contract


def _mapping(value, where: str, keys: Optional[Sequence[str]]) -> dict:
    if not isinstance(value, dict):
        raise ContractError(f'{where}: expected a mapping, got {type(value).__name__}')
    for key in value:
        if keys is not None and key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f'; did you mean {close[0]!r}?' if close else f'; known: {", ".join(keys)}'
            prefix = '' if where == 'the contract' else f'{where}.'
            raise ContractError(f'{prefix}{key}: unknown key{hint}')
    return value


def _choice(value, where: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ContractError(f'{where}: {value!r} is not one of {", ".join(choices)}')
    return value


def _numbers(value, where: str, count: int) -> Tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != count or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ContractError(f'{where}: expected {count} numbers, got {value!r}')
    return tuple(float(v) for v in value)


def _input(data: dict) -> InputSpec:
    spec = InputSpec()
    if data.get('name') is not None:
        spec.name = str(data['name'])
    spec.layout = _choice(str(data.get('layout', spec.layout)).upper(), 'input.layout', LAYOUTS)
    if data.get('size') is not None:
        size = _numbers(data['size'], 'input.size', 2)
        if min(size) < 1 or any(v != int(v) for v in size):
            raise ContractError(f'input.size: expected [height, width] in whole pixels, got '
                                f'{data["size"]!r}')
        spec.size = (int(size[0]), int(size[1]))
    spec.color = _choice(str(data.get('color', spec.color)).lower(), 'input.color', COLORS)
    if 'scale' in data:
        spec.scale = _numbers([data['scale']], 'input.scale', 1)[0]
        if spec.scale <= 0:
            raise ContractError(f'input.scale: must be > 0, got {data["scale"]!r}')
    spec.mean = _numbers(data.get('mean', list(spec.mean)), 'input.mean', 3)
    spec.std = _numbers(data.get('std', list(spec.std)), 'input.std', 3)
    if min(spec.std) <= 0:
        raise ContractError(f'input.std: every value must be > 0, got {list(spec.std)}')
    spec.resize = _choice(str(data.get('resize', spec.resize)).lower(), 'input.resize', RESIZES)
    if 'pad_value' in data:
        spec.pad_value = _numbers([data['pad_value']], 'input.pad_value', 1)[0]
    if data.get('dtype') is not None:
        spec.dtype = _choice(str(data['dtype']), 'input.dtype', INPUT_DTYPES)
    return spec


def _classes(data: dict) -> ClassHead:
    if 'output' not in data:
        raise ContractError('classes.output: missing (the name of the graph output with the '
                            'classes)')
    kind = _choice(data.get('kind', 'logits'), 'classes.kind', HEAD_KINDS)
    if ('names' in data) == ('label_space' in data):
        raise ContractError('classes.names: give either names: [...] or label_space: NAME')
    if 'label_space' in data:
        try:
            space = get_label_space(str(data['label_space']))
        except KeyError as exc:
            raise ContractError(f'classes.label_space: {exc}') from None
    else:
        names = data['names']
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ContractError(f'classes.names: expected a list of class names, got {names!r}')
        if len(set(names)) != len(names):
            raise ContractError('classes.names: a class is named twice')
        if not 2 <= len(names) <= 255:
            raise ContractError(f'classes.names: {len(names)} names; a model needs 2 to 255')
        palette = data.get('palette') or _default_palette(len(names))
        if not isinstance(palette, list) or len(palette) != len(names):
            raise ContractError(f'classes.palette: expected {len(names)} colours [r, g, b], '
                                f'one per class, got {palette!r}')
        colours = tuple(tuple(int(v) for v in _numbers(c, 'classes.palette', 3)) for c in palette)
        if any(not 0 <= v <= 255 for colour in colours for v in colour):
            raise ContractError(f'classes.palette: colour values are 0 to 255, got {palette!r}')
        space = LabelSpace('custom', tuple(names), colours, ())
    if 'drivable' in data:
        drivable = data['drivable']
        if not isinstance(drivable, list):
            raise ContractError(f'classes.drivable: expected a list of class names, got '
                                f'{drivable!r}')
        try:
            space = space.with_drivable(drivable)
        except (KeyError, ValueError) as exc:
            raise ContractError(f'classes.drivable: {exc}') from None
    return ClassHead(str(data['output']), kind, space)


def _binary(data, where: str) -> BinaryHead:
    data = _mapping(data, where, _BINARY_KEYS)
    if 'output' not in data:
        raise ContractError(f'{where}.output: missing (the name of the graph output)')
    kind = _choice(data.get('kind', 'logits'), f'{where}.kind', HEAD_KINDS)
    positive = data.get('positive')
    if positive is not None and (not isinstance(positive, int) or isinstance(positive, bool)
                                 or positive < 0):
        raise ContractError(f'{where}.positive: expected a channel index >= 0, got {positive!r}')
    return BinaryHead(where, str(data['output']), kind, positive)


def _probabilities(names, contract: Contract) -> List[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ContractError(f'probabilities: expected a list of class names, got {names!r}')
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ContractError(f'probabilities: {", ".join(twice)} listed twice')
    if names and contract.classes is None:
        raise ContractError('probabilities: needs a class head (classes:)')
    if names and contract.classes.kind == 'ids':
        raise ContractError('probabilities: classes.kind is ids; scores need logits or '
                            'probabilities')
    return [probability_class(contract.classes.space, name, 'probabilities') for name in names]


def probability_class(space: LabelSpace, name: str, where: str) -> str:
    """The class ``name`` as ``space`` spells it; ContractError naming ``where`` if unknown."""
    try:
        return space.class_names[space.class_id(name)]
    except KeyError as exc:
        raise ContractError(f'{where}: {exc}') from None


def _default_palette(count: int) -> List[List[int]]:
    # Distinct colours without a table: golden-ratio hues at full saturation.
    import colorsys
    return [[round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)]
            for i in range(count)]
