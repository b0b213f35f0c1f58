"""Drivable-area mask from a class-id image: which classes, ego region, small holes.

The drivable classes come from the model metadata (``ModelInfo.drivable_ids``)
and can be overridden by ids or class names. Two optional clean-ups:

* keep only the region connected to the ego vehicle: the drivable components
  that reach the bottom centre of the image (the central third of the width in
  the bottom third of the height, so a visible bonnet does not hide the road);
* fill holes: non-drivable components smaller than N pixels become drivable
  (a manhole cover or a shadow classified as something else).

Everything is OpenCV on uint8 images with preallocated scratch buffers, a few
milliseconds at 1080p. No torch.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.labels import EGO_ID

DRIVABLE = 255
# Pixel-centre aligned nearest neighbour (plain INTER_NEAREST is shifted by half a pixel).
NEAREST = getattr(cv2, 'INTER_NEAREST_EXACT', cv2.INTER_NEAREST)
ClassSpec = Union[None, str, int, Sequence[Union[int, str]]]


def resolve_drivable_ids(class_names: Sequence[str], default_ids: Sequence[int],
                         classes: ClassSpec = None) -> Tuple[int, ...]:
    """The drivable class ids: ``default_ids`` unless ``classes`` overrides them.

    ``classes`` may be ids, class names (case-insensitive), a mix, or one string
    of comma-separated names/ids ("road,parking"). An unknown name or an id out of
    range raises ValueError naming it and the known classes.
    """
    if classes is None:
        chosen = list(default_ids)
    else:
        if isinstance(classes, (str, int, np.integer)):
            classes = [c.strip() for c in str(classes).split(',') if c.strip()]
        lowered = [n.lower() for n in class_names]
        chosen = []
        for item in classes:
            text = str(item).strip()
            if isinstance(item, (int, np.integer)) or text.isdigit():
                class_id = int(text)
                if not 0 <= class_id < len(class_names):
                    raise InvalidValueError(f'drivable class id {class_id} out of range: the model '
                                            f'has {len(class_names)} classes '
                                            f'(0..{len(class_names) - 1})')
            elif text.lower() in lowered:
                class_id = lowered.index(text.lower())
            else:
                raise InvalidValueError(f'unknown drivable class {text!r}; the model\'s classes: '
                                        f'{", ".join(class_names)}')
            chosen.append(class_id)
    return tuple(sorted(set(int(i) for i in chosen)))


class DrivableMasker:
    """Turns H×W uint8 class ids into an H×W uint8 mask, 255 = drivable, 0 = not.

    Scratch buffers are kept per image size, so repeated calls at the same
    resolution allocate nothing but what the caller does not pass in.
    """

    def __init__(self, drivable_ids: Sequence[int], keep_ego_region: bool = False,
                 fill_holes_px: int = 0, ego_width_fraction: float = 1 / 3,
                 ego_search_fraction: float = 1 / 3):
        """``ego_width_fraction``: central share of the width searched for the ego
        seed; ``ego_search_fraction``: share of the height, from the bottom, searched
        for the lowest drivable row (a bonnet may cover the bottom rows)."""
        if fill_holes_px < 0:
            raise InvalidValueError(f'fill_holes_px must be >= 0, got {fill_holes_px}')
        if not 0 < ego_width_fraction <= 1 or not 0 < ego_search_fraction <= 1:
            raise InvalidValueError('ego_width_fraction and ego_search_fraction must be in (0, 1]')
        self.drivable_ids = tuple(int(i) for i in drivable_ids)
        self.keep_ego_region = bool(keep_ego_region)
        self.fill_holes_px = int(fill_holes_px)
        self.ego_width_fraction = float(ego_width_fraction)
        self.ego_search_fraction = float(ego_search_fraction)
        self._lut = np.zeros(256, np.uint8)
        self._lut[list(self.drivable_ids)] = DRIVABLE
        self._scratch: Dict[tuple, np.ndarray] = {}

    def _buffer(self, name: str, shape: tuple, dtype) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).str)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = np.empty(shape, dtype)
        return buf

    def __call__(self, labels: np.ndarray, out: Optional[np.ndarray] = None,
                 size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """The drivable mask of ``labels``, written into ``out`` when given.

        ``size`` (height, width): return the mask at this size, computed at the
        labels' size and resized nearest-neighbour (pixel-centre aligned), the way the
        pipeline upsamples network-size labels; the hole area is scaled to match. It
        equals the mask of the upsampled labels and, with the ego region or hole filling
        on, costs far less at camera size (benchmarks/DESIGN.md).
        """
        if labels.dtype != np.uint8 or labels.ndim != 2:
            raise InvalidValueError(f'labels must be an H×W uint8 image, got {labels.dtype} '
                                    f'{labels.shape}')
        size = labels.shape if size is None else tuple(size)
        if out is None:
            out = np.empty(size, np.uint8)
        if out.shape != size or out.dtype != np.uint8:
            raise InvalidValueError(f'out must be a uint8 {size} array, got {out.dtype} '
                                    f'{out.shape}')
        resized = size != labels.shape
        mask = self._buffer('mask', labels.shape, np.uint8) if resized else out
        cv2.LUT(labels, self._lut, dst=mask)
        if self.keep_ego_region:
            keep_ego_component(mask, self.ego_width_fraction, self.ego_search_fraction,
                               components=self._buffer('cc', mask.shape, np.uint16))
        if self.fill_holes_px:
            scale = labels.shape[0] * labels.shape[1] / float(size[0] * size[1])
            fill_small_holes(mask, max(1, int(round(self.fill_holes_px * scale))),
                             inverted=self._buffer('inv', mask.shape, np.uint8),
                             components=self._buffer('cc', mask.shape, np.uint16),
                             fill=self._buffer('fill', mask.shape, np.uint8))
        if resized:
            cv2.resize(mask, (size[1], size[0]), dst=out, interpolation=NEAREST)
        return out


def _components(binary: np.ndarray, connectivity: int, buffer: Optional[np.ndarray]):
    """(count, component ids) of a 0/255 image; ids in ``buffer`` (uint16) when they fit.

    16-bit ids reuse the caller's scratch buffer and let cv2.calcHist count areas (faster
    than bincount, benchmarks/DESIGN.md); past 65535 components (a speckled mask) they
    are 32-bit.
    """
    try:
        return cv2.connectedComponents(binary, buffer, connectivity, cv2.CV_16U)
    except cv2.error:
        return cv2.connectedComponents(binary, None, connectivity, cv2.CV_32S)


def keep_ego_component(mask: np.ndarray, width_fraction: float = 1 / 3,
                       search_fraction: float = 1 / 3,
                       components: Optional[np.ndarray] = None) -> np.ndarray:
    """Keep only the drivable components that reach the bottom centre; in place.

    The bottom centre is the central ``width_fraction`` of the width in the bottom
    ``search_fraction`` of the height; every 4-connected drivable component with a pixel
    there is kept. A region, not the lowest row: a visible bonnet often reflects the
    road and is labelled road in patches, and a seed taken only from those patches would
    drop the road ahead (seen on the comma10k frames). Nothing drivable there: the mask
    becomes empty. ``components``: an optional uint16 scratch buffer of the mask's size.
    """
    height, width = mask.shape
    half = max(1, int(round(width * width_fraction / 2)))
    x0, x1 = max(0, width // 2 - half), min(width, width // 2 + half)
    top = max(0, height - max(1, int(round(height * search_fraction))))
    count, components = _components(mask, 4, components)
    keep = np.zeros(count, np.uint8)
    keep[components[top:, x0:x1]] = DRIVABLE    # every component with a pixel there
    keep[0] = 0                                  # component 0: the non-drivable pixels
    np.take(keep, components, out=mask, mode='clip')   # 'clip': no temporary copy
    return mask


def fill_small_holes(mask: np.ndarray, max_area_px: int,
                     inverted: Optional[np.ndarray] = None,
                     components: Optional[np.ndarray] = None,
                     fill: Optional[np.ndarray] = None) -> np.ndarray:
    """Make non-drivable components smaller than ``max_area_px`` drivable; in place.

    Components are 8-connected (the dual of the 4-connected drivable region).
    The optional arrays are scratch buffers of the mask's size (uint8, uint16, uint8).
    """
    if max_area_px <= 0:
        return mask
    inverted = cv2.bitwise_not(mask, dst=inverted)
    count, components = _components(inverted, 8, components)
    if components.dtype == np.uint16:
        areas = cv2.calcHist([components], [0], None, [count], [0, count]).reshape(-1)
    else:
        areas = np.bincount(components.reshape(-1), minlength=count)
    if count <= 1:
        return mask
    small = areas < max_area_px
    small[0] = False        # component 0 is the drivable area itself
    if not small.any():
        return mask
    lut = np.where(small, DRIVABLE, 0).astype(np.uint8)
    if fill is None:
        fill = np.empty_like(mask)
    np.take(lut, components, out=fill, mode='clip')   # 'clip': no temporary copy
    cv2.bitwise_or(mask, fill, dst=mask)
    return mask


class EgoMasks:
    """Applies per-camera ego-vehicle masks: ego pixels get EGO_ID and are never drivable.

    A mask is H×W, non-zero = ego, at any size; it is resized (nearest, pixel-centre
    aligned) once per result size and kept, keyed by the mask array itself: pass the same
    array for a camera every frame, and a new array when its mask changes.
    """

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._resized: Dict[Tuple[int, Tuple[int, int]], tuple] = {}

    def apply(self, ego: np.ndarray, labels: np.ndarray, drivable: np.ndarray) -> None:
        """Write the ego pixels into ``labels`` and ``drivable`` (both H×W uint8), in place."""
        keep, ego_ids = self._at(ego, labels.shape)
        cv2.bitwise_and(drivable, keep, dst=drivable)
        cv2.bitwise_and(labels, keep, dst=labels)
        cv2.bitwise_or(labels, ego_ids, dst=labels)

    def _at(self, ego: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        """(keep: 0 on ego / 255 elsewhere, ego_ids: EGO_ID on ego / 0) at ``size``."""
        key = (id(ego), tuple(size))
        entry = self._resized.get(key)
        if entry is None:       # the entry holds the mask, so its id is not reused meanwhile
            if len(self._resized) >= self.max_entries:
                self._resized.clear()
            binary = (ego != 0).view(np.uint8)
            if binary.shape != tuple(size):
                binary = cv2.resize(binary, (size[1], size[0]), interpolation=NEAREST)
            keep = np.where(binary != 0, 0, 255).astype(np.uint8)
            entry = self._resized[key] = (ego, keep, np.where(binary != 0, EGO_ID, 0)
                                          .astype(np.uint8))
        return entry[1], entry[2]
