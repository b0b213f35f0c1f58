"""Training configs: YAML files, ``key=value`` overrides, defaults and validation.

A config has eight sections::

    model:      architecture + the keyword arguments of models.build_model
    data:       dataset, root, crop/scale augmentation (read by seg_perception.data)
    loss:       read by seg_perception.training.losses.build_loss (+ aux_weight, class_weights)
    optimizer:  name (sgd|adamw), lr, momentum, weight_decay, nesterov, backbone_lr_mult
    schedule:   poly LR (power), linear warmup, length in iterations or epochs
    train:      batch size, AMP, accumulation, checkpoint/eval cadence, workers, seed,
                weight averaging (ema_decay), full-frame crops at the end (full_frame_epochs),
                knowledge distillation (distill)...
    deploy:     input_size (H, W) the exported network runs at
    (any other top-level key is an error, so a typo cannot silently change nothing)

This module checks the sections the training loop reads, and names the bad key in every
error (``train.batch_size must be a positive integer, got 'eight'``). The values of the
model, data and loss sections belong to their builders, which check them; their keys
are checked here (loss) or by the builders' packages through ``check_keys`` (data: the
dataset's keys, model: the architecture's keyword arguments, see
training/config_keys.py), so that a misspelt key is an error, never silently unused.
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

from seg_perception.errors import InvalidValueError
from seg_perception.files import write_text

SECTIONS = ('model', 'data', 'loss', 'optimizer', 'schedule', 'train', 'deploy')
AMP_MODES = ('auto', 'off', 'fp16', 'bf16')
OPTIMIZERS = ('sgd', 'adamw')
LR_POLICIES = ('poly', 'constant')
DEVICES = ('auto', 'cpu', 'cuda')
# The keys of loss: (training.losses.build_loss reads them; this list is its list).
LOSS_KEYS = ('terms', 'aux_weight', 'class_weighting', 'class_weights')

DEFAULTS: Dict[str, Dict[str, Any]] = {
    'model': {},
    'data': {},
    'loss': {},
    'optimizer': {'name': 'sgd', 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 1e-4,
                  'nesterov': False, 'backbone_lr_mult': 1.0},
    'schedule': {'policy': 'poly', 'power': 0.9, 'iterations': None, 'epochs': None,
                 'warmup_iterations': 0, 'warmup_factor': 0.1},
    'train': {'batch_size': 8, 'accumulate': 1, 'amp': 'auto', 'channels_last': False,
              'sync_bn': True, 'freeze_bn': False, 'grad_clip': None,
              'checkpoint_every': 1000, 'eval_every': 1000, 'log_every': 20,
              'workers': 4, 'seed': 0, 'device': 'auto', 'threads': None,
              'val_batch_size': 1, 'vis_images': 4, 'max_iterations_this_run': None,
              'ema_decay': None, 'full_frame_epochs': None, 'distill': None},
    'deploy': {'input_size': None},
}


class ConfigError(InvalidValueError):
    """A config file, override or value that the training loop cannot use."""


# -- loading ------------------------------------------------------------------

def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        shipped = list_shipped_configs()
        hint = f'; shipped configs: {", ".join(shipped)}' if shipped else ''
        raise FileNotFoundError(f'config file not found: {path}{hint}')
    with open(path, encoding='utf-8') as stream:
        try:
            data = yaml.safe_load(stream)
        except yaml.YAMLError as exc:
            raise ConfigError(f'{path} is not valid YAML: {exc}') from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path} must hold a mapping of sections, '
                          f'got a {type(data).__name__}')
    return data


def _parse_value(text: str) -> Any:
    """YAML scalar/list parsing, plus floats like 1e-4 that YAML 1.1 keeps as strings."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return _maybe_float(value)


def _maybe_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Set ``section.key=value`` (dotted, any depth) in a copy of ``config``.

    Values are parsed as YAML (``8``, ``true``, ``null``, ``[512, 1024]``, ``1e-4``).
    """
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition('=')
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f'override {item!r} is not key=value (e.g. train.batch_size=4)')
        parts = key.split('.')
        if any(not p for p in parts):
            raise ConfigError(f'override {item!r}: empty name in the dotted key {key!r}')
        node = config
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = '.'.join(parts[:depth + 1])
                raise ConfigError(f'override {item!r}: {where} is {child!r}, not a section')
            node = child
        node[parts[-1]] = _parse_value(raw)
    return config


def _merge(base: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def repo_root() -> str:
    """The source checkout holding this package (where config/train lives)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def list_shipped_configs() -> List[str]:
    """Paths of the training configs shipped in config/train (source checkout)."""
    folder = os.path.join(repo_root(), 'config', 'train')
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join('config', 'train', n) for n in os.listdir(folder)
                  if n.endswith('.yaml'))


