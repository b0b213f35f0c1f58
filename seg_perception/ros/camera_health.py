"""Is the camera, not the network, the problem? Per-frame checks of one camera's images.

Five conditions, each measured on the frame at the network's input size (the
resolution the model sees; a greyscale copy made here, so that the checks cost
the same whatever the camera's resolution):

    dark        the brightest 1 % of pixels below a luminance (a night scene keeps
                its street lights and headlights; a capped or dead sensor does not)
    saturated   a share of the pixels at full scale (sun glare, over-exposure)
    blocked     one connected low-texture region, staying in place, covering a
                share of the image (mud, a sticker, a hand on the lens)
    frozen      the image identical to the previous one (a stuck driver resending)
    stamps      header stamps not moving forward (frozen or out of order)

A condition is reported only once it has held on every frame for ``persist_s``
(WARN), becomes ERROR once it has held for ``error_s`` (as a rate or latency
problem that persists is an error), and clears on the first frame without it.

No rclpy here: the worker feeds frames, the node reports :meth:`CameraHealth.report`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

from seg_perception.ros.diagnostics import ERROR, WARN

# (height, width) of the shipped default model's input.
NETWORK_SIZE = (360, 480)
# Grey level counted as saturated (JPEG ringing keeps clipped areas a few levels below 255).
SATURATED_LEVEL = 250
# Side of the square blocks whose grey-level spread measures texture, in network pixels.
BLOCK_PX = 12
# Brightness and texture are statistics: every other row and column gives the same
# answer for a quarter of the work (the frozen check compares every pixel).
STRIDE = 2
_GREY = {'rgb8': cv2.COLOR_RGB2GRAY, 'bgr8': cv2.COLOR_BGR2GRAY, 'mono8': None}


@dataclass(frozen=True)
class HealthThresholds:
    """When a condition holds (0 turns a check off) and how long before it is reported."""

    persist_s: float = 1.0
    error_s: float = 5.0
    dark_luminance: float = 20.0
    saturated_fraction: float = 0.25
    blocked_fraction: float = 0.4
    blocked_texture: float = 1.0
    frozen_difference: float = 0.05
    stamp_min_step_ms: float = 0.0


class Condition:
    """How long a condition has held without a break, and what it looked like last."""

    def __init__(self):
        self.since: Optional[float] = None
        self.last: float = 0.0
        self.detail = ''

    def update(self, active: bool, now: float, detail: str = '') -> None:
        if not active:
            self.since = None
            return
        if self.since is None:
            self.since = now
        self.last, self.detail = now, detail

    def duration(self) -> float:
        return 0.0 if self.since is None else self.last - self.since


def grey_at(pixels: np.ndarray, encoding: str, size: Tuple[int, int],
            out: Optional[np.ndarray] = None) -> np.ndarray:
    """The frame as uint8 luminance at ``size`` (height, width): resized first (fewer pixels
    to convert), by nearest sampling (the checks need statistics, not a smooth image, and
    interpolating a camera-size frame would cost more than all of them)."""
    height, width = size
    if pixels.shape[:2] != (height, width):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_NEAREST)
    conversion = _GREY[encoding]
    if conversion is None:
        if out is None:
            return np.ascontiguousarray(pixels)
        np.copyto(out, pixels)
        return out
    return cv2.cvtColor(pixels, conversion, dst=out)


def brightness(grey: np.ndarray) -> Tuple[float, float]:
    """(luminance of the brightest 1 % of pixels, share of saturated pixels), one histogram."""
    histogram = cv2.calcHist([grey[::STRIDE, ::STRIDE]], [0], None, [256], [0, 256]).ravel()
    cumulative = np.cumsum(histogram)
    top_percent = float(np.searchsorted(cumulative, 0.99 * cumulative[-1]))
    return top_percent, float(histogram[SATURATED_LEVEL:].sum() / cumulative[-1])


def flat_blocks(grey: np.ndarray, texture: float) -> np.ndarray:
    """Bool grid, one cell per BLOCK_PX square: its grey-level standard deviation < texture,
    and not saturated (glare is the saturation check's)."""
    cells = (grey.shape[1] // BLOCK_PX, grey.shape[0] // BLOCK_PX)
    values = grey[::STRIDE, ::STRIDE].astype(np.float32)
    mean = cv2.resize(values, cells, interpolation=cv2.INTER_AREA)
    mean_sq = cv2.resize(values * values, cells, interpolation=cv2.INTER_AREA)
    return (mean_sq - mean * mean < texture * texture) & (mean < SATURATED_LEVEL)


def largest_region(mask: np.ndarray) -> float:
    """Share of the grid covered by the largest 4-connected region of True cells."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=4)
    if count < 2:
        return 0.0
    return float(stats[1:, cv2.CC_STAT_AREA].max()) / mask.size


def duration_text(seconds: float) -> str:
    return f'{seconds:.1f} s'


class CameraHealth:
    """The five conditions of one camera, fed frame by frame (thread-safe)."""

    def __init__(self, camera: str, size: Tuple[int, int],
                 thresholds: HealthThresholds = HealthThresholds()):
        """``size``: (height, width) the checks run at, the network's input size."""
        self.camera = camera
        self.size = (int(size[0]), int(size[1]))
        self.thresholds = thresholds
        self._lock = threading.Lock()
        self._grey = [np.empty(self.size, np.uint8), np.empty(self.size, np.uint8)]
        self._have_previous = False
        self._flat_kept: Optional[np.ndarray] = None    # blocks flat in every frame so far
        self._last_stamp_ns = 0
        self.stamps_out_of_order = 0
        self.conditions = {name: Condition() for name in
                           ('dark', 'saturated', 'blocked', 'frozen', 'stamps')}

    def check_stamp(self, stamp_ns: int, now: float) -> None:
        """A frame's header stamp (0: unstamped, not judged), before any frame is dropped."""
        if not stamp_ns:
            return
        with self._lock:
            previous, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
            if not previous:
                return
            step_ms = (stamp_ns - previous) / 1e6
            if step_ms < 0:
                self.stamps_out_of_order += 1
            stuck = step_ms <= self.thresholds.stamp_min_step_ms
            detail = 'header stamps frozen' if step_ms == 0 else \
                'header stamps out of order' if step_ms < 0 else \
                f'header stamps advancing {step_ms:.1f} ms per frame'
            self.conditions['stamps'].update(stuck, now, detail)

    def check_image(self, pixels: np.ndarray, encoding: str, now: float) -> None:
        """A decoded frame (rgb8, bgr8 or mono8, any size)."""
        limits = self.thresholds
        with self._lock:
            grey = grey_at(pixels, encoding, self.size, self._grey[0])
            top, saturated = brightness(grey)
            dark = limits.dark_luminance > 0 and top < limits.dark_luminance
            self.conditions['dark'].update(
                dark, now, f'image dark (brightest 1 % below luminance {top + 1:.0f})')
            self.conditions['saturated'].update(
                limits.saturated_fraction > 0 and saturated > limits.saturated_fraction, now,
                f'{100 * saturated:.0f} % of the image saturated')
            # A dark image has no texture anywhere: that is the darkness, not a blockage.
            self._check_blocked(grey, now, dark)
            self._check_frozen(grey, now)
            self._grey.reverse()            # this frame becomes the previous one
            self._have_previous = True

    def _check_blocked(self, grey: np.ndarray, now: float, dark: bool) -> None:
        limits = self.thresholds
        if limits.blocked_fraction <= 0 or dark:
            self._flat_kept = None
            self.conditions['blocked'].update(False, now)
            return
        flat = flat_blocks(grey, limits.blocked_texture)
        # The region must stay: only blocks flat in every frame of the run count.
        kept = flat if self._flat_kept is None else self._flat_kept & flat
        share = largest_region(kept)
        if share < limits.blocked_fraction:
            kept, share = flat, largest_region(flat)    # start a new run from this frame
        self._flat_kept = kept if share >= limits.blocked_fraction else None
        self.conditions['blocked'].update(
            share >= limits.blocked_fraction, now,
            f'{100 * share:.0f} % of the image blocked (one low-texture region)')

    def _check_frozen(self, grey: np.ndarray, now: float) -> None:
        if not self._have_previous:
            return
        difference = cv2.norm(grey, self._grey[1], cv2.NORM_L1) / grey.size
        self.conditions['frozen'].update(
            difference <= self.thresholds.frozen_difference, now,
            'image frozen (identical frames)')

    def report(self) -> List[Tuple[int, str]]:
        """(level, message) of every condition held for at least ``persist_s``, worst first."""
        limits = self.thresholds
        found = []
        with self._lock:
            for condition in self.conditions.values():
                held = condition.duration()
                if condition.since is None or held < limits.persist_s:
                    continue
                level = ERROR if held >= limits.error_s else WARN
                found.append((level, f'{self.camera}: {condition.detail} for '
                                     f'{duration_text(held)}'))
        return sorted(found, key=lambda item: -item[0])
