"""A cache of built inference engines (TensorRT plans), free of TensorRT itself.

An engine is only valid for the exact ONNX file, precision, optimisation profiles,
TensorRT version, GPU (name and compute capability) and DLA core it was built
for. Those make up an ``EngineSpec``; the sha256 of its canonical JSON is the
cache key, and part of the key is in the file name::

    <cache_dir>/<model stem>.<precision>.<key[:16]>.engine       the plan
    <cache_dir>/<model stem>.<precision>.<key[:16]>.engine.json  sidecar: full key,
                                                                 spec, engine sha256
    <cache_dir>/<model stem>.<precision>.<key[:16]>.engine.lock  build lock

``get_or_build_engine`` returns a valid cached engine or builds one. An engine
is used only when its sidecar holds the same key and the file's sha256 matches,
and the injected ``load_fn`` (TensorRT deserialisation) accepts it; anything
else is reported and rebuilt. Files are written to a temporary name and renamed
(engine first, sidecar last), so a crash never leaves a half-written engine that
passes the checks. A build lock (trt/lock.py's BuildLock, an ``fcntl.flock``) keeps
two processes from building the same engine: the second waits (up to a timeout)
and then finds the first one's engine in the cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from seg_perception.choices import PRECISIONS
from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.files import write_bytes
from seg_perception.runtime.trt.lock import DEFAULT_LOCK_TIMEOUT_S, BuildLock

LOG = logging.getLogger(__name__)

SIDECAR_FORMAT = 'seg_perception/engine-cache-1'
Shape = Tuple[int, int, int]                    # (batch, height, width) of the uint8 frames
Profile = Tuple[Shape, Shape, Shape]            # (min, opt, max)


class EngineCacheError(SegPerceptionError, RuntimeError):
    """The engine cache cannot give an engine; the message says why and what to do."""


# -- shapes -------------------------------------------------------------------------

def parse_shape(text: str) -> Shape:
    """'1x720x1280' -> (1, 720, 1280)."""
    match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*', text)
    if not match:
        raise InvalidValueError(f'expected BATCHxHEIGHTxWIDTH such as 1x720x1280, got {text!r}')
    shape = tuple(int(v) for v in match.groups())
    if min(shape) < 1:
        raise InvalidValueError(f'shape {text!r} has a zero dimension')
    return shape  # type: ignore[return-value]


def parse_profile(text: str) -> Profile:
    """'1x720x1280' (fixed) or 'MIN/OPT/MAX' such as '1x480x640/1x720x1280/2x1080x1920'."""
    parts = text.split('/')
    if len(parts) == 1:
        shape = parse_shape(parts[0])
        return check_profile((shape, shape, shape))
    if len(parts) != 3:
        raise InvalidValueError(f'a shape profile is NxHxW or MIN/OPT/MAX, got {text!r}')
    return check_profile(tuple(parse_shape(p) for p in parts))  # type: ignore[arg-type]


def check_profile(profile: Sequence[Sequence[int]]) -> Profile:
    """Return the profile as tuples if min <= opt <= max in every dimension, else ValueError."""
    if len(profile) != 3 or any(len(s) != 3 for s in profile):
        raise InvalidValueError(f'a profile is (min, opt, max) of (batch, height, width), got '
                                f'{profile}')
    low, opt, high = (tuple(int(v) for v in s) for s in profile)
    if min(low) < 1:
        raise InvalidValueError(f'profile {format_profile((low, opt, high))}: dimensions must be '
                                f'>= 1')
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise InvalidValueError(f'profile {format_profile((low, opt, high))}: need min <= opt <= '
                                'max in batch, height and width')
    return (low, opt, high)  # type: ignore[return-value]


def format_profile(profile: Sequence[Sequence[int]]) -> str:
    """The inverse of parse_profile."""
    shapes = ['x'.join(str(v) for v in shape) for shape in profile]
    return shapes[0] if len(set(shapes)) == 1 else '/'.join(shapes)


def profile_for(profiles: Sequence[Profile], shape: Sequence[int]) -> Optional[int]:
    """Index of the first profile whose [min, max] range holds ``shape`` (N, H, W), or None."""
    for index, (low, _, high) in enumerate(profiles):
        if all(a <= v <= b for a, v, b in zip(low, shape, high)):
            return index
    return None


# -- keys ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineSpec:
    """Everything a built engine depends on; its ``key()`` names the engine in the cache."""

    onnx_sha256: str
    precision: str
    profiles: Tuple[Profile, ...]
    trt_version: str
    gpu_name: str
    compute_capability: str          # e.g. '8.7'
    dla_core: Optional[int] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d['profiles'] = [[list(s) for s in p] for p in self.profiles]
        return d

    def key(self) -> str:
        """sha256 of the canonical JSON of the spec."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(',', ':'))
        return hashlib.sha256(text.encode('utf-8')).hexdigest()


