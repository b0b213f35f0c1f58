"""Organised ground points: where each pixel's ray meets the ground plane.

For labels of size H × W (which may differ from the CameraInfo size: K is scaled to it),
every pixel's ray in the camera optical frame is moved into the ground frame by the
camera → ground transform and intersected with the plane z = ``height`` of that frame.
The result is H×W×3 float32 (x, y, z) in the ground frame, pixel-aligned with the labels,
NaN where the ray points up or along the horizon, or meets the ground farther than
``max_range_m`` (measured on the ground from the point below the camera).

The points depend only on (camera model, transform, size, plane), so they are computed
once and cached; the rays alone (camera model and size) are cached too, so a moving
mount only redoes the intersection. Per frame, a lookup.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.ground.cache import LruCache
from seg_perception.ground.camera import CameraModel
from seg_perception.ground.transforms import rigid_transform, transform_key


class GroundGeometryError(InvalidValueError):
    """A ground plane, grid or camera placement the geometry cannot use."""


@dataclass(frozen=True)
class GroundPlane:
    """The plane z = ``height`` of the ground frame, used out to ``max_range_m``."""

    height: float = 0.0
    max_range_m: float = 30.0

    def __post_init__(self):
        if not math.isfinite(self.height):
            raise GroundGeometryError(f'ground height must be finite, got {self.height}')
        if not (math.isfinite(self.max_range_m) and self.max_range_m > 0):
            raise GroundGeometryError(f'ground max_range_m must be > 0, got {self.max_range_m}')

    def camera_origin(self, camera_to_ground: np.ndarray, what: str) -> np.ndarray:
        """The camera's position in the ground frame; an error if it is not above the plane."""
        origin = camera_to_ground[:3, 3]
        if origin[2] <= self.height:
            raise GroundGeometryError(f'{what}: the camera is at z={origin[2]:.3f} m, not above '
                                      f'the ground plane z={self.height:g} m (wrong transform '
                                      'or ground height?)')
        return origin


def intersect(rays: np.ndarray, camera_to_ground: np.ndarray, plane: GroundPlane,
              what: str = 'camera') -> np.ndarray:
    """Where ``rays`` (…×3, optical frame) meet the plane, in the ground frame; NaN where not."""
    origin = plane.camera_origin(camera_to_ground, what)
    directions = rays @ camera_to_ground[:3, :3].T
    with np.errstate(divide='ignore', invalid='ignore'):
        distance = (plane.height - origin[2]) / directions[..., 2]
    # Down-pointing rays only (the camera is above the plane): distance > 0 and finite.
    distance[~(distance > 0) | ~np.isfinite(distance)] = np.nan
    points = origin + directions * distance[..., np.newaxis]
    ground_range = np.hypot(points[..., 0] - origin[0], points[..., 1] - origin[1])
    with np.errstate(invalid='ignore'):
        points[ground_range > plane.max_range_m] = np.nan
    points[..., 2] = np.where(np.isnan(points[..., 0]), np.nan, plane.height)
    return points


class GroundProjector:
    """Organised ground points per (camera model, transform, size), computed once and cached."""

    def __init__(self, plane: GroundPlane = GroundPlane(), cache_size: int = 8):
        self.plane = plane
        self._rays = LruCache(cache_size)
        self._points = LruCache(cache_size)

    def points(self, camera: CameraModel, camera_to_ground, size: Tuple[int, int]) -> np.ndarray:
        """H×W×3 float32 ground points for labels of ``size`` (height, width); read-only.

        ``camera_to_ground``: 4×4, maps optical-frame points into the ground frame (tf2's
        ``lookup_transform(ground_frame, optical_frame)``).
        """
        size = (int(size[0]), int(size[1]))
        key = (camera, transform_key(camera_to_ground), size)
        return self._points.get(key, lambda: self._compute(camera, camera_to_ground, size))

    def _compute(self, camera: CameraModel, camera_to_ground, size) -> np.ndarray:
        transform = rigid_transform(camera_to_ground, 'camera → ground transform')
        scaled = camera.scaled(*size)
        rays = self._rays.get(scaled, scaled.pixel_rays)
        points = intersect(rays, transform, self.plane).astype(np.float32)
        points.flags.writeable = False      # shared by every frame of this geometry
        return points
