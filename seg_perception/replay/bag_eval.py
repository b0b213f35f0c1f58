"""``seg-perception bag-eval``: run a recorded bag through the node's pipeline.

::

    seg-perception bag-eval --bag PATH [--model MODEL.onnx] [--topics T ...] --output DIR
                            [--labels DIR [--labels-match stamp|name] | --label-topic [CAM=]T ...]
                            [--label-kind auto|classes|drivable] [--backend auto]
                            [--storage mcap|sqlite3] [--copy-inputs] [--overwrite]
                            [--ego-mask [CAMERA=]PATH ...] [--ego-polygon CAMERA=x1,y1,...]
                            [--ground-points] [--probabilities CLASS ...]

Every image message (sensor_msgs/Image or CompressedImage) of the chosen topics
(default: all image topics, except ground truth and earlier segmentation
outputs, i.e. topics with a ``ground_truth`` or ``segmentation`` token) is
decoded with :mod:`seg_perception.ros.conversions` and segmented one frame at a
time by :class:`~seg_perception.runtime.pipeline.SegmentationPipeline`, set up
as the node sets it up (camera-resolution outputs, the model's drivable classes
unless ``--drivable-classes``). The results go to ``DIR/<bag>_segmentation/``, a
rosbag2 holding per camera ``/<camera>/segmentation/labels`` (mono8 class ids),
``.../drivable_mask`` (mono8, 255 = drivable) and ``.../color`` (rgb8 overlay),
each with the input frame's header and log time, so ``ros2 bag play`` and
Foxglove show them next to the camera (``--copy-inputs`` also copies the camera
topics and their ``camera_info`` into it). A model's extra masks, and the probabilities
of the classes given to ``--probabilities``, go there too (:mod:`.extra_outputs`).
Camera names: see :mod:`bag_io`.

Ego-vehicle masks (``ego_masks``: camera name -> EgoMask, see :mod:`.ego_specs`): ego
pixels are labelled ``labels.EGO_ID`` and never drivable in the output bag. Ground truth
keeps its own labels: an ego pixel is scored like any other (one the truth calls
drivable is a miss). With a calibrated CameraInfo per camera and the bag's tf, the
fused drivable grid (and with ``ground_points`` the ground points) go into the output
bag too: see :mod:`.ground_replay`; metrics.json's ``ground`` says what was written or
why nothing was.

The report (:mod:`seg_perception.replay.report`) goes to DIR: ``report.md``,
``report.html``, ``metrics.json`` (the format of ``seg-perception evaluate``
plus the bag's numbers) and, with ground truth (:mod:`.ground_truth`),
``metrics.md`` and ``confusion_matrix.png``. Output is written frame by frame:
when the bag turns out truncated or damaged, a label does not fit, the output
cannot be written (no permission, a full disk: OutputError naming the path) or
the run is stopped (SIGINT, SIGTERM: the ``stop`` argument), the frames before
the problem keep their output, the output bag is closed (metadata.yaml written)
if it can be, the report is written as partial if it can be, and the error names
the problem and what was kept. A bag so damaged that nothing in it can be read is
reported as damaged. A message that does not deserialize is skipped and counted
(``unreadable_messages`` in metrics.json; a camera frame also counts as skipped),
like a frame that does not decode. One run at a time per output folder, one bag
per folder: see :mod:`.output_folder`.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.model_info import resolve_model_path
from seg_perception.replay import ground_truth as bag_labels
from seg_perception.replay.bag_io import (CAMERA_INFO, IMAGE_TYPES, BagError, OutputBag,
                                          OutputError, camera_namespace, convert_message,
                                          header_for_output, open_bag, output_topic, stamp_ns)
from seg_perception.replay.cameras import Camera, camera_topics, plan_cameras
from seg_perception.replay.ego_specs import ego_masks as parse_ego_masks
from seg_perception.replay.extra_outputs import ExtraOutputs, chosen_probabilities
from seg_perception.replay.ground_replay import GroundReplay, read_transforms, tf_topics
from seg_perception.replay.output_folder import claimed

LOG = logging.getLogger(__name__)


# -- the run ------------------------------------------------------------------------------------

class RunStopped(SegPerceptionError):
    """A stop request (SIGINT, SIGTERM: see ``stop`` of evaluate_bag) ended the run early."""

    def __init__(self, signal_name: str):
        super().__init__(f'stopped by {signal_name}')
        self.signal_name = signal_name


def evaluate_bag(bag: str, model: Optional[str], output_dir: str, *,
                 topics: Optional[Sequence[str]] = None, labels_dir: Optional[str] = None,
                 label_topics: Sequence[str] = (), label_kind: str = 'auto',
                 labels_match: str = 'stamp', backend: str = 'auto', precision: str = 'fp32',
                 threads: Optional[int] = None, drivable_classes=None, storage: str = 'mcap',
                 copy_inputs: bool = False, overwrite: bool = False, overlays: int = 3,
                 progress: bool = True, engine_cache_dir: Optional[str] = None,
                 ego_mask: Sequence[str] = (), ego_polygon: Sequence[str] = (),
                 ground_points: bool = False, probabilities: Sequence[str] = (),
                 stop: Optional[Callable[[], Optional[str]]] = None, pipeline=None,
                 records: Optional[Dict[str, List[Dict]]] = None) -> Dict:
    """Evaluate ``bag``; write the output bag and the report to ``output_dir``.

    Returns the metrics.json content. When the bag turns out damaged, a label does
    not fit, the output cannot be written (OutputError) or ``stop`` returns a
    signal name (checked between messages; RunStopped), the output bag is closed
    if it can be, the partial report written if it can be, and the error raised
    with what was kept added to its message. The folder is held for the run and
    is for one bag (:mod:`.output_folder`). ``ego_mask``, ``ego_polygon``: the
    ``--ego-mask`` and ``--ego-polygon`` specs (:mod:`.ego_specs`); ``ground_points``:
    also write each camera's ground points; ``probabilities``: the classes whose
    probability images to write (:mod:`.extra_outputs`; the model's masks always are).
    ``pipeline``: a SegmentationPipeline of ``model`` built by the caller, set up as
    :func:`make_pipeline` sets it up (a fleet worker evaluates many bags with one);
    ``records``: filled with each camera's per-frame latency records (camera name ->
    list), also when the run ends early.
    """
    started = time.monotonic()
    if labels_dir and label_topics:
        raise InvalidValueError('give either --labels or --label-topic, not both')
    model = resolve_model_path(model)
    with open_bag(bag) as source:
        label_names = [spec.rpartition('=')[2] for spec in label_topics]
        cameras = plan_cameras(source, topics, label_names, overlays)
        egos = parse_ego_masks(ego_mask, ego_polygon, cameras)
        if pipeline is None:
            pipeline = make_pipeline(model, backend=backend, precision=precision,
                                     drivable_classes=drivable_classes, threads=threads,
                                     engine_cache_dir=engine_cache_dir)
        run = _Run(source, cameras, pipeline, output_dir, copy_inputs)
        run.egos = egos
        run.extras = ExtraOutputs(pipeline.info.masks,
                                  chosen_probabilities(pipeline.info, probabilities))
        found = tf_topics(source)
        run.ground = GroundReplay(read_transforms(source, found), found, ground_points)
        run.setup_truth(labels_dir, label_topics, label_kind, labels_match)
        with claimed(output_dir, bag):
            stem = os.path.splitext(os.path.basename(os.path.normpath(bag)))[0]
            run.out = OutputBag(os.path.join(output_dir, f'{stem}_segmentation'), storage,
                                overwrite=overwrite)
            error: Optional[BaseException] = None
            try:
                run.play(progress, stop)
            except BaseException as exc:  # noqa: BLE001 - keep the partial output, then re-raise
                error = exc
            closing = run.close_output()
            summary, report_problem = run.finish(model, bag, started, error or closing)
            if records is not None:
                records.update({c.name: c.records for c in run.cameras})
    ending = _ending(error, closing, report_problem, summary, output_dir)
    if ending is not None:
        raise ending
    return summary


def make_pipeline(model: str, *, backend: str = 'auto', precision: str = 'fp32',
                  drivable_classes=None, threads: Optional[int] = None,
                  engine_cache_dir: Optional[str] = None):
    """The SegmentationPipeline bag-eval runs ``model`` with: camera-resolution outputs
    and the colour overlay, as the node publishes them."""
    from seg_perception.runtime.pipeline import SegmentationPipeline
    return SegmentationPipeline(resolve_model_path(model), backend=backend,
                                precision=precision, output_resolution='camera',
                                want_color=True, drivable_classes=drivable_classes,
                                threads=threads, engine_cache_dir=engine_cache_dir)


def _ending(error: Optional[BaseException], closing: Optional[OutputError],
            report_problem: Optional[OutputError], summary: Dict,
            output_dir: str) -> Optional[BaseException]:
    """The exception that ends a run which did not go through: the first problem, with
    what was kept (frames, the bag closed or not, the report) added to its message."""
    first = error or closing or report_problem
    if first is None:
        return None
    if not isinstance(first, (SegPerceptionError, OSError)):
        if report_problem is not None:          # a bug: keep its traceback, say the rest
            LOG.warning('%s', report_problem)
        return first
    kept = [f'partial output: {summary["frames"]} frames in {summary["output_bag"]}']
    if first is report_problem:
        kept = [f'the output bag {summary["output_bag"]} holds all {summary["frames"]} frames']
    elif closing is not None and first is not closing:
        kept.append(str(closing))
    if first is not report_problem:
        kept.append(f'report not written: {report_problem}' if report_problem
                    else f'report in {output_dir}')
    text = f'{first} ({"; ".join(kept)})'
    if isinstance(first, SegPerceptionError):
        first.args = (text,)
        return first
    ending = OutputError(text)           # an OSError no writer named: still one line
    ending.errno = first.errno
    return ending


class _Run:
    """State of one bag-eval run: the reader, the pipeline, the writer, the counts."""

    def __init__(self, source, cameras: List[Camera], pipeline, output_dir: str,
                 copy_inputs: bool):
        self.source, self.cameras, self.pipeline = source, cameras, pipeline
        self.output_dir, self.copy_inputs = output_dir, copy_inputs
        self.by_topic = {c.topic: c for c in cameras}
        self.info_topics = {c.info_topic: c for c in cameras if c.info_topic}
        self.out: Optional[OutputBag] = None
        self.scorer = self.truth = None
        self.truth_source = None
        self.overlays: List[tuple] = []
        self.unreadable: Dict[str, int] = {}        # topic -> messages that did not deserialize
        self.egos: Dict[str, object] = {}           # camera name -> EgoMask
        self.ground: Optional[GroundReplay] = None
        self.extras = ExtraOutputs((), ())          # the model's masks, chosen probabilities

    def setup_truth(self, labels_dir, label_topics, label_kind, labels_match) -> None:
        if not labels_dir and not label_topics:
            return
        names = {c.namespace: c.name for c in self.cameras}
        if labels_dir:
            kind = bag_labels.resolve_kind(label_kind, os.path.basename(
                os.path.normpath(labels_dir)))
            self.truth = bag_labels.FolderLabels(labels_dir, labels_match, list(names.values()))
            self.truth_source = f'folder {labels_dir} (matched by {labels_match})'
        else:
            label_names = [spec.rpartition('=')[2] for spec in label_topics]
            others = {camera_namespace(t) for t in camera_topics(self.source, label_names)}
            others -= set(names)
            self.truth = bag_labels.TopicLabels(label_topics, list(self.source.topics), names,
                                                sorted(others))
            kind = bag_labels.resolve_kind(label_kind, ' '.join(self.truth.topic_camera))
            self.truth_source = 'topics ' + ', '.join(
                f'{t} -> {c}' for t, c in self.truth.topic_camera.items())
        self.scorer = bag_labels.Scorer(kind, self.pipeline.info)
        LOG.info('ground truth: %s, %s labels', self.truth_source, kind)

    def topics_to_read(self) -> List[str]:
        topics = list(self.by_topic)
        if isinstance(self.truth, bag_labels.TopicLabels):
            topics += list(self.truth.topic_camera)
        if self.copy_inputs or self.ground is not None:
            topics += list(self.info_topics)
        return topics

    def play(self, progress: bool, stop: Optional[Callable[[], Optional[str]]] = None) -> None:
        """Every message of the chosen topics, in log-time order; RunStopped when ``stop``
        names a signal (between two messages, so the output bag stays consistent)."""
        from tqdm import tqdm
        topics = self.topics_to_read()
        total = sum(self.source.topics[t].count for t in topics)
        with tqdm(total=total, unit='msg', disable=not progress, file=sys.stderr,
                  desc=os.path.basename(os.path.normpath(str(self.source.path)))) as bar:
            for topic, msgtype, log_time, raw in self.source.messages(topics):
                bar.update(1)
                signal_name = stop() if stop is not None else None
                if signal_name:
                    raise RunStopped(signal_name)
                received = time.perf_counter()          # the decode stage starts here
                try:
                    msg = self.source.deserialize(raw, msgtype)
                except BagError as exc:
                    self.skip_unreadable(topic, exc)
                    continue
                if topic in self.by_topic:
                    self.frame(self.by_topic[topic], msgtype, log_time, msg, received)
                elif topic in self.info_topics:
                    self.camera_info(self.info_topics[topic], msg, log_time)
                else:
                    self.label(topic, msgtype, msg)

    def camera_info(self, camera: Camera, msg, log_time: int) -> None:
        if self.ground is not None:
            self.ground.camera_info(camera, msg)
        if self.copy_inputs:
            self.out.write('/' + camera.info_topic.strip('/'),
                           convert_message(msg, CAMERA_INFO, self.out.typestore), log_time)

    def skip_unreadable(self, topic: str, error: BagError) -> None:
        """One message that does not deserialize: counted and skipped, the run goes on."""
        self.unreadable[topic] = self.unreadable.get(topic, 0) + 1
        camera = self.by_topic.get(topic)
        if camera is not None:
            self._skip(camera, camera.frames + camera.skipped, error)
        else:
            LOG.warning('%s: message skipped: %s', topic, error)

    @staticmethod
    def _skip(camera: Camera, index: int, error: Exception) -> None:
        camera.skipped += 1
        if len(camera.skip_reasons) < 5:
            camera.skip_reasons.append(f'frame {index}: {error}')
        LOG.warning('%s frame %d skipped: %s', camera.topic, index, error)

    def label(self, topic: str, msgtype: str, msg) -> None:
        from seg_perception.ros.conversions import ConversionError, decode
        where = f'label topic {topic} at stamp {stamp_ns(msg.header)}'
        if msgtype not in IMAGE_TYPES:
            raise BagError(f'{where}: holds {msgtype}, not an image')
        try:
            label = bag_labels.label_pixels(decode(msg, use_cv_bridge=False), where)
        except ConversionError as exc:
            raise BagError(f'{where}: {exc}') from None
        self.truth.add_label(self.scorer, topic, stamp_ns(msg.header), label)

    def frame(self, camera: Camera, msgtype: str, log_time: int, msg, start: float) -> None:
        """Segment one deserialized camera message (``start``: when its deserializing
        began) and write its outputs."""
        from seg_perception.ros.conversions import ConversionError, decode, to_rgb
        from seg_perception.ros.outputs import OutputOptions, result_images
        from seg_perception.runtime.pipeline import InputError
        index = camera.frames + camera.skipped
        ego_mask = self.egos.get(camera.name)
        try:
            # As the node does: a JPEG decoded at the smallest scale the network needs,
            # results at the camera's size.
            decoded = decode(msg, min_size=self.pipeline.decode_size)
            decode_ms = (time.perf_counter() - start) * 1000.0
            ego = None if ego_mask is None else ego_mask.at(decoded.size)
            (result,) = self.pipeline.process([decoded.pixels], [decoded.encoding],
                                              ego_masks=[ego], output_sizes=[decoded.size])
        except (ConversionError, InputError) as exc:
            self._skip(camera, index, exc)
            return
        written = time.perf_counter()
        header = header_for_output(msg.header, self.out.typestore)
        options = OutputOptions(color=True, probabilities=tuple(self.extras.probabilities))
        for kind, pixels, encoding in result_images(result, options):
            self.out.write(output_topic(camera.namespace, kind),
                           self.out.image(pixels, encoding, header), log_time)
        self.extras.count(camera.namespace, result)
        if self.copy_inputs:
            self.out.write('/' + camera.topic.strip('/'),
                           convert_message(msg, msgtype, self.out.typestore), log_time)
        placed = self.ground is not None and self.ground.frame(
            camera, header, result, None if ego_mask is None else
            ego_mask.at(result.drivable_mask.shape), self.out, log_time)
        write_ms = (time.perf_counter() - written) * 1000.0
        stamp = stamp_ns(msg.header)
        timings = result.timings
        camera.records.append({
            'stamp_ns': stamp, 'log_ns': int(log_time), 'decode': decode_ms,
            'convert': timings.get('convert', 0.0), 'infer': timings.get('infer', 0.0),
            'postprocess': timings.get('postprocess', 0.0), 'pipeline': timings['total'],
            'node': decode_ms + timings['total'], 'write': write_ms,
            'end_to_end': decode_ms + timings['total'] + write_ms})
        camera.frames += 1
        if self.scorer is not None:
            self._score(camera, result, stamp, index)
        if index in camera.overlay_at:
            self._overlay(camera, index, to_rgb(*decoded), result,
                          self.ground.picture() if placed else None)

    def _overlay(self, camera: Camera, index: int, rgb: np.ndarray, result,
                 birds_eye: Optional[np.ndarray] = None) -> None:
        from seg_perception.replay.report import beside, overlay_panel
        try:
            picture = overlay_panel(rgb, result.color, result.drivable_mask)
            if birds_eye is not None:
                picture = beside(picture, birds_eye)
        except InvalidValueError as exc:
            camera.overlay_notes.append(f'frame {index}: no overlay: {exc}')
            LOG.warning('%s frame %d: no overlay: %s', camera.topic, index, exc)
            return
        self.overlays.append(((camera.name, index), f'{camera.name} frame {index}', picture))

    def _score(self, camera: Camera, result, stamp: int, index: int) -> None:
        prediction = self.scorer.prediction(result)
        if isinstance(self.truth, bag_labels.TopicLabels):
            self.truth.add_frame(self.scorer, camera.name, stamp, prediction)
            return
        found = self.truth.lookup(camera.name, stamp, index)
        if found is not None:
            self.scorer.update(camera.name, prediction, found[0], found[1])

    def close_output(self) -> Optional[OutputError]:
        """Close the output bag (metadata.yaml); the OutputError when it cannot be."""
        try:
            self.out.close()
        except OutputError as exc:
            LOG.warning('%s', exc)
            return exc
        return None

    def finish(self, model: str, bag: str, started: float,
               error) -> Tuple[Dict, Optional[OutputError]]:
        """Assemble the summary and write the report (partial on error).

        Returns metrics.json's content and the OutputError that kept the report from
        being written (None when it was).
        """
        from seg_perception.replay.report import build_summary, write_report
        summary = build_summary(self, model=model, bag=bag, error=error,
                                seconds=time.monotonic() - started)
        overlays = [(caption, picture) for _, caption, picture in
                    sorted(self.overlays, key=lambda item: item[0])]
        try:
            summary = write_report(self.output_dir, summary, self.cameras, overlays,
                                   self.scorer, self.pipeline.info)
        except OutputError as exc:
            return summary, exc
        except Exception:  # noqa: BLE001 - never hide the run's own error behind this one
            if error is None:
                raise
            LOG.exception('writing the partial report failed')
        return summary, None