def make_spec(model_path: str, precision: str, profiles: Sequence[Sequence[Sequence[int]]],
              environment: Dict[str, Any], dla_core: Optional[int] = None) -> EngineSpec:
    """The EngineSpec of building ``model_path``; ``environment`` holds trt_version,
    gpu_name and compute_capability (tensorrt.device_environment())."""
    if precision not in PRECISIONS:
        raise InvalidValueError(f'unknown precision {precision!r}; choose one of '
                                f'{", ".join(PRECISIONS)}')
    if not profiles:
        raise InvalidValueError('at least one shape profile is needed')
    if dla_core is not None and (isinstance(dla_core, bool) or int(dla_core) < 0):
        raise InvalidValueError(f'dla_core must be a non-negative integer, got {dla_core!r}')
    missing = [k for k in ('trt_version', 'gpu_name', 'compute_capability')
               if not environment.get(k)]
    if missing:
        raise InvalidValueError(f'engine environment lacks {", ".join(missing)}')
    return EngineSpec(onnx_sha256=file_sha256(model_path), precision=precision,
                      profiles=tuple(check_profile(p) for p in profiles),
                      trt_version=str(environment['trt_version']),
                      gpu_name=str(environment['gpu_name']),
                      compute_capability=str(environment['compute_capability']),
                      dla_core=None if dla_core is None else int(dla_core))


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes; FileNotFoundError naming it if missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'file not found: {path}')
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EnginePaths:
    engine: str
    sidecar: str
    lock: str

    @classmethod
    def for_engine(cls, engine_path: str) -> 'EnginePaths':
        return cls(engine_path, engine_path + '.json', engine_path + '.lock')


def cache_paths(cache_dir: str, model_path: str, spec: EngineSpec) -> EnginePaths:
    """Where the engine of ``spec`` for ``model_path`` lives in ``cache_dir``."""
    stem = os.path.splitext(os.path.basename(model_path))[0]
    stem = re.sub(r'[^A-Za-z0-9_.-]', '_', stem) or 'model'
    return EnginePaths.for_engine(os.path.join(
        cache_dir, f'{stem}.{spec.precision}.{spec.key()[:16]}.engine'))


# -- files --------------------------------------------------------------------------

def atomic_write_json(path: str, value: dict) -> None:
    """Indented JSON written atomically and durably (files.write_bytes)."""
    write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + '\n').encode(),
                durable=True)


def read_sidecar(path: str) -> dict:
    """The sidecar JSON; EngineCacheError if missing or unreadable."""
    try:
        with open(path, encoding='utf-8') as stream:
            value = json.load(stream)
    except FileNotFoundError:
        raise EngineCacheError(f'no sidecar {path}') from None
    except (OSError, ValueError) as exc:
        raise EngineCacheError(f'sidecar {path} is unreadable: {exc}') from None
    if not isinstance(value, dict) or value.get('format') != SIDECAR_FORMAT:
        raise EngineCacheError(f'sidecar {path} is not a {SIDECAR_FORMAT} file')
    return value


def check_cached(paths: EnginePaths, spec: EngineSpec) -> Tuple[Optional[bytes], str]:
    """(engine bytes, '') if the cached engine belongs to ``spec`` and is intact, else
    (None, why not)."""
    if not os.path.isfile(paths.engine):
        return None, f'no engine at {paths.engine}'
    try:
        sidecar = read_sidecar(paths.sidecar)
    except EngineCacheError as exc:
        return None, str(exc)
    if sidecar.get('key') != spec.key():
        return None, (f'{paths.engine} was built for another configuration (key '
                      f'{str(sidecar.get("key"))[:16]}, wanted {spec.key()[:16]})')
    with open(paths.engine, 'rb') as stream:
        data = stream.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar.get('engine_sha256') or len(data) != sidecar.get('engine_bytes'):
        return None, f'{paths.engine} is corrupt (its sha256 does not match the sidecar)'
    return data, ''


# -- get or build -------------------------------------------------------------------

