"""``seg-perception bag-eval``: replay a recorded bag through the node's pipeline.

The work is done by :func:`seg_perception.replay.bag_eval.evaluate_bag`; this is its shell.
Several bags (several ``--bag``, a folder of bags, a glob) or ``--compare``, ``--ray``,
``--workers``, ``--resume`` make it a fleet run (:mod:`seg_perception.replay.fleet`):
each bag evaluated as one bag is, in parallel, and one aggregate report.
SIGINT and SIGTERM (Ctrl-C, ``kill``, systemd, launch) end a run as a partial one: the
output bag is closed, the partial report written, one line says so and the exit status
is 128 + the signal's number (130, 143). A fleet run stopped so keeps the bags it
finished, writes their aggregate as partial with the bags not run listed, and
``--resume`` runs the rest.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Dict

from seg_perception.commands import _args
from seg_perception.replay import ground_truth
from seg_perception.replay.bag_eval import RunStopped, evaluate_bag
from seg_perception.replay.bag_io import STORAGES
from seg_perception.replay.report_pages import not_scored_text
from seg_perception.signals import StopSignals


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception bag-eval``."""
    parser.add_argument('--bag', required=True, nargs='+', action='extend', metavar='PATH',
                        help='rosbag2 folder, .mcap or .db3 file, or ROS 1 .bag file; several '
                             'bags, a folder of bags or a glob make a fleet run')
    _args.add_model_option(parser)
    add_fleet_options(parser)
    parser.add_argument('--topics', nargs='+', metavar='TOPIC',
                        help='image topics to evaluate (default: every image topic)')
    parser.add_argument('--output', required=True, metavar='DIR',
                        help='folder for the output bag and the report')
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument('--labels', metavar='DIR', help='folder of ground-truth label PNGs')
    truth.add_argument('--label-topic', nargs='+', default=[], metavar='[CAMERA=]TOPIC',
                       help='topics in the bag holding mono8 ground-truth label images')
    parser.add_argument('--label-kind', choices=ground_truth.KINDS, default='auto',
                        help='classes: model class ids; drivable: 255 drivable, 0 not, other '
                             'values ignored; auto: drivable when the name says "drivable"')
    parser.add_argument('--labels-match', choices=ground_truth.MATCHES, default='stamp',
                        help='label files named by header stamp in ns, or by frame number')
    _args.add_runtime_options(parser)
    _args.add_drivable_option(parser)
    parser.add_argument('--storage', choices=STORAGES, default='mcap',
                        help='storage of the output bag (default mcap)')
    parser.add_argument('--copy-inputs', action='store_true',
                        help='also copy the camera topics and their camera_info to the output')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an output bag left by an earlier run')
    parser.add_argument('--overlays', type=int, default=3, metavar='N',
                        help='overlay images per camera in the report (default 3)')
    add_ego_options(parser)
    parser.add_argument('--ground-points', action='store_true',
                        help='also write <camera>/segmentation/ground_points (PointCloud2) for '
                             'cameras with a calibrated CameraInfo and tf')
    parser.add_argument('--probabilities', nargs='+', default=[], metavar='CLASS',
                        help='also write <camera>/segmentation/probability/<class> (mono8, '
                             'p × 255) for these classes of a model with a probability '
                             'output (names, space- or comma-separated); its masks are '
                             'always written')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def add_fleet_options(parser: argparse.ArgumentParser) -> None:
    """Options of a run over many bags (seg_perception.replay.fleet)."""
    parser.add_argument('--compare', metavar='MODEL_B', help='a second model: both run on every '
                        'bag; the report gives the deltas B - A')
    parser.add_argument('--workers', type=int, metavar='N',
                        help='local worker processes (default: by CPUs and memory)')
    parser.add_argument('--ray', action='store_true',
                        help="run the bags as Ray tasks (the 'fleet' extra)")
    parser.add_argument('--ray-address', metavar='ADDRESS',
                        help='the Ray cluster to run on (implies --ray)')
    parser.add_argument('--resume', action='store_true',
                        help='keep the bags an earlier run into --output finished; run the '
                             'missing and failed ones')


def is_fleet(args: argparse.Namespace) -> bool:
    """Many bags, or an option only a fleet run has."""
    from seg_perception.replay.fleet import is_bag
    return bool(len(args.bag) > 1 or args.compare or args.workers is not None or args.ray or
                args.ray_address or args.resume or
                (os.path.isdir(args.bag[0]) and not is_bag(args.bag[0])) or
                any(c in args.bag[0] for c in '*?['))


def add_ego_options(parser: argparse.ArgumentParser) -> None:
    """--ego-mask and --ego-polygon, shared with ``seg-perception demo``."""
    parser.add_argument('--ego-mask', action='append', default=[], metavar='[CAMERA=]PATH',
                        help='ego-vehicle mask image (non-zero = ego, any resolution) for one '
                             'camera, or for every camera without CAMERA=; repeatable')
    parser.add_argument('--ego-polygon', action='append', default=[],
                        metavar='CAMERA=x1,y1,x2,y2,...',
                        help='ego-vehicle polygon of one camera in normalised image '
                             'coordinates (0..1); repeatable')


def run(args: argparse.Namespace) -> int:
    """Replay the bag, write the output bag and the report, print a summary."""
    if is_fleet(args):
        return run_fleet(args)
    try:
        summary = evaluate_until_stopped(args.bag[0], args.model, args.output,
                                         progress=not args.no_progress, **bag_options(args))
    except RunStopped as stopped:
        return report_stopped('bag-eval', stopped)
    print_summary(summary)
    return 0