def _resolve_data_root(config: Dict[str, Any], config_path: Optional[str]) -> None:
    """Make a relative ``data.root`` absolute.

    Relative roots are tried against the current directory first, then against the
    repository root (so ``../shared/data/camvid`` works from anywhere), then against
    the config file's folder. An unresolvable root is left for the dataset to report.
    """
    data = config.get('data')
    root = data.get('root') if isinstance(data, dict) else None
    if not isinstance(root, str) or not root or os.path.isabs(root):
        return
    root = os.path.expanduser(root)
    bases = [os.getcwd(), repo_root()]
    if config_path:
        bases.append(os.path.dirname(os.path.abspath(config_path)))
    for base in bases:
        candidate = os.path.normpath(os.path.join(base, root))
        if os.path.exists(candidate):
            data['root'] = candidate
            return
    data['root'] = os.path.normpath(os.path.join(os.getcwd(), root))


def _check_sections(config: Dict[str, Any]) -> None:
    unknown = [k for k in config if k not in SECTIONS]
    if unknown:
        raise ConfigError(_unknown_message(unknown[0], SECTIONS, ''))
    for section in SECTIONS:
        if config.get(section) is None:
            config[section] = {}
        if not isinstance(config[section], dict):
            raise ConfigError(f'{section} must be a mapping of settings, '
                              f'got {config[section]!r}')


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (),
                base: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Read a config file (or start from ``base``), apply overrides, fill defaults, check.

    Returns a plain dict with every section present. Raises FileNotFoundError for a
    missing file and ConfigError (a ValueError) naming the offending key otherwise.
    """
    if path is None and base is None:
        raise ConfigError('no config given: pass --config FILE')
    raw = _read_yaml(path) if path is not None else copy.deepcopy(dict(base))
    _check_sections(raw)
    # Defaults first, so that an override can only extend a section, never replace
    # a default value by a sub-section by accident.
    config = apply_overrides(_merge(DEFAULTS, raw), overrides)
    _check_sections(config)
    _resolve_data_root(config, path)
    validate_config(config)
    return config


def dump_config(config: Mapping[str, Any], path: str) -> None:
    """Write a config as YAML (the run's effective config, for the record), atomically."""
    write_text(path, yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None))


# -- validation ---------------------------------------------------------------

