"""The bag-eval report: ``metrics.json``, ``report.md``, ``report.html`` and pictures.

``metrics.json`` is written once, by :func:`seg_perception.evaluation.tables.write_metrics`,
so it has the keys of ``seg-perception evaluate`` (mIoU, per-class IoU,
drivable-area IoU, confusion matrix...; null without ground truth) plus the bag's
numbers: ``cameras`` (per camera: topic, frames, skipped frames, recorded and
processing frame rate, latency per stage, metrics when labelled), ``latency_ms``
(all frames), ``realtime`` (could the node keep up?), ``ground_truth``,
``status`` ('complete' or 'partial'), ``error``, ``ground`` (the drivable grid and
ground points written, or why none: :mod:`.ground_replay`) and ``extra_outputs`` (the
model's masks and the probabilities asked for: topics, messages, the fraction of mask
pixels on; :mod:`.extra_outputs`).

Latency stages, in ms per frame: ``decode`` (deserialize + image decode),
``convert``, ``infer``, ``postprocess`` (the pipeline's stages), ``pipeline``
(its whole process() call), ``node`` (decode + pipeline: the node's work per
frame before it publishes), ``write`` (building the output messages and writing
them to the bag, compression included: a cost of bag-eval, not of the node) and
``end_to_end`` (decode + pipeline + write).

Real time: the node runs one inference worker, so it keeps up when the work per
second of recording, sum over cameras of (recorded frame rate × mean ``node``
time), stays below one second. The first frame of each camera (warm-up) is left
out of that mean. Otherwise the node drops frames: it always takes the newest.

Pictures: ``latency.png`` (``node`` latency over recording time, one line per
camera, the frame period dashed) drawn with matplotlib (Agg) or, without
matplotlib, with OpenCV; ``overlays/*.png`` (class overlay | drivable area, and
when the bag has the ground geometry | the fused bird's-eye grid after that frame).
``report.html`` embeds all of them as base64 PNG and needs no other file. Every
picture has a bounded size, whatever the frames: the plots a fixed one, an
overlay half the frame fitted into PANEL_BOX. A frame with an aspect ratio beyond
MAX_ASPECT:1 gets no overlay (it would be a sliver) but is evaluated like any
other; the report and ``overlays_left_out`` in metrics.json say which.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.evaluation.tables import write_metrics
from seg_perception.replay.bag_io import output_error, output_topic
from seg_perception.ros.outputs import COLOR, DRIVABLE, LABELS
from seg_perception.replay.report_pages import html_report, markdown_report

LOG = logging.getLogger(__name__)
STAGES = ('decode', 'convert', 'infer', 'postprocess', 'pipeline', 'node', 'write',
          'end_to_end')
LATENCY_PNG = 'latency.png'
OVERLAY_DIR = 'overlays'
OUTPUT_KINDS = (LABELS, DRIVABLE, COLOR)        # what bag-eval writes per frame
PANEL_BOX = (400, 400)      # W x H that each half of an overlay panel fits into
MAX_ASPECT = 20.0           # beyond this, a frame fitted into the box is a sliver: no overlay
_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]      # RGB, one per camera


def latency_summary(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """median, p95, max and mean of ``values`` (ms), rounded to 0.01; None when empty."""
    if len(values) == 0:
        return {'median': None, 'p95': None, 'max': None, 'mean': None, 'count': 0}
    data = np.asarray(values, np.float64)
    return {'median': round(float(np.median(data)), 3),
            'p95': round(float(np.percentile(data, 95)), 3),
            'max': round(float(data.max()), 3), 'mean': round(float(data.mean()), 3),
            'count': int(data.size)}


def frame_rate(stamps_ns: Sequence[int]) -> Optional[float]:
    """Frames per second of a stamp sequence; None with fewer than 2 distinct stamps."""
    unique = np.unique(np.asarray(stamps_ns, np.int64))
    if unique.size < 2:
        return None
    return float((unique.size - 1) / ((unique[-1] - unique[0]) / 1e9))


def _camera_summary(camera, extras) -> Dict:
    records = camera.records
    stamps = [r['stamp_ns'] for r in records]
    if not any(stamps):                     # drivers that leave stamps at zero
        stamps = [r['log_ns'] for r in records]
    recorded = frame_rate(stamps)
    warm = records[1:] if len(records) > 1 else records
    mean_ms = float(np.mean([r['node'] for r in warm])) if warm else None
    return {
        'topic': camera.topic, 'message_type': camera.msgtype, 'namespace': camera.namespace,
        'camera_info_topic': camera.info_topic,
        'output_topics': [output_topic(camera.namespace, kind) for kind in OUTPUT_KINDS] +
        extras.topics(camera.namespace),
        'frames': camera.frames, 'messages_in_bag': camera.expected, 'skipped': camera.skipped,
        'skip_reasons': list(camera.skip_reasons),
        'overlays_left_out': list(camera.overlay_notes),
        'recorded_fps': None if recorded is None else round(recorded, 3),
        'processing_fps': None if not mean_ms else round(1000.0 / mean_ms, 3),
        'mean_node_ms': None if mean_ms is None else round(mean_ms, 3),
        'latency_ms': {stage: latency_summary([r[stage] for r in records]) for stage in STAGES},
    }


def realtime(cameras: Dict[str, Dict]) -> Dict:
    """Could one worker keep up with the recording? (see the module doc)."""
    rated = {n: c for n, c in cameras.items() if c['recorded_fps'] and c['mean_node_ms']}
    if not rated:
        return {'keeps_up': None, 'utilisation': None, 'recorded_fps_total': None,
                'verdict': 'real time: unknown (too few frames to measure the recording rate)'}
    load = sum(c['recorded_fps'] * c['mean_node_ms'] / 1000.0 for c in rated.values())
    fps_total = sum(c['recorded_fps'] for c in rated.values())
    keeps_up = load <= 1.0
    if keeps_up:
        verdict = (f'real time: yes, processing needs {100 * load:.0f}% of the recording time '
                   f'({fps_total:.1f} frames/s recorded over {len(rated)} camera(s))')
    else:
        verdict = (f'real time: no, processing needs {100 * load:.0f}% of the recording time '
                   f'({fps_total:.1f} frames/s recorded over {len(rated)} camera(s)); the node '
                   f'would drop about {100 * (1 - 1 / load):.0f}% of the frames')
    return {'keeps_up': keeps_up, 'utilisation': round(load, 4),
            'recorded_fps_total': round(fps_total, 3), 'verdict': verdict}


def build_summary(run, *, model: str, bag: str, error, seconds: float) -> Dict:
    """The bag's numbers for metrics.json from a finished (or stopped) bag_eval._Run."""
    cameras = {c.name: _camera_summary(c, run.extras) for c in run.cameras}
    records = [r for c in run.cameras for r in c.records]
    stamps = sorted(r['stamp_ns'] for r in records)
    truth = None
    if run.scorer is not None:
        truth = dict(source=run.truth_source, kind=run.scorer.kind,
                     frames_scored=sum(run.scorer.frames.values()),
                     not_scored=run.scorer.not_scored(), **run.truth.finish())
    description = run.pipeline.describe()
    return {
        'num_images': sum(run.scorer.frames.values()) if run.scorer else 0,
        'model': model, 'dataset': f'bag:{os.path.basename(os.path.normpath(bag))}',
        'split': run.truth_source,
        'bag': os.path.abspath(bag), 'bag_format': run.source.description,
        'output_bag': str(run.out.path) if run.out else None,
        'output_dir': os.path.abspath(run.output_dir),
        'output_bag_closed': bool(run.out and run.out.closed_cleanly),
        'status': 'complete' if error is None else 'partial',
        'error': None if error is None else f'{type(error).__name__}: {error}',
        'frames': len(records),
        'unreadable_messages': dict(run.unreadable),
        'recording_s': round((stamps[-1] - stamps[0]) / 1e9, 3) if stamps else None,
        'processing_s': round(sum(r['node'] for r in records) / 1000.0, 3),
        'seconds': round(seconds, 3),
        'cameras': cameras,
        'latency_ms': {stage: latency_summary([r[stage] for r in records]) for stage in STAGES},
        'realtime': realtime(cameras),
        'ground_truth': truth,
        'inference': {k: description.get(k) for k in
                      ('name', 'device', 'precision', 'resize', 'output_resolution',
                       'drivable_ids') if k in description},
        'architecture': run.pipeline.info.architecture,
        'ground': run.ground.summary(run.cameras) if run.ground is not None else None,
        'extra_outputs': run.extras.summary({c.name: c.namespace for c in run.cameras}),
    }


