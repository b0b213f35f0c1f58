"""Rigid 4×4 transforms as tf2 gives them: checked once, so a bad one is named, not used."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from seg_perception.errors import InvalidValueError

_TOLERANCE = 1e-4


class TransformError(InvalidValueError):
    """A transform that is not a finite rigid 4×4 matrix."""


def rigid_transform(matrix, what: str) -> np.ndarray:
    """``matrix`` as a float64 4×4 rigid transform; TransformError naming ``what`` if it is not.

    A transform maps points of a source frame into a target frame (tf2's
    ``lookup_transform(target, source)``): ``p_target = T @ p_source``.
    """
    array = np.asarray(matrix, np.float64)
    if array.shape != (4, 4):
        raise TransformError(f'{what}: expected a 4×4 matrix, got shape {array.shape}')
    if not np.isfinite(array).all():
        raise TransformError(f'{what}: has NaN or infinite entries')
    rotation = array[:3, :3]
    if not np.allclose(array[3], (0, 0, 0, 1), atol=_TOLERANCE) or \
            not np.allclose(rotation @ rotation.T, np.eye(3), atol=_TOLERANCE) or \
            np.linalg.det(rotation) < 0:
        raise TransformError(f'{what}: not a rigid transform (rotation not orthonormal or '
                             'last row not 0 0 0 1)')
    return array


def invert(transform: np.ndarray) -> np.ndarray:
    """The inverse of a rigid transform."""
    rotation, translation = transform[:3, :3], transform[:3, 3]
    inverse = np.eye(4)
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ translation
    return inverse


def planar_pose(transform: np.ndarray) -> Tuple[float, float, float]:
    """(x, y, yaw) of a pose: its position and its heading about z, roll and pitch dropped."""
    return (float(transform[0, 3]), float(transform[1, 3]),
            float(np.arctan2(transform[1, 0], transform[0, 0])))


def transform_key(transform) -> bytes:
    """A cache key equal for equal transforms (taken before checking them: the check is
    only needed on a cache miss)."""
    return np.ascontiguousarray(transform, np.float64).tobytes()
