"""``seg-perception demo``: the bundled sample bag through the default model, on the CPU.

::

    seg-perception demo [--output DIR] [--model MODEL.onnx] [--backend onnxruntime-cpu]
                        [--ego-mask [CAMERA=]PATH ...] [--ego-polygon CAMERA=x1,y1,...]

Plays ``seg_perception/assets/sample_bag`` (two cameras of MIT-licensed road
frames and drivable-area ground truth for one of them; see
``assets/samples_LICENSES/SAMPLE_BAG.md``) through the same path as
``seg-perception bag-eval``: it writes the output bag (segmentation topics plus
the camera topics, ready for ``ros2 bag play`` or Foxglove) and the report to
DIR (default ``./seg_perception_demo``, replaced on every run; a folder holding
another bag's report is refused) and prints where they are. ``--ego-mask`` and
``--ego-polygon`` mark the ego vehicle as in bag-eval. The sample bag's CameraInfo is
uncalibrated (K all zero), so it gets no drivable grid; the report says so. Output that cannot be
written, a full disk or SIGINT/SIGTERM end it as they end bag-eval: one line, the
bag closed when it can be, the partial report written when it can be. It needs
only the runtime dependencies: no torch, no GPU.
"""
from __future__ import annotations

import argparse
import os

from seg_perception.commands import _args
from seg_perception.errors import CommandError
from seg_perception.model_info import resolve_model_path

SAMPLE_BAG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets',
                          'sample_bag')
GROUND_TRUTH_TOPIC = '/camera/dash/ground_truth/drivable_mask'
DEFAULT_OUTPUT = 'seg_perception_demo'


def sample_bag_path() -> str:
    """The sample bag folder shipped with the package (CommandError when missing)."""
    if not os.path.isfile(os.path.join(SAMPLE_BAG, 'metadata.yaml')):
        raise CommandError(f'the sample bag is missing from this install ({SAMPLE_BAG}); '
                           'reinstall seg_perception')
    return SAMPLE_BAG


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--output', default=DEFAULT_OUTPUT, metavar='DIR',
                        help=f'folder for the output bag and report (default ./{DEFAULT_OUTPUT})')
    _args.add_model_option(parser)
    _args.add_runtime_options(parser, backend='onnxruntime-cpu')
    from seg_perception.commands.bag_eval import add_ego_options
    add_ego_options(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    from seg_perception.commands.bag_eval import (evaluate_until_stopped, print_summary,
                                                  report_stopped)
    from seg_perception.replay.bag_eval import RunStopped
    model = resolve_model_path(args.model)
    bag = sample_bag_path()
    print(f'demo: {bag} through {model} ({args.backend})')
    try:
        summary = evaluate_until_stopped(
            bag, model, args.output, label_topics=[GROUND_TRUTH_TOPIC], label_kind='drivable',
            backend=args.backend, precision=args.precision, threads=args.threads,
            engine_cache_dir=args.engine_cache_dir, copy_inputs=True, overwrite=True,
            progress=not args.no_progress, ego_mask=args.ego_mask,
            ego_polygon=args.ego_polygon)
    except RunStopped as stopped:
        return report_stopped('demo', stopped)
    print_summary(summary)
    print(f'play it: ros2 bag play {summary["output_bag"]}  (or open the .mcap in Foxglove)')
    return 0