# -- pictures ---------------------------------------------------------------------------------

def panel_size(height: int, width: int, box: Tuple[int, int] = PANEL_BOX) -> Tuple[int, int]:
    """(width, height) of one half of an overlay panel: the frame fitted into ``box``.

    The aspect ratio is kept, so a panel is never larger than ``box`` whatever the
    frame. InvalidValueError for a frame whose aspect ratio is beyond MAX_ASPECT:1,
    which would fit as a sliver too narrow to show anything.
    """
    if height < 1 or width < 1:
        raise InvalidValueError(f'a {width}x{height} frame (W x H) has no pixels to show')
    if max(height / width, width / height) > MAX_ASPECT:
        raise InvalidValueError(f'the frame is {width}x{height} (W x H), an aspect ratio '
                                f'beyond {MAX_ASPECT:g}:1')
    scale = min(box[0] / width, box[1] / height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def overlay_panel(rgb: np.ndarray, color: np.ndarray, drivable_mask: np.ndarray,
                  box: Tuple[int, int] = PANEL_BOX) -> np.ndarray:
    """RGB picture: the class overlay next to the image with the drivable area in green.

    Each half is the camera frame fitted into ``box`` (see panel_size); the tint is
    laid on at that size, so the work is bounded by the box, not by the frame.
    """
    size = panel_size(*drivable_mask.shape[:2], box=box)
    tinted = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA)
    area = cv2.resize(drivable_mask, size, interpolation=cv2.INTER_NEAREST) == 255
    tinted[area] = (0.5 * tinted[area] + 0.5 * np.array([0, 255, 0])).astype(np.uint8)
    classes = cv2.resize(np.ascontiguousarray(color), size, interpolation=cv2.INTER_AREA)
    gap = np.full((size[1], 4, 3), 255, np.uint8)
    return np.hstack([classes, gap, tinted])


