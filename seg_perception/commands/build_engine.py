"""``seg-perception build-engine``: build (or find in the cache) a TensorRT engine.

The command-line shell over :mod:`seg_perception.runtime.trt.engine`; see there for the
cache, the key and how engines are built. While TensorRT builds, its phases and steps are
logged with the time elapsed (runtime/trt/progress.py) instead of a silent wait.
"""
from __future__ import annotations

import argparse

from seg_perception.choices import PRECISIONS
from seg_perception.errors import InvalidValueError
from seg_perception.runtime.trt import cache as engine_cache
from seg_perception.runtime.trt.lock import LockTimeoutError
from seg_perception.runtime.trt.cache import Profile, format_profile, parse_profile
from seg_perception.runtime.trt.engine import (CACHE_ENV, DEFAULT_PROFILE, DEFAULT_WORKSPACE_MB,
                                               EngineBuildError, TensorRTUnavailable, ensure_engine,
                                               resolve_precision)


def _profile_arg(text: str) -> Profile:
    try:
        return parse_profile(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception build-engine``."""
    parser.add_argument('--model', required=True, help='ONNX model from seg-perception export '
                        '(or quantize --target tensorrt for int8)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp16',
                        help='fp32, fp16 (default) or int8 (needs a QDQ model)')
    parser.add_argument('--shapes', nargs='+', type=_profile_arg, metavar='PROFILE',
                        help='one optimisation profile per camera resolution / batch range: '
                             'NxHxW (fixed) or MIN/OPT/MAX, e.g. 1x720x1280 '
                             '1x1080x1920/2x1080x1920/4x1080x1920 '
                             f'(default {format_profile(DEFAULT_PROFILE)})')
    parser.add_argument('--dla-core', type=int, metavar='N',
                        help='build for DLA core N (Jetson), GPU fallback for the rest')
    parser.add_argument('--workspace', type=int, default=DEFAULT_WORKSPACE_MB, metavar='MB',
                        help=f'builder workspace limit (default {DEFAULT_WORKSPACE_MB} MB)')
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--output', metavar='PATH',
                       help='write the engine here (plus PATH.json) instead of the cache')
    where.add_argument('--cache-dir', metavar='DIR',
                       help=f'engine cache the node reads (default ${CACHE_ENV} or '
                            '~/.cache/seg_perception/engines)')
    parser.add_argument('--timing-cache', metavar='PATH',
                        help='timing cache file (default: in the cache dir, per GPU and TensorRT)')
    parser.add_argument('--force', action='store_true',
                        help='rebuild even if a valid engine exists')
    parser.add_argument('--lock-timeout', type=float, default=engine_cache.DEFAULT_LOCK_TIMEOUT_S,
                        metavar='S', help='seconds to wait for another build of the same engine')


def run(args: argparse.Namespace) -> int:
    """Build (or find) the engine; print its path and a summary."""
    from seg_perception.errors import CommandError
    from seg_perception.model_info import load_model_info
    info = load_model_info(args.model)       # missing file / foreign model: clear errors
    if args.workspace < 1:
        raise InvalidValueError(f'--workspace must be at least 1 MB, got {args.workspace}')
    if args.dla_core is not None and args.dla_core < 0:
        raise InvalidValueError(f'--dla-core must be >= 0, got {args.dla_core}')
    precision = resolve_precision(args.model, args.precision, strict=True)
    try:
        cached = ensure_engine(args.model, precision, args.shapes, args.cache_dir,
                               dla_core=args.dla_core, workspace_mb=args.workspace,
                               timing_cache=args.timing_cache, engine_path=args.output,
                               force=args.force, lock_timeout=args.lock_timeout)
    except (TensorRTUnavailable, EngineBuildError, engine_cache.EngineCacheError,
            LockTimeoutError) as exc:
        raise CommandError(str(exc)) from None
    spec = cached.spec
    print(cached.path)
    print(f'  model          {args.model} ({info.summary()})')
    on_dla = f' on DLA core {spec.dla_core}' if spec.dla_core is not None else ''
    print(f'  precision      {spec.precision}{on_dla}')
    print(f'  profiles       {", ".join(format_profile(p) for p in spec.profiles)} (NxHxW)')
    print(f'  device         {spec.gpu_name} (compute capability {spec.compute_capability}), '
          f'TensorRT {spec.trt_version}')
    print(f'  key            {cached.key[:16]}')
    state = (f'built in {cached.build_seconds:.1f} s' if cached.built
             else 'up to date (found in the cache)')
    if cached.rebuilt_because:
        state += f'; replaced an unusable engine: {cached.rebuilt_because}'
    print(f'  engine         {len(cached.data) / 1e6:.1f} MB, {state}')
    return 0
