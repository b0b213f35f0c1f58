"""The U-Net border weight map (Ronneberger et al. 2015), in NumPy and OpenCV.

``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` where d1 and d2 are the
distances from pixel x to the nearest and the second-nearest object. Objects are the
8-connected components of every class except ``background_ids``, so inside an object
d1 = 0 and d2 is the distance to the closest other segment. With ``background_ids=(0,)``
on a cells-versus-background image this is the paper's map. ``w_c`` is the class weight
of the pixel's class when ``class_weights`` are given, else the per-image inverse class
frequency scaled to average 1 over the counted pixels (``class_balance='image'``), or 1
(``'none'``). Used by the ``boundary_ce`` loss (:mod:`seg_perception.training.losses`);
no torch here, so a dataset can also precompute the maps.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError


def boundary_weight_map(label: np.ndarray, ignore_index: int = 255, w0: float = 10.0,
                        sigma: float = 5.0, class_weights: Optional[Sequence[float]] = None,
                        background_ids: Sequence[int] = (), class_balance: str = 'image'
                        ) -> np.ndarray:
    """The U-Net weight map of one H×W label image (float32, 0 on ignored pixels).

    See the module docstring for the definition. Components are 8-connected. For speed a
    component's distances are computed only within ``6 sigma`` of its bounding box; beyond
    that the border term is below ``w0 * exp(-18)`` and is taken as 0.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise InvalidValueError(f'boundary_weight_map expects an H×W label image, got '
                                f'{label.shape}')
    if sigma <= 0:
        raise InvalidValueError(f'sigma must be positive, got {sigma}')
    if class_balance not in ('image', 'none'):
        raise InvalidValueError(f"class_balance must be 'image' or 'none', got {class_balance!r}")
    valid = label != ignore_index
    classes, counts = np.unique(label[valid], return_counts=True)
    weights = np.zeros(label.shape, np.float32)
    # The class-balancing part w_c.
    for cls, count in zip(classes, counts):
        if class_weights is not None:
            if not 0 <= cls < len(class_weights):
                raise InvalidValueError(f'label id {cls} has no class weight ({len(class_weights)} '
                                        f'given)')
            value = float(class_weights[cls])
        elif class_balance == 'image':
            value = valid.sum() / (len(classes) * count)
        else:
            value = 1.0
        weights[label == cls] = value
    # The border part: running nearest and second-nearest object distances.
    nearest = np.full(label.shape, np.inf, np.float32)
    second = np.full(label.shape, np.inf, np.float32)
    margin = int(math.ceil(6 * sigma))
    height, width = label.shape
    skip = {int(i) for i in background_ids}
    for cls in classes:
        if int(cls) in skip:
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (label == cls).astype(np.uint8), connectivity=8)
        for index in range(1, count):
            x, y, w, h = stats[index, :4]
            top, bottom = max(0, y - margin), min(height, y + h + margin)
            left, right = max(0, x - margin), min(width, x + w + margin)
            outside = (components[top:bottom, left:right] != index).astype(np.uint8)
            distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            near, sec = nearest[top:bottom, left:right], second[top:bottom, left:right]
            second[top:bottom, left:right] = np.minimum(sec, np.maximum(near, distance))
            nearest[top:bottom, left:right] = np.minimum(near, distance)
    with np.errstate(over='ignore', invalid='ignore'):
        border = w0 * np.exp(-((nearest + second) ** 2) / (2.0 * sigma ** 2))
    border[~np.isfinite(border)] = 0.0
    weights += border.astype(np.float32)
    weights[~valid] = 0.0
    return weights