def _unknown_message(key: str, known: Sequence[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f' (did you mean {prefix}{close[0]}?)' if close else ''
    return (f'unknown config key {prefix}{key}{hint}; known keys here: '
            f'{", ".join(prefix + k for k in known)}')


def check_keys(values: Mapping[str, Any], known: Sequence[str], section: str) -> None:
    """Raise ConfigError for the first key of ``values`` (the ``section`` part of a config,
    dotted for a sub-section) that is not in ``known``, with the closest known key."""
    for key in values:
        if key not in known:
            raise ConfigError(_unknown_message(str(key), list(known), f'{section}.'))


def _number(kind: type, low: Optional[float] = None, high: Optional[float] = None,
            low_open: bool = False, optional: bool = False) -> Callable:
    def check(value, name):
        if value is None and optional:
            return None
        value = _maybe_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{name} must be a{"n integer" if kind is int else " number"}, '
                              f'got {value!r}')
        if kind is int:
            if float(value) != int(value):
                raise ConfigError(f'{name} must be an integer, got {value!r}')
            value = int(value)
        else:
            value = float(value)
        if low is not None and (value <= low if low_open else value < low):
            relation = '>' if low_open else '>='
            raise ConfigError(f'{name} must be {relation} {low}, got {value!r}')
        if high is not None and value > high:
            raise ConfigError(f'{name} must be <= {high}, got {value!r}')
        return value
    return check


def _choice(options: Sequence[str], booleans: Optional[Dict[bool, str]] = None) -> Callable:
    def check(value, name):
        if isinstance(value, bool) and booleans:    # YAML 1.1 reads off/on as booleans
            value = booleans[value]
        if not isinstance(value, str) or value.lower() not in options:
            raise ConfigError(f'{name} must be one of {", ".join(options)}, got {value!r}')
        return value.lower()
    return check


def _boolean(value, name):
    if not isinstance(value, bool):
        raise ConfigError(f'{name} must be true or false, got {value!r}')
    return value


def _optional_mapping(value, name):
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(f'{name} must be a mapping of settings, got {value!r}')
    return value


def _size_pair(value, name):
    if value is None:
        raise ConfigError(f'{name} is required: the (height, width) the network runs at '
                          'once deployed, e.g. [360, 480]')
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ConfigError(f'{name} must be [height, width] in pixels, got {value!r}')
    return [int(v) for v in value]


POSITIVE_INT = _number(int, 1)
OPTIONAL_POSITIVE_INT = _number(int, 1, optional=True)
NON_NEGATIVE_INT = _number(int, 0)

SCHEMA: Dict[str, Dict[str, Callable]] = {
    'optimizer': {
        'name': _choice(OPTIMIZERS),
        'lr': _number(float, 0.0, low_open=True),
        'momentum': _number(float, 0.0, 1.0),
        'weight_decay': _number(float, 0.0),
        'nesterov': _boolean,
        'backbone_lr_mult': _number(float, 0.0),
    },
    'schedule': {
        'policy': _choice(LR_POLICIES),
        'power': _number(float, 0.0),
        'iterations': OPTIONAL_POSITIVE_INT,
        'epochs': OPTIONAL_POSITIVE_INT,
        'warmup_iterations': NON_NEGATIVE_INT,
        'warmup_factor': _number(float, 0.0, 1.0),
    },
    'train': {
        'batch_size': POSITIVE_INT,
        'accumulate': POSITIVE_INT,
        'amp': _choice(AMP_MODES, {False: 'off', True: 'auto'}),
        'channels_last': _boolean,
        'sync_bn': _boolean,
        'freeze_bn': _boolean,
        'grad_clip': _number(float, 0.0, low_open=True, optional=True),
        'checkpoint_every': POSITIVE_INT,
        'eval_every': POSITIVE_INT,
        'log_every': POSITIVE_INT,
        'workers': NON_NEGATIVE_INT,
        'seed': NON_NEGATIVE_INT,
        'device': _choice(DEVICES),
        'threads': OPTIONAL_POSITIVE_INT,
        'val_batch_size': POSITIVE_INT,
        'vis_images': NON_NEGATIVE_INT,
        'max_iterations_this_run': OPTIONAL_POSITIVE_INT,
        'ema_decay': _number(float, 0.0, 1.0, low_open=True, optional=True),
        'full_frame_epochs': _number(int, 0, optional=True),
        'distill': _optional_mapping,      # its keys: training/distillation.py
    },
    'deploy': {'input_size': _size_pair},
}


def validate_config(config: Dict[str, Any]) -> None:
    """Check (and normalise in place) the sections the training loop reads."""
    for section, fields in SCHEMA.items():
        values = config[section]
        check_keys(values, list(fields), section)
        for key, check in fields.items():
            values[key] = check(values.get(key), f'{section}.{key}')
    model = config['model']
    architecture = model.get('architecture')
    if not isinstance(architecture, str) or not architecture:
        raise ConfigError('model.architecture is required (e.g. deeplabv3plus); '
                          '`seg-perception models` lists them')
    loss = config['loss']
    check_keys(loss, LOSS_KEYS, 'loss')
    if 'aux_weight' in loss:
        loss['aux_weight'] = _number(float, 0.0)(loss['aux_weight'], 'loss.aux_weight')
    schedule = config['schedule']
    if (schedule['iterations'] is None) == (schedule['epochs'] is None):
        raise ConfigError('give exactly one of schedule.iterations and schedule.epochs '
                          f'(got iterations={schedule["iterations"]!r}, '
                          f'epochs={schedule["epochs"]!r})')
    train = config['train']
    if train['batch_size'] % train['accumulate']:
        raise ConfigError(f'train.batch_size ({train["batch_size"]}) must be a multiple of '
                          f'train.accumulate ({train["accumulate"]}): each of the '
                          'accumulated micro-batches has batch_size / accumulate images')
    if config['optimizer']['nesterov'] and config['optimizer']['name'] != 'sgd':
        raise ConfigError('optimizer.nesterov applies to sgd only')