@dataclass
class CachedEngine:
    """What get_or_build_engine returns."""

    path: str
    spec: EngineSpec
    data: bytes
    built: bool                      # True: built now; False: found in the cache
    loaded: Any = None               # what load_fn returned (a deserialised engine)
    build_seconds: float = 0.0
    rebuilt_because: str = ''        # why a cached engine was not used
    notes: List[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.spec.key()


BuildFn = Callable[[str, EngineSpec], bytes]
LoadFn = Callable[[bytes, EngineSpec], Any]


def _try_load(load_fn: Optional[LoadFn], data: bytes, spec: EngineSpec, path: str):
    """(loaded object, '') or (None, why it failed)."""
    if load_fn is None:
        return None, ''
    try:
        loaded = load_fn(data, spec)
    except Exception as exc:  # noqa: BLE001 - deserialisers raise anything
        return None, f'{path} cannot be loaded: {exc}'
    if loaded is None:
        return None, f'{path} cannot be loaded (deserialisation returned nothing)'
    return loaded, ''


def get_or_build_engine(model_path: str, precision: str,
                        profiles: Sequence[Sequence[Sequence[int]]], cache_dir: Optional[str],
                        *, build_fn: BuildFn, environment: Dict[str, Any],
                        load_fn: Optional[LoadFn] = None, dla_core: Optional[int] = None,
                        engine_path: Optional[str] = None, force: bool = False,
                        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                        extra_sidecar: Optional[dict] = None) -> CachedEngine:
    """A valid engine for ``model_path`` from the cache, or one built now and cached.

    ``build_fn(model_path, spec) -> bytes`` builds the engine; ``load_fn(data, spec)``
    deserialises it (raising or returning None when it cannot: such an engine is
    reported and rebuilt); ``environment`` = trt_version, gpu_name, compute_capability.
    ``engine_path`` puts the engine at that path instead of in ``cache_dir``; ``force``
    rebuilds even a valid engine. Raises FileNotFoundError for a missing model,
    ValueError for bad arguments, LockTimeoutError when another build holds the lock
    too long, EngineCacheError when a fresh build is unusable.
    """
    spec = make_spec(model_path, precision, profiles, environment, dla_core)
    if engine_path is None:
        if not cache_dir:
            raise InvalidValueError('give a cache_dir or an engine_path')
        paths = cache_paths(cache_dir, model_path, spec)
    else:
        paths = EnginePaths.for_engine(os.path.abspath(engine_path))
    what = f'the {precision} engine of {model_path} ({paths.engine})'

    def cached():
        data, why = check_cached(paths, spec)
        if data is None:
            return None, why
        loaded, why = _try_load(load_fn, data, spec, paths.engine)
        if why:
            return None, why
        return CachedEngine(paths.engine, spec, data, built=False, loaded=loaded), ''

    if not force:
        hit, why = cached()          # the common case: no lock needed to read
        if hit is not None:
            return hit
    with BuildLock(paths.lock, lock_timeout, what) as lock:
        if not force:
            hit, why = cached()      # another process may have built it while we waited
            if hit is not None:
                if lock.contended:
                    hit.notes.append(f'waited {lock.waited_s:.1f} s for another build')
                return hit
        else:
            why = 'a rebuild was asked for'
        existed = os.path.exists(paths.engine)
        if existed:
            LOG.warning('rebuilding %s: %s', what, why)
        else:
            LOG.info('building %s (first use of this model/precision/shapes/GPU; this '
                     'can take minutes)', what)
        started = time.monotonic()
        data = build_fn(model_path, spec)
        seconds = time.monotonic() - started
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
            raise EngineCacheError(f'building {what} produced no engine')
        data = bytes(data)
        loaded, load_error = _try_load(load_fn, data, spec, 'the freshly built engine')
        if load_error:
            raise EngineCacheError(load_error)
        sidecar = {'format': SIDECAR_FORMAT, 'key': spec.key(), 'spec': spec.to_dict(),
                   'engine_sha256': hashlib.sha256(data).hexdigest(), 'engine_bytes': len(data),
                   'model': os.path.abspath(model_path), 'built_at': time.time(),
                   'build_seconds': round(seconds, 3)}
        sidecar.update(extra_sidecar or {})
        # Engine first, sidecar last: a crash in between leaves a mismatch, never a
        # sidecar vouching for a half-written engine.
        write_bytes(paths.engine, data, durable=True)    # the rename must not outrun the data
        atomic_write_json(paths.sidecar, sidecar)
    return CachedEngine(paths.engine, spec, data, built=True, loaded=loaded,
                        build_seconds=seconds,
                        rebuilt_because=why if existed else '')