def beside(panel: np.ndarray, birds_eye: np.ndarray) -> np.ndarray:
    """``panel`` with the bird's-eye picture on its right, scaled (cells kept sharp) to
    the panel's height and never wider than PANEL_BOX."""
    height = panel.shape[0]
    side = min(height, PANEL_BOX[0])
    scaled = cv2.resize(birds_eye, (side, side), interpolation=cv2.INTER_NEAREST)
    if side < height:
        scaled = np.vstack([scaled, np.full((height - side, side, 3), 255, np.uint8)])
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.hstack([panel, gap, scaled])


def plot_latency(cameras, path: str) -> Optional[str]:
    """Draw the ``node`` latency over recording time to ``path``; None when nothing to draw."""
    series = []
    starts = [r['stamp_ns'] for c in cameras for r in c.records]
    if not starts:
        return None
    origin = min(starts)
    for camera in cameras:
        if camera.records:
            times = [(r['stamp_ns'] - origin) / 1e9 for r in camera.records]
            rate = frame_rate([r['stamp_ns'] for r in camera.records])
            series.append((camera.name, times, [r['node'] for r in camera.records],
                           1000.0 / rate if rate else None))
    try:
        return _plot_matplotlib(series, path)
    except ImportError:
        LOG.info('matplotlib not installed: drawing the latency plot with OpenCV')
        return _plot_opencv(series, path)


