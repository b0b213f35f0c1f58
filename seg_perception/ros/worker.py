"""The inference worker, without rclpy: what happens to the frames the slots hold.

Subscription callbacks only :meth:`FrameSlots.put` the message (frame_slots.py:
a slot, not a queue). :class:`InferenceWorker` runs two
stages on two threads: the decode stage takes the freshest frame of every
waiting camera and has :class:`FrameProcessor` drop stale or bad ones and decode
the rest; the inference stage runs the pipeline on them as one batch and hands
each result to the node's publish callback. The decode of the next batch thus
overlaps the network's run of the current one. Between the stages sits one
:class:`Handover` slot: the decode stage takes new frames only once the
inference stage has taken the batch before, so at most one decoded batch waits,
and it is made of the newest frames at the moment the network became free for
it (frames arriving meanwhile replace older ones in the slots, counted as
superseded; none is decoded only to be thrown away, which a small CPU cannot
afford). Every camera with a frame waiting is in the next batch, oldest-waiting
first, so no camera starves however many there are or however fast they send.
A slow model therefore skips frames instead of building a backlog, and memory
stays bounded.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from seg_perception.ros import conversions
from seg_perception.ros.camera_health import CameraHealth
from seg_perception.ros.diagnostics import CameraStats, stamps_ahead_text
from seg_perception.ros.frame_slots import Frame, FrameSlots, Handover
from seg_perception.ros.model_swap import PipelineHandover

# Drop reasons, as counted in diagnostics.
SUPERSEDED = 'superseded'               # a newer frame arrived before inference took it
TOO_OLD = 'too_old'                     # older than max_frame_age_ms
BAD_FRAME = 'bad_frame'                 # cannot be decoded (encoding, step, size, JPEG)
RESOLUTION_CHANGE = 'resolution_change'
REJECTED = 'rejected_by_pipeline'       # the pipeline raised InputError
INFERENCE_ERROR = 'inference_error'     # the backend failed
# Not a drop: a published frame stamped after the node's now (clocks out of step).
STAMP_AHEAD = 'stamp_ahead'


class WarnThrottle:
    """Let one warning per key through every ``period_s``; count the ones held back."""

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: Dict[Any, float] = {}
        self._held: Dict[Any, int] = {}

    def allow(self, key) -> Tuple[bool, int]:
        """(whether to log now, how many were held back since the last one)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._held.pop(key, 0)


