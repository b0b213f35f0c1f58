"""How a node parameter is described and checked: a table row per parameter, one
validation step, one-line errors naming the parameter. No rclpy; the node's own table is in
params.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from seg_perception.errors import InvalidValueError


class ParameterError(InvalidValueError):
    """A node parameter has a value the node cannot start with."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default (None: no default, any type), what it means, its limits."""

    name: str
    default: Any
    description: str
    choices: Tuple[str, ...] = ()
    min_value: Optional[float] = None

    def constraints(self) -> str:
        """Human-readable limits, for the ParameterDescriptor."""
        if self.choices:
            return 'one of: ' + ', '.join(self.choices)
        if self.min_value is not None:
            return f'>= {self.min_value:g}'
        return ''


def _check_value(spec: ParamSpec, value: Any) -> None:
    if spec.choices and value not in spec.choices:
        raise ParameterError(f'parameter {spec.name!r}: {value!r} is not one of '
                             f'{", ".join(spec.choices)}')
    if spec.min_value is not None and value < spec.min_value:
        raise ParameterError(f'parameter {spec.name!r}: {value!r} is below the minimum '
                             f'{spec.min_value:g}')


def expect_type(spec: ParamSpec, value: Any) -> Any:
    """Values of the default's type (an int is accepted for a float parameter)."""
    default = spec.default
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = 'list of strings' if isinstance(default, list) else type(default).__name__
        raise ParameterError(f'parameter {spec.name!r}: expected a {kind}, got {value!r}')
    return value


def checked_values(specs: Sequence[ParamSpec], values: Dict[str, Any]) -> Dict[str, Any]:
    """Each spec's value (its default when absent), type- and range-checked."""
    out = {}
    for spec in specs:
        value = expect_type(spec, values.get(spec.name, spec.default))
        if value is not None:
            _check_value(spec, value)
        out[spec.name] = value
    return out


def unknown_parameters(given: Sequence[str], declared: Sequence[str]) -> List[str]:
    """Names set from outside (YAML, command line) that the node does not know: typos."""
    known = set(declared) | {'use_sim_time', 'diagnostic_updater.period'}
    return sorted(n for n in given if n not in known and not n.startswith('qos_overrides.'))