def _plot_matplotlib(series, path: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(8, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for index, (name, times, values, period) in enumerate(series):
        colour = tuple(c / 255 for c in _COLOURS[index % len(_COLOURS)])
        axes.plot(times, values, marker='.', color=colour, label=f'{name} decode + pipeline')
        if period:
            axes.axhline(period, color=colour, linestyle='--', linewidth=1,
                         label=f'{name} frame period {period:.0f} ms')
    axes.set_xlabel('recording time (s)')
    axes.set_ylabel('latency (ms)')
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc='best')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _plot_opencv(series, path: str, size=(800, 360)) -> str:
    width, height = size
    left, right, top, bottom = 60, 20, 20, 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    t_max = max(max(t) for _, t, _, _ in series) or 1.0
    y_max = max(max(max(v), p or 0) for _, _, v, p in series) * 1.1 or 1.0

    def point(t, v):
        return (int(left + t / t_max * (width - left - right)),
                int(height - bottom - v / y_max * (height - top - bottom)))

    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for fraction in (0, 0.5, 1):
        x, y = point(0, y_max * fraction)
        cv2.putText(canvas, f'{y_max * fraction:.0f}', (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1)
    cv2.putText(canvas, 'latency (ms) over recording time (s)', (left, height - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for index, (name, times, values, period) in enumerate(series):
        colour = _COLOURS[index % len(_COLOURS)][::-1]          # BGR for OpenCV
        points = np.array([point(t, v) for t, v in zip(times, values)], np.int32)
        cv2.polylines(canvas, [points], False, colour, 2)
        if period:
            y = point(0, period)[1]
            for x in range(left, width - right, 12):
                cv2.line(canvas, (x, y), (min(x + 6, width - right), y), colour, 1)
        cv2.putText(canvas, name, (left + 8, top + 16 + 16 * index), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, colour, 1)
    if not cv2.imwrite(path, canvas):
        raise OSError(f'cannot write {path}')
    return path


# -- the files ---------------------------------------------------------------------------------

def write_report(output_dir: str, summary: Dict, cameras, overlays: List[tuple],
                 scorer=None, model_info=None) -> Dict:
    """Write metrics.json (+ metrics.md), the pictures, report.md and report.html.

    ``cameras``: cameras.Camera objects (their per-frame records); ``overlays``:
    (caption, RGB picture); ``scorer``: a ground_truth.Scorer when there was ground
    truth; ``model_info``: names the classes in metrics.json without one.
    Returns the metrics.json content; OutputError naming the file that cannot be
    written.
    """
    from seg_perception.evaluation.metrics import ConfusionMatrix
    if scorer is not None:
        from seg_perception.replay.ground_truth import metrics_of
        # per-camera metrics first: write_metrics writes metrics.json once, with them
        for name, metrics in metrics_of(scorer).items():
            summary['cameras'][name]['metrics'] = metrics
        matrix, space = scorer.total, scorer.space
    else:   # the same keys, with null metrics: there was nothing to compare against
        names = list(model_info.class_names) if model_info is not None else ['unknown']
        space = {'class_names': names,
                 'drivable_ids': list(model_info.drivable_ids) if model_info else []}
        matrix = ConfusionMatrix(len(names), None)
    try:
        result = write_metrics(output_dir, matrix, space, summary, plot=scorer is not None)
    except OSError as exc:
        raise output_error('write metrics.json and metrics.md in', output_dir, exc) from None
    pictures: Dict[str, str] = {}
    try:
        latency = plot_latency(cameras, os.path.join(output_dir, LATENCY_PNG))
        if latency:
            pictures['latency'] = latency
    except Exception as exc:  # noqa: BLE001 - a plot must not cost the report
        LOG.warning('latency plot skipped: %s', exc)
    overlay_paths = write_overlays(output_dir, overlays)
    confusion = os.path.join(output_dir, 'confusion_matrix.png')
    if scorer is not None and os.path.isfile(confusion):
        pictures['confusion'] = confusion
    _write(os.path.join(output_dir, 'report.md'),
           markdown_report(result, pictures, overlay_paths, output_dir))
    _write(os.path.join(output_dir, 'report.html'), html_report(result, pictures, overlay_paths))
    return result


def write_overlays(output_dir: str, overlays: List[tuple]) -> List[tuple]:
    """Write the (caption, RGB picture) overlays to ``overlays/``, replacing an earlier
    run's; (caption, path) of those written. One that cannot be written is left out
    of the report with a warning, like the latency plot."""
    folder = os.path.join(output_dir, OVERLAY_DIR)
    if os.path.isdir(folder):           # an earlier run of this bag (output_folder): replaced
        for name in os.listdir(folder):
            if name.endswith('.png'):
                os.remove(os.path.join(folder, name))
    written = []
    for caption, picture in overlays:
        path = os.path.join(folder, caption.replace(' ', '_') + '.png')
        try:
            os.makedirs(folder, exist_ok=True)
            if not cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
                raise OSError('OpenCV could not write it')
        except OSError as exc:
            LOG.warning('overlay %s left out of the report: cannot write it: %s', path, exc)
            continue
        written.append((caption, path))
    return written


def _write(path: str, text: str) -> None:
    from seg_perception.files import write_text
    try:
        write_text(path, text)
    except OSError as exc:
        raise output_error('write', path, exc) from None