class FrameProcessor:
    """Checks, decodes, segments and publishes one batch of frames (no threads here)."""

    def __init__(self, pipeline, stats: Dict[str, CameraStats],
                 publish: Callable[[Frame, Any], None], now_ns: Callable[[], int], *,
                 max_frame_age_ms: float = 0.0, warn: Callable[[str], None] = print,
                 decode: Callable = conversions.decode, throttle: Optional[WarnThrottle] = None,
                 adopt_resolution_after: int = 30, ego_masks: Optional[Dict[str, Any]] = None,
                 health: Optional[Dict[str, CameraHealth]] = None):
        """``ego_masks``: camera -> EgoMask (ground/ego.py) for the cameras that have one;
        ``health``: camera -> CameraHealth, fed every frame that reaches the worker."""
        self.pipeline = pipeline
        self.stats = stats
        self.publish = publish
        self.now_ns = now_ns
        self.max_age_ns = int(max_frame_age_ms * 1e6)
        self.warn = warn
        self.decode = decode
        self.throttle = throttle or WarnThrottle()
        self.adopt_after = adopt_resolution_after
        self.ego_masks = dict(ego_masks or {})
        self.health = dict(health or {})
        self._sizes: Dict[str, Tuple[int, int]] = {}
        self._mismatches: Dict[str, int] = {}
        self._handover = PipelineHandover()

    def replace_pipeline(self, pipeline,
                         on_swap: Optional[Callable[[], None]] = None) -> threading.Event:
        """Segment with ``pipeline`` from the next batch on (a model swap); ``on_swap`` runs
        on the worker thread between the two batches. The event is set once swapped."""
        return self._handover.offer(pipeline, on_swap)

    def hand_over(self) -> bool:
        """Take a waiting replacement pipeline, if any (call between batches only)."""
        return self._handover.take(lambda pipeline: setattr(self, 'pipeline', pipeline))

    def _warn(self, frame: Frame, key: str, text: str) -> None:
        """Warn about ``frame``'s camera, throttled per camera and ``key``."""
        allowed, held = self.throttle.allow((frame.camera, key))
        if allowed:
            more = f' ({held} more since the last warning)' if held else ''
            self.warn(f'{frame.camera}: {text}{more}')

    def drop(self, frame: Frame, reason: str, detail: str) -> None:
        """Count a dropped frame and warn (throttled per camera and reason)."""
        self.stats[frame.camera].record_drop(reason)
        self._warn(frame, reason, f'dropped frame ({reason}): {detail}')

    def _size_ok(self, frame: Frame, size: Tuple[int, int]) -> bool:
        """Lock each camera to its first size; adopt a new one only once it persists."""
        locked = self._sizes.setdefault(frame.camera, size)
        if size == locked:
            self._mismatches[frame.camera] = 0
            return True
        count = self._mismatches.get(frame.camera, 0) + 1
        self._mismatches[frame.camera] = count
        if count >= self.adopt_after:
            self.warn(f'{frame.camera}: resolution changed from {locked[1]}x{locked[0]} to '
                      f'{size[1]}x{size[0]} for {count} frames; using the new size')
            self._sizes[frame.camera] = size
            self._mismatches[frame.camera] = 0
            return True
        self.drop(frame, RESOLUTION_CHANGE, f'{size[1]}x{size[0]} instead of the stream\'s '
                                            f'{locked[1]}x{locked[0]}')
        return False

    def prepare(self, frames: List[Frame]) -> list:
        """Check and decode ``frames`` (the decode stage); what finish() takes."""
        ready = []
        now = self.now_ns()
        # A pipeline that resizes to the network input needs no more pixels than that.
        min_size = getattr(self.pipeline, 'decode_size', None)
        extra = {'min_size': min_size} if min_size else {}
        for frame in frames:
            started = time.perf_counter()
            health = self.health.get(frame.camera)
            if health is not None:      # before the age check: frozen stamps make frames old
                health.check_stamp(frame.stamp_ns, frame.arrived)
            if self._too_old(frame, now):
                continue
            try:
                decoded = self.decode(frame.msg, **extra)
            except conversions.ConversionError as exc:
                self.drop(frame, BAD_FRAME, str(exc))
                continue
            if health is not None:
                health.check_image(decoded.pixels, decoded.encoding, frame.arrived)
            if self._size_ok(frame, _camera_size(decoded)):
                ready.append((frame, decoded, time.perf_counter() - started))
        return ready

    def _segment(self, ready) -> List[Any]:
        """Results per frame (None where dropped); one batch, frame by frame if one is bad."""
        pixels = [d.pixels for _, d, _ in ready]
        encodings = [d.encoding for _, d, _ in ready]
        sizes = [_camera_size(d) for _, d, _ in ready]
        kwargs = {}
        if any(size != p.shape[:2] for size, p in zip(sizes, pixels)):
            kwargs['output_sizes'] = sizes      # reduced decodes: results at the camera's size
        if self.ego_masks:
            egos = [self.ego_masks.get(frame.camera) for frame, _, _ in ready]
            kwargs['ego_masks'] = [None if ego is None else ego.at(size)
                                   for ego, size in zip(egos, sizes)]
        try:
            return list(self.pipeline.process(pixels, encodings, **kwargs))
        except ValueError as exc:       # InputError: find the bad frame(s), keep the rest
            if len(ready) == 1:
                self.drop(ready[0][0], REJECTED, str(exc))
                return [None]
            return [self._segment([item])[0] for item in ready]
        except Exception as exc:  # noqa: BLE001 - a backend failure must not kill the node
            for frame, _, _ in ready:
                self.drop(frame, INFERENCE_ERROR, f'{type(exc).__name__}: {exc}')
            return [None] * len(ready)

    def process(self, frames: List[Frame]) -> int:
        """Handle one batch (both stages); return how many frames were published."""
        return self.finish(self.prepare(frames))

    def _too_old(self, frame: Frame, now: int) -> bool:
        """Drop ``frame`` (and say so) when it is older than max_frame_age_ms at ``now``."""
        age_ns = now - frame.stamp_ns
        if self.max_age_ns and frame.stamp_ns and age_ns > self.max_age_ns:
            self.drop(frame, TOO_OLD, f'{age_ns / 1e6:.0f} ms old, max_frame_age_ms is '
                                      f'{self.max_age_ns / 1e6:g}')
            return True
        return False

    def finish(self, ready: list) -> int:
        """Segment and publish what prepare() returned (the inference stage); return how
        many frames were published. A model swap waiting takes effect first: between two
        batches, never inside one."""
        self.hand_over()
        # A decoded batch may have waited for the network: the age limit holds at its run.
        now = self.now_ns()
        ready = [item for item in ready if not self._too_old(item[0], now)]
        if not ready:
            return 0
        results = self._segment(ready)
        published = 0
        for (frame, _, decode_s), result in zip(ready, results):
            if result is None:
                continue
            started = time.perf_counter()
            self.publish(frame, result)
            overhead_ms = (decode_s + time.perf_counter() - started) * 1e3
            latency_ms = (self.now_ns() - frame.stamp_ns) / 1e6 if frame.stamp_ns else None
            if latency_ms is not None and latency_ms < 0:
                self._warn(frame, STAMP_AHEAD, stamps_ahead_text(-latency_ms))
            self.stats[frame.camera].record_output(latency_ms, overhead_ms)
            published += 1
        return published


