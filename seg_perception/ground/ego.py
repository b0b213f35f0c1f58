"""The ego vehicle's pixels in one camera: from a PNG or a polygon, at any image size.

A PNG: non-zero = ego vehicle (any channel but alpha), any resolution, scaled to the frame
nearest-neighbour (pixel-centre aligned). A polygon: a flat list x0, y0, x1, y1, … of
normalised image coordinates (0..1 across the width and height: 0 is the outer edge of the
first pixel, 1 that of the last); a pixel is ego when its centre is inside, the edges
rounded to the nearest pixel centre (OpenCV's fillPoly), so at most half a pixel off.
Masks are made once per size and kept. A mask that covers the whole image is allowed, with
a warning: nothing that camera sees can then be drivable.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError

LOG = logging.getLogger(__name__)
NEAREST = getattr(cv2, 'INTER_NEAREST_EXACT', cv2.INTER_NEAREST)
_SHIFT = 8          # fillPoly's fractional bits: vertices to 1/256 pixel


class EgoMaskError(InvalidValueError):
    """An ego mask file or polygon that cannot be used."""


class EgoMask:
    """One camera's ego-vehicle region; ``at(size)`` gives it as an H×W bool mask."""

    def __init__(self, source: str, image: Optional[np.ndarray] = None,
                 polygon: Optional[np.ndarray] = None):
        """Use ``from_png`` or ``from_polygon``; ``source`` names it in messages."""
        self.source = source
        self._image = image          # H×W uint8, 0 / 1
        self._polygon = polygon      # N×2 float, normalised
        self._masks: Dict[Tuple[int, int], np.ndarray] = {}
        self._warned = False

    @classmethod
    def from_png(cls, path: str) -> 'EgoMask':
        """The mask in an image file; EgoMaskError if it is missing or not an image."""
        if not os.path.isfile(path):
            raise EgoMaskError(f'ego mask {path}: no such file')
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None or image.size == 0:
            raise EgoMaskError(f'ego mask {path}: cannot be read as an image (PNG expected)')
        if image.ndim == 3:
            image = image[:, :, :3].max(axis=2)     # colour channels; alpha is not ego
        return cls(path, image=(image != 0).astype(np.uint8))

    @classmethod
    def from_polygon(cls, values: Sequence[float], source: str = 'ego polygon') -> 'EgoMask':
        """The polygon of a flat list of normalised x, y pairs; EgoMaskError if unusable."""
        try:
            flat = np.asarray(values, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise EgoMaskError(f'{source}: expected a flat list of numbers, got '
                               f'{values!r}') from None
        if flat.size % 2:
            raise EgoMaskError(f'{source}: {flat.size} values, an odd number: give x, y pairs')
        if flat.size < 6:
            raise EgoMaskError(f'{source}: {flat.size // 2} point(s); a polygon needs at '
                               'least 3 (x, y pairs)')
        if not np.isfinite(flat).all() or flat.min() < 0 or flat.max() > 1:
            raise EgoMaskError(f'{source}: values must be normalised image coordinates in '
                               f'0..1, got {flat.min():g}..{flat.max():g} (pixels?)')
        return cls(source, polygon=flat.reshape(-1, 2))

    def at(self, size: Tuple[int, int]) -> np.ndarray:
        """H×W bool, True = ego, for an image of ``size`` (height, width); read-only."""
        size = (int(size[0]), int(size[1]))
        mask = self._masks.get(size)
        if mask is None:
            mask = self._render(size).astype(bool)
            mask.flags.writeable = False
            self._masks[size] = mask
            self._warn_if_everything(mask)
        return mask

    def covers_everything(self) -> bool:
        """Whether every pixel is ego (checked on the PNG as given, a polygon at 64×64), for a
        warning when the mask is loaded."""
        if self._image is not None:
            return bool(self._image.all())
        return bool(self._render((64, 64)).all())

    def _render(self, size: Tuple[int, int]) -> np.ndarray:
        height, width = size
        if self._image is not None:
            if self._image.shape == size:
                return self._image
            return cv2.resize(self._image, (width, height), interpolation=NEAREST)
        mask = np.zeros(size, np.uint8)
        # Normalised -> pixel-centre coordinates, in fillPoly's fixed point.
        pixels = (self._polygon * (width, height) - 0.5) * (1 << _SHIFT)
        cv2.fillPoly(mask, [np.rint(pixels).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
        return mask

    def _warn_if_everything(self, mask: np.ndarray) -> None:
        if not self._warned and mask.all():
            self._warned = True
            LOG.warning('%s covers the whole image: every pixel is ego vehicle, nothing this '
                        'camera sees can be drivable', self.source)
