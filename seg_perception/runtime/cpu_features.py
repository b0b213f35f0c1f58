"""Whether this CPU has int8 dot-product instructions, which make INT8 models pay off.

ONNX Runtime's integer convolutions use VNNI (``vpdpbusd``) where the CPU has it; without it
they emulate the dot product with several instructions and an INT8 model gains little or
nothing over fp32. Linux says which instructions a CPU has in the ``flags`` line of
/proc/cpuinfo; elsewhere (or where it cannot be read) the answer is "none", so the safe fp32
runs.
"""
from __future__ import annotations

import functools
import platform
from typing import FrozenSet, Iterable, Optional, Tuple

CPUINFO = '/proc/cpuinfo'
# /proc/cpuinfo flag -> the name the logs use, best first.
INT8_DOT_PRODUCT = (('avx512_vnni', 'AVX512-VNNI'), ('avx_vnni', 'AVX-VNNI'))


def _first_value(keys: Tuple[str, ...], path: str) -> Optional[str]:
    """The value of the first line of ``path`` whose key is one of ``keys``."""
    try:
        with open(path) as stream:
            for line in stream:
                key, _, value = line.partition(':')
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = CPUINFO) -> FrozenSet[str]:
    """The instruction-set flags of the first CPU in ``path`` (x86 'flags', Arm
    'Features'); empty where unreadable."""
    return frozenset((_first_value(('flags', 'Features'), path) or '').split())


def cpu_model_name(path: str = CPUINFO) -> str:
    """The CPU's model name, for benchmark results ('' where not known)."""
    return _first_value(('model name',), path) or ''


def cpu_description(path: str = CPUINFO) -> str:
    """This CPU in words, for a benchmark's machine line: its model name where Linux says
    it, else what the platform module knows."""
    return cpu_model_name(path) or platform.processor() or platform.machine() or 'unknown CPU'


def int8_dot_product(flags: Optional[Iterable[str]] = None) -> Optional[str]:
    """'AVX512-VNNI' or 'AVX-VNNI' where the CPU (``flags``; default: this one's) has it,
    else None."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    for flag, name in INT8_DOT_PRODUCT:
        if flag in flags:
            return name
    return None