def _camera_size(decoded) -> Tuple[int, int]:
    """(height, width) the camera sent: a reduced decode's camera_size, else the pixels'."""
    return tuple(getattr(decoded, 'camera_size', None) or decoded.pixels.shape[:2])


class InferenceWorker:
    """The decode and inference threads running a FrameProcessor on what the slots hold.

    A processor with only process() (no prepare()/finish() stages) runs on one thread.
    """

    def __init__(self, slots: FrameSlots, processor: FrameProcessor,
                 on_error: Callable[[BaseException], None], poll_s: float = 0.1):
        self.slots = slots
        self.processor = processor
        self.on_error = on_error
        self.poll_s = poll_s
        self.handover = Handover()
        self._stop = threading.Event()
        staged = callable(getattr(processor, 'prepare', None)) and \
            callable(getattr(processor, 'finish', None))
        self._threads = [threading.Thread(target=self._infer if staged else self._run,
                                          name='segmentation_worker', daemon=True)]
        if staged:
            self._threads.append(threading.Thread(target=self._decode, name='segmentation_decode',
                                                  daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _guarded(self, stage: Callable, *arguments) -> None:
        try:
            stage(*arguments)
        except Exception as exc:  # noqa: BLE001 - report and keep serving other frames
            if not self._stop.is_set():    # publishers vanish during shutdown: not an error
                self.on_error(exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            frames = self.slots.take(timeout=self.poll_s)
            if frames and not self._stop.is_set():
                self._guarded(self.processor.process, frames)
            elif not frames:
                self._guarded(self.processor.hand_over)     # a swap also completes then

    def _decode(self) -> None:
        """Decode stage: the newest frames, once the batch before is in the network."""
        while not self._stop.is_set():
            if not self.handover.wait_empty(self.poll_s):
                continue
            frames = self.slots.take(timeout=self.poll_s)
            if not frames or self._stop.is_set():
                continue
            try:
                ready = self.processor.prepare(frames)
            except Exception as exc:  # noqa: BLE001 - report and keep serving other frames
                if not self._stop.is_set():
                    self.on_error(exc)
                continue
            if ready:
                self.handover.put(ready)

    def _infer(self) -> None:
        """Inference stage: segment and publish each decoded batch."""
        while not self._stop.is_set():
            ready = self.handover.take(timeout=self.poll_s)
            if ready and not self._stop.is_set():
                self._guarded(self.processor.finish, ready)
            elif not ready:
                # A swap also completes while no frames come (here: the network's thread).
                self._guarded(self.processor.hand_over)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to end and wait for the batch in flight."""
        self._stop.set()
        self.slots.close()
        self.handover.close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    @property
    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)
