"""``seg-perception demo``: the bundled sample bag through the default model, on the CPU.

::

    seg-perception demo [--output DIR] [--model MODEL.onnx] [--backend onnxruntime-cpu]

Plays ``seg_perception/assets/sample_bag`` (two cameras of MIT-licensed road
frames and drivable-area ground truth for one of them; see
``assets/samples_LICENSES/SAMPLE_BAG.md``) through the same path as
``seg-perception bag-eval``: it writes the output bag (segmentation topics plus
the camera topics, ready for ``ros2 bag play`` or Foxglove) and the report to
DIR (default ``./seg_perception_demo``, replaced on every run; a folder holding
another bag's report is refused) and prints where they are. Output that cannot be
written, a full disk or SIGINT/SIGTERM end it as they end bag-eval: one line, the
bag closed when it can be, the partial report written when it can be. It needs
only the runtime dependencies: no torch, no GPU.
"""
from __future__ import annotations

import argparse
import os

from seg_perception.errors import CommandError

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
    parser.add_argument('--model', metavar='MODEL.onnx',
                        help='exported ONNX model (default: the model shipped with the package)')
    parser.add_argument('--backend', default='onnxruntime-cpu',
                        help='runtime backend (default onnxruntime-cpu)')
    parser.add_argument('--threads', type=int, help='CPU threads for inference')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def resolve_model(model) -> str:
    """``model`` or the installed default model; CommandError saying so when there is none."""
    if model:
        if not os.path.isfile(model):
            raise CommandError(f'model file not found: {model}')
        return model
    from seg_perception.model_info import default_model_path
    default = default_model_path()
    if default is None:
        raise CommandError('no default model is installed with this package yet '
                           '(seg_perception/assets/default_model.onnx); pass --model MODEL.onnx '
                           '(a model exported with `seg-perception export`)')
    return default


def run(args: argparse.Namespace) -> int:
    from seg_perception.commands.bag_eval import (evaluate_until_stopped, print_summary,
                                                  report_stopped)
    from seg_perception.replay.bag_eval import RunStopped
    model = resolve_model(args.model)
    bag = sample_bag_path()
    print(f'demo: {bag} through {model} ({args.backend})')
    try:
        summary = evaluate_until_stopped(
            bag, model, args.output, label_topics=[GROUND_TRUTH_TOPIC], label_kind='drivable',
            backend=args.backend, threads=args.threads, copy_inputs=True, overwrite=True,
            progress=not args.no_progress)
    except RunStopped as stopped:
        return report_stopped('demo', stopped)
    print_summary(summary)
    print(f'play it: ros2 bag play {summary["output_bag"]}  (or open the .mcap in Foxglove)')
    return 0
