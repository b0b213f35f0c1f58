"""Ground-plane messages as plain data (no rclpy): CameraInfo fields to a CameraModel, a
tf transform to a 4×4 matrix, the layout of the organised ground-point cloud and of the
drivable OccupancyGrid.

The node (ros/ground_node.py) fills its message classes from these; anything with the
same field names (rclpy or rosbags messages) converts alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

from seg_perception.ground.camera import CameraModel, CameraModelError
from seg_perception.ground.grid import DrivableGrid

# sensor_msgs/PointField: (name, byte offset); every field is FLOAT32 (datatype 7), count 1.
POINT_FIELDS: Tuple[Tuple[str, int], ...] = (('x', 0), ('y', 4), ('z', 8))
FLOAT32 = 7
POINT_STEP = 12


def camera_info_key(info) -> tuple:
    """The CameraInfo numbers the camera model depends on: equal keys, equal models."""
    roi = getattr(info, 'roi', None)
    return (int(info.width), int(info.height), tuple(float(v) for v in info.k),
            tuple(float(v) for v in info.d), str(info.distortion_model),
            int(getattr(info, 'binning_x', 0)), int(getattr(info, 'binning_y', 0)),
            (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
            if roi is not None else (0, 0, 0, 0))


def camera_model(info) -> CameraModel:
    """The model of a CameraInfo (or its :func:`camera_info_key`); CameraModelError naming
    the problem when it is unusable (zero focal length, unknown distortion model, ...)."""
    key = info if isinstance(info, tuple) else camera_info_key(info)
    width, height, k, d, distortion_model, binning_x, binning_y, roi = key
    if binning_x > 1 or binning_y > 1:
        raise CameraModelError(f'camera_info: binning {binning_x}×{binning_y} is not supported '
                               '(publish the full-resolution calibration)')
    if roi[2] and roi[3] and (roi[2], roi[3]) != (width, height):
        raise CameraModelError(f'camera_info: a region of interest ({roi[2]}×{roi[3]} at '
                               f'{roi[0]}, {roi[1]}) is not supported')
    # An uncalibrated driver leaves distortion_model empty with an empty D: no distortion.
    return CameraModel(width, height, k, d, distortion_model or 'plumb_bob')


def transform_matrix(translation, rotation) -> np.ndarray:
    """4×4 matrix of a tf transform: ``translation`` (x, y, z) and the unit quaternion
    ``rotation`` (x, y, z, w), objects with those attributes or sequences in that order."""
    tx, ty, tz = _xyz(translation)
    x, y, z = _xyz(rotation)
    w = float(rotation.w if hasattr(rotation, 'w') else rotation[3])
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(norm) or norm == 0:
        return np.full((4, 4), np.nan)      # rigid_transform() names it as not usable
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), tx],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), ty],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), tz],
        [0.0, 0.0, 0.0, 1.0]])


def _xyz(value) -> Tuple[float, float, float]:
    if hasattr(value, 'x'):
        return float(value.x), float(value.y), float(value.z)
    return float(value[0]), float(value[1]), float(value[2])


@dataclass(frozen=True)
class CloudLayout:
    """An organised PointCloud2's size and bytes (fields: POINT_FIELDS, little-endian)."""

    height: int
    width: int
    point_step: int
    row_step: int
    data: bytes


def ground_cloud(points: np.ndarray) -> CloudLayout:
    """The organised cloud of H×W×3 float32 ground points (NaN: no ground there)."""
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f'ground points must be H×W×3, got {points.shape}')
    height, width = points.shape[:2]
    data = np.ascontiguousarray(points, '<f4').tobytes()
    return CloudLayout(height, width, POINT_STEP, POINT_STEP * width, data)


@dataclass(frozen=True)
class GridLayout:
    """An OccupancyGrid's info and data: origin (x, y) of cell (0, 0)'s outer corner."""

    width: int
    height: int
    resolution: float
    origin: Tuple[float, float]
    data: Any                   # cells × cells int8, row-major


def grid_layout(grid: DrivableGrid) -> GridLayout:
    """What to publish of ``grid`` now."""
    occupancy = grid.occupancy()
    return GridLayout(occupancy.shape[1], occupancy.shape[0], float(grid.resolution),
                      grid.origin, occupancy)