def bag_options(args: argparse.Namespace) -> Dict:
    """evaluate_bag's keywords for every bag, from the options."""
    return dict(
        topics=args.topics, labels_dir=args.labels, label_topics=args.label_topic,
        label_kind=args.label_kind, labels_match=args.labels_match, backend=args.backend,
        precision=args.precision, threads=args.threads,
        drivable_classes=_args.drivable_classes(args.drivable_classes), storage=args.storage,
        copy_inputs=args.copy_inputs, overwrite=args.overwrite, overlays=args.overlays,
        engine_cache_dir=args.engine_cache_dir, ego_mask=args.ego_mask,
        ego_polygon=args.ego_polygon, ground_points=args.ground_points,
        probabilities=args.probabilities)


def run_fleet(args: argparse.Namespace) -> int:
    """Every bag with one or two models, then the aggregate report; exit status 1 when a
    bag failed."""
    from seg_perception.replay.fleet import run_fleet as fleet
    models = [args.model] + ([args.compare] if args.compare else [])
    try:
        with StopSignals(second_interrupts=True) as stop:
            summary = fleet(args.bag, models, args.output, options=bag_options(args),
                            workers=args.workers, ray=args.ray, ray_address=args.ray_address,
                            resume=args.resume, progress=not args.no_progress, stop=stop)
    except RunStopped as stopped:
        return report_stopped('bag-eval', stopped)
    print_fleet_summary(summary)
    return 1 if summary['bags_failed'] else 0


def print_fleet_summary(summary: Dict) -> None:
    """The bags done and failed, pooled accuracy and real time per model, where the files are."""
    resumed = f' ({len(summary["resumed"])} kept from an earlier run)' if summary['resumed'] \
        else ''
    print(f'{summary["bags_ok"]} of {summary["bags_total"]} bags evaluated{resumed}')
    for failed in summary['failed']:
        print(f'failed: {failed["name"]} ({failed["bag"]}): {failed["reason"]}')
    for model, pooled in zip(summary['models'], summary['per_model']):
        metrics = pooled['metrics'] or {}
        accuracy = (f', mIoU {100 * metrics["miou"]:.2f}%' if metrics.get('miou') is not None
                    else '')
        left_out = not_scored_text(metrics)
        if accuracy and left_out:
            accuracy += f' (not scored: {left_out})'
        print(f'{model}: {pooled["frames"]} frames{accuracy}{_ran(pooled["inference"])}')
        for name, camera in pooled['cameras'].items():
            print(f'  {name}: real time {camera["verdict"]}')
    comparison = summary.get('comparison')
    if comparison and comparison['same_run']:
        print('B - A: both ran the same file at the same precision (see the warning above)')
    if comparison and comparison['label_disagreement'] is not None:
        print(f'B - A: labels differ on {100 * comparison["label_disagreement"]:.3f}% of the '
              f'pixels; most on {", ".join(comparison["most_different"]) or "none"}')
    print(f'report: {os.path.join(summary["output_dir"], "report.html")} (and report.md, '
          'metrics.json)')


def _ran(inference) -> str:
    """', ran FILE on BACKEND PRECISION': what really ran a model (precision auto may run
    the INT8 file beside it)."""
    if not inference:
        return ''
    return (f', ran {os.path.basename(inference["file"])} on {inference["backend"]} '
            f'{inference["precision"]}')


def evaluate_until_stopped(*args, **kwargs) -> Dict:
    """evaluate_bag, with SIGINT and SIGTERM ending it as a partial run (RunStopped)."""
    with StopSignals(second_interrupts=True) as stop:
        return evaluate_bag(*args, stop=stop, **kwargs)


def report_stopped(command: str, stopped: RunStopped) -> int:
    """One line on stderr for a run ended by a signal; the shell's exit status, 128 + N."""
    print(f'seg-perception {command}: {stopped}', file=sys.stderr)
    return 128 + int(signal.Signals[stopped.signal_name])


def print_summary(summary: Dict) -> None:
    """A few lines on stdout: frames per camera, real time, metrics, where the files are."""
    for name, camera in summary['cameras'].items():
        latency = camera['latency_ms'].get('node') or {}
        skipped = f' ({camera["skipped"]} skipped)' if camera['skipped'] else ''
        print(f'{name}: {camera["frames"]} frames from {camera["topic"]}{skipped}, decode + '
              f'pipeline median {_fmt(latency.get("median"))} ms, p95 '
              f'{_fmt(latency.get("p95"))} ms')
    unreadable = summary.get('unreadable_messages') or {}
    if unreadable:
        print('messages that do not deserialize, skipped: ' +
              ', '.join(f'{topic} {count}' for topic, count in sorted(unreadable.items())))
    print(summary['realtime']['verdict'])
    if summary.get('ground_truth'):
        def pct(value):
            return 'n/a' if value is None else f'{100 * value:.2f}%'
        left_out = not_scored_text(summary['ground_truth'])
        print(f'ground truth ({summary["ground_truth"]["kind"]}): {summary["num_images"]} frames, '
              f'mIoU {pct(summary["miou"])}, drivable IoU {pct(summary["drivable_iou"])}'
              + (f'; not scored: {left_out}' if left_out else ''))
    print(f'output bag: {summary["output_bag"]}')
    print(f'report: {os.path.join(summary["output_dir"], "report.html")} (and report.md, '
          'metrics.json)')


def _fmt(value) -> str:
    return 'n/a' if value is None else f'{value:.1f}'
