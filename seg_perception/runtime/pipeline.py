"""The onboard segmentation path, in one file, top to bottom.

    frames (any number of cameras, any sizes; rgb8 / bgr8 / mono8 numpy arrays)
      convert     check each frame, turn it into RGB and (fast path) resize it to
                  the network input size, straight into a preallocated batch
      infer       one backend call per batch (ONNX Runtime / TensorRT / PyTorch)
      upsample    class ids (and confidence, extra masks, class probabilities) to
                  camera resolution
      drivable    drivable mask, 255 = drivable (ego region, small holes: optional)
      overlay     optional colour overlay: image blended with the palette colours
    -> one SegResult per frame, in order, with the stage times in ms
       ('convert', 'infer', 'upsample', 'drivable', 'overlay', 'postprocess' =
       upsample + drivable + overlay, 'total' = the whole process() call)

Where the resizing happens. The exported graph accepts frames of any size and
resizes them itself, but on a CPU its cast, transpose and bilinear resize of a
camera-size frame cost much more than cv2.resize, and bilinear upsampling of the
logits to camera size plus the argmax there cost far more than an argmax at network
size and nearest upsampling of the class ids (benchmarks/DESIGN.md). So, for a graph
exported with ``output_resolution='network'``, the pipeline resizes each frame with
cv2.resize (INTER_LINEAR, the same half-pixel bilinear as the graph) into one
network-size batch for all cameras, and upsamples the network-size class ids with
cv2 INTER_NEAREST_EXACT (pixel-centre aligned). The labels differ from those of
bilinear logits upsampling only by shifts along class boundaries (agreement on real
frames: benchmarks/DESIGN.md). A graph exported with ``output_resolution='camera'``
is fed the frames at their own size, grouped by resolution (one call per
resolution), and keeps its exact boundaries: ``resize='auto'`` follows the graph;
force either with ``resize='pipeline'`` or ``resize='graph'``.

Memory. Batches, scratch images and the backend's outputs are allocated once
per shape and reused. The arrays of each SegResult are new per call, so results
can be kept; ``reuse_outputs=True`` writes them into reused buffers instead
(valid until the next call: for a node that publishes and forgets).

No torch is imported here: numpy, OpenCV and the chosen backend are enough.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from seg_perception.choices import OUTPUT_RESOLUTIONS, check_choice
from seg_perception.errors import InvalidValueError
from seg_perception.runtime.backend import Backend
from seg_perception.runtime.backends import create_backend
from seg_perception.runtime.drivable import (NEAREST, DrivableMasker, EgoMasks,
                                             resolve_drivable_ids)
from seg_perception.runtime.pipeline_input import (ENCODINGS, InputError, check_ego_masks,
                                                   check_frames, check_output_sizes)

__all__ = ['ENCODINGS', 'InputError', 'SegResult', 'SegmentationPipeline']

LOG = logging.getLogger(__name__)

RESIZE_MODES = ('auto', 'pipeline', 'graph')
_MAX_BUFFERS = 64


@dataclass
class SegResult:
    """The segmentation of one frame."""

    labels: np.ndarray                      # H×W uint8 class ids
    drivable_mask: np.ndarray               # H×W uint8, 255 = drivable
    confidence: Optional[np.ndarray] = None  # H×W uint8, max softmax × 255
    color: Optional[np.ndarray] = None      # H×W×3 uint8 RGB overlay
    timings: Dict[str, float] = field(default_factory=dict)   # ms per stage
    # A model's extra binary heads (ModelInfo.masks), H×W uint8, 255 = on, by mask name,
    # and its per-class scores (ModelInfo.probabilities), H×W uint8 p × 255, by class name.
    masks: Dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: Dict[str, np.ndarray] = field(default_factory=dict)


class SegmentationPipeline:
    """Frames in, class ids + drivable mask (+ confidence, overlay) out."""

    def __init__(self, model_path: Optional[str] = None, backend: Union[str, Backend] = 'auto',
                 precision: str = 'fp32', output_resolution: str = 'camera',
                 drivable_classes=None, keep_ego_region: bool = False, fill_holes_px: int = 0,
                 want_confidence: bool = False, want_color: bool = False,
                 color_alpha: float = 0.5, threads: Optional[int] = None,
                 engine_cache_dir: Optional[str] = None, resize: str = 'auto',
                 reuse_outputs: bool = False):
        """``model_path``: exported ONNX (None: the shipped default model; a checkpoint
        with backend='pytorch'). ``backend``: a name for create_backend or a Backend.
        ``drivable_classes``: ids or names overriding the model's drivable classes.
        ``color_alpha``: weight of the palette colour in the overlay (0..1)."""
        check_choice('output_resolution', output_resolution, OUTPUT_RESOLUTIONS)
        check_choice('resize', resize, RESIZE_MODES)
        if not 0.0 <= color_alpha <= 1.0:
            raise InvalidValueError(f'color_alpha must be between 0 and 1, got {color_alpha}')
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = create_backend(model_path, backend, precision, threads,
                                          engine_cache_dir)
        self.info = self.backend.info
        if want_confidence and 'confidence' not in self.info.outputs:
            raise InvalidValueError(f'{self.backend.model_path} has no confidence output; export '
                                    'it with --confidence')
        self.output_resolution = output_resolution
        if resize == 'auto':
            resize = 'graph' if self.info.output_resolution == 'camera' else 'pipeline'
        self.resize = resize
        self.want_confidence = want_confidence
        self.want_color = want_color
        self.color_alpha = float(color_alpha)
        self.reuse_outputs = reuse_outputs
        drivable_ids = resolve_drivable_ids(self.info.class_names, self.info.drivable_ids,
                                            drivable_classes)
        self.drivable = DrivableMasker(drivable_ids, keep_ego_region, fill_holes_px)
        self.ego = EgoMasks()
        palette = np.zeros((256, 1, 3), np.uint8)
        palette[:self.info.num_classes, 0] = np.asarray(self.info.palette, np.uint8)
        self._palette = palette             # cv2.applyColorMap's user table: id -> RGB
        self._buffers: Dict[tuple, np.ndarray] = {}
        LOG.info('pipeline: %s (%s), resize in the %s, results at %s resolution, '
                 'drivable classes %s', self.backend.name, self.precision_text(), resize,
                 output_resolution, [self.info.class_names[i] for i in drivable_ids])

    def precision_text(self) -> str:
        """The precision that runs, and why where 'auto' chose it: 'int8 (auto: AVX512-VNNI,
        default_model.cpu.int8.onnx)'."""
        why = getattr(self.backend, 'precision_reason', '')
        return f'{self.backend.precision} ({why})' if why else str(self.backend.precision)

    def describe(self) -> dict:
        """The backend's description plus how this pipeline uses it."""
        description = dict(self.backend.describe())
        description.update(resize=self.resize, result_resolution=self.output_resolution,
                           drivable_ids=list(self.drivable.drivable_ids),
                           keep_ego_region=self.drivable.keep_ego_region,
                           fill_holes_px=self.drivable.fill_holes_px)
        return description

    # -- the path -------------------------------------------------------------
    @property
    def decode_size(self) -> Optional[Tuple[int, int]]:
        """The smallest (height, width) worth decoding a frame at, or None for full size.

        When the pipeline resizes frames to the network input, a frame decoded at no less
        than that size (a scaled JPEG decode) gives the same network input for less work;
        pass the camera's size as ``output_sizes`` to get results at full size. A graph fed
        frames at their own size needs them whole.
        """
        return tuple(self.info.input_size) if self.resize == 'pipeline' else None

    def process(self, frames: Sequence[np.ndarray],
                encodings: Union[None, str, Sequence[str]] = None,
                ego_masks: Optional[Sequence[Optional[np.ndarray]]] = None,
                output_sizes: Optional[Sequence[Optional[Tuple[int, int]]]] = None
                ) -> List[SegResult]:
        """Segment ``frames`` (one per camera); return one SegResult per frame, in order.

        ``encodings``: one per frame, one for all, or None (rgb8). ``output_sizes``: one
        (height, width) per frame, the size camera-resolution results are made at (None:
        the frame's own size; a reduced decode passes the camera's). A bad frame raises
        InputError before any work is done, so the pipeline stays usable.
        """
        start = time.perf_counter()
        frames, encodings = check_frames(frames, encodings)
        # ego_masks: one per frame (None: that camera has none), H×W, non-zero = ego, any size.
        ego_masks = check_ego_masks(ego_masks, len(frames))
        output_sizes = check_output_sizes(output_sizes, frames)
        results: List[Optional[SegResult]] = [None] * len(frames)
        for indices, feed_size in self._batches(frames):
            timings = [dict() for _ in indices]

            # convert: RGB, at the size the graph is fed, into the batch.
            t0 = time.perf_counter()
            batch = self._as_batch(frames[indices[0]], encodings[indices[0]], feed_size) \
                if len(indices) == 1 else None
            if batch is not None:
                timings[0]['convert'] = _ms(t0)
            else:
                batch = self._buffer('batch', (len(indices),) + feed_size + (3,))
                for slot, (index, timing) in enumerate(zip(indices, timings)):
                    t0 = time.perf_counter()
                    self._convert(frames[index], encodings[index], batch[slot])
                    timing['convert'] = _ms(t0)

            # infer
            t0 = time.perf_counter()
            outputs = self.backend.run(batch)
            infer_ms = _ms(t0)

            for slot, (index, timing) in enumerate(zip(indices, timings)):
                timing['infer'] = infer_ms
                results[index] = self._postprocess(frames[index], encodings[index], batch[slot],
                                                   outputs, slot, index, timing,
                                                   ego_masks[index], output_sizes[index])
        total_ms = _ms(start)
        for result in results:
            result.timings['total'] = total_ms
        return results

    # -- convert --------------------------------------------------------------
    def _batches(self, frames) -> List[Tuple[List[int], Tuple[int, int]]]:
        """Which frames go into one backend call, and the size they are fed at."""
        groups: Dict[Tuple[int, int], List[int]] = {}
        for index, frame in enumerate(frames):
            size = tuple(self.info.input_size) if self.resize == 'pipeline' else frame.shape[:2]
            groups.setdefault(size, []).append(index)
        # A TensorRT profile's limit, or a graph that takes one frame a run (ModelInfo).
        limits = [n for n in (self.backend.max_batch, self.info.max_batch) if n]
        step = min(limits) if limits else len(frames) or 1
        return [(indices[i:i + step], size) for size, indices in groups.items()
                for i in range(0, len(indices), step)]

    @staticmethod
    def _as_batch(frame: np.ndarray, encoding: str, feed_size) -> Optional[np.ndarray]:
        """A one-frame batch without a copy, when the frame is already what is fed."""
        if encoding == 'rgb8' and frame.shape[:2] == feed_size and frame.flags.c_contiguous:
            return frame[np.newaxis]
        return None

    def _convert(self, frame: np.ndarray, encoding: str, slot: np.ndarray) -> None:
        """Write ``frame`` as RGB at the slot's size into ``slot`` (a view of the batch)."""
        conversion = ENCODINGS[encoding][1]
        height, width = slot.shape[:2]
        same_size = frame.shape[:2] == (height, width)
        if conversion is None:
            if same_size:
                np.copyto(slot, frame)
            else:
                cv2.resize(frame, (width, height), dst=slot, interpolation=cv2.INTER_LINEAR)
            return
        # Resize first (fewer pixels to convert when shrinking), then convert into the slot.
        if not same_size:
            scratch = self._buffer('scratch', (height, width) + frame.shape[2:])
            frame = cv2.resize(frame, (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(frame, conversion, dst=slot)

    # -- upsample, drivable, overlay ------------------------------------------
    def _postprocess(self, frame, encoding, rgb_fed, outputs, slot, index, timing,
                     ego=None, camera_size=None) -> SegResult:
        t0 = time.perf_counter()
        if self.output_resolution == 'camera':
            size = tuple(camera_size or frame.shape[:2])
        else:
            size = tuple(self.info.input_size)
        network_labels = outputs['labels'][slot]
        labels = self._resize_into(network_labels, size,
                                   self._output('labels', index, size), NEAREST)
        confidence = None
        if self.want_confidence:
            confidence = self._resize_into(outputs['confidence'][slot], size,
                                           self._output('confidence', index, size),
                                           cv2.INTER_LINEAR)
        masks = self._planes(outputs, 'masks', self.info.masks, slot, index, size, NEAREST)
        probabilities = self._planes(outputs, 'probabilities', self.info.probabilities, slot,
                                     index, size, cv2.INTER_LINEAR)
        timing['upsample'] = _ms(t0)

        t0 = time.perf_counter()
        # From the smaller label image when upsampled (same mask, fewer pixels to process).
        source = network_labels if network_labels.size < labels.size else labels
        mask = self.drivable(source, out=self._output('drivable', index, size), size=size)
        if ego is not None:
            self.ego.apply(ego, labels, mask)
        timing['drivable'] = _ms(t0)

        t0 = time.perf_counter()
        color = None
        if self.want_color:
            image = self._overlay_image(frame, encoding, rgb_fed, size)
            color = self._output('color', index, size + (3,))
            cv2.applyColorMap(labels, self._palette, dst=color)
            cv2.addWeighted(image, 1.0 - self.color_alpha, color, self.color_alpha, 0.0,
                            dst=color)
        timing['overlay'] = _ms(t0)
        timing['postprocess'] = timing['upsample'] + timing['drivable'] + timing['overlay']
        return SegResult(labels, mask, confidence, color, timing, masks, probabilities)

    def _planes(self, outputs, output: str, names, slot, index, size,
                interpolation) -> Dict[str, np.ndarray]:
        """The channels of an N×K×h×w output (masks, probabilities) at the result size."""
        if output not in outputs:
            return {}
        planes = outputs[output][slot]
        return {name: self._resize_into(planes[channel], size,
                                        self._output(f'{output}:{name}', index, size),
                                        interpolation)
                for channel, name in enumerate(names)}

    @staticmethod
    def _resize_into(source: np.ndarray, size, out: np.ndarray, interpolation) -> np.ndarray:
        if source.shape == tuple(size):
            np.copyto(out, source)
        else:
            cv2.resize(source, (size[1], size[0]), dst=out, interpolation=interpolation)
        return out

    def _overlay_image(self, frame, encoding, rgb_fed, size) -> np.ndarray:
        """The frame as RGB at the result size: the fed image, the camera image or a resize."""
        if rgb_fed.shape[:2] == size:
            return rgb_fed
        if frame.shape[:2] != size:
            return cv2.resize(rgb_fed, (size[1], size[0]), dst=self._buffer('rgb', size + (3,)),
                              interpolation=cv2.INTER_LINEAR)
        conversion = ENCODINGS[encoding][1]
        if conversion is None:
            return frame
        return cv2.cvtColor(frame, conversion, dst=self._buffer('rgb', size + (3,)))

    # -- buffers --------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple) -> np.ndarray:
        """A uint8 array reused across calls for this name and shape."""
        key = (name,) + tuple(shape)
        buffer = self._buffers.get(key)
        if buffer is None:
            if len(self._buffers) >= _MAX_BUFFERS:    # camera sizes keep changing
                self._buffers.clear()
            buffer = self._buffers[key] = np.empty(shape, np.uint8)
        return buffer

    def _output(self, name: str, index: int, shape: tuple) -> np.ndarray:
        if self.reuse_outputs:
            return self._buffer(f'out:{name}:{index}', shape)
        return np.empty(shape, np.uint8)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
