"""A camera model from the numbers of a sensor_msgs/CameraInfo: pixel rays and projection.

Distortion models (ROS's names): ``plumb_bob`` (k1, k2, t1, t2, k3) and
``rational_polynomial`` (k1, k2, t1, t2, k3, k4, k5, k6) are OpenCV's standard model
(cv2.undistortPoints / cv2.projectPoints); ``equidistant`` (k1, k2, k3, k4) is OpenCV's
fisheye model (cv2.fisheye.*). An empty D means no distortion.

Pixel coordinates follow CameraInfo and OpenCV: (u, v) = (column, row) with integer values
at pixel centres. CameraInfo's binning and ROI are not modelled: the model describes the
full image the camera publishes (a node given binning or an ROI should say so and not use it).

Rays are only defined less than 90° from the optical axis (x/z, y/z must be finite), which
also holds for OpenCV's fisheye functions. Points whose undistorted radius lies beyond the
image's border are not projected: a polynomial distortion folds far-off points back into the
image, and they would land on pixels that never saw them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError

# distortion model -> number of coefficients in D
DISTORTION_MODELS = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
_BORDER_MARGIN = 1.0005     # the undistorted border radius, a hair wider for rounding


class CameraModelError(InvalidValueError):
    """CameraInfo numbers that do not describe a usable camera."""


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics and distortion of one camera at one image size; hashable, so cacheable.

    ``k``: the 3×3 intrinsic matrix K, row-major (9 numbers); ``d``: the distortion
    coefficients D of ``distortion_model``.
    """

    width: int
    height: int
    k: Tuple[float, ...]
    d: Tuple[float, ...] = ()
    distortion_model: str = 'plumb_bob'

    def __post_init__(self):
        where = 'camera_info'
        if self.distortion_model not in DISTORTION_MODELS:
            raise CameraModelError(f'{where}: unknown distortion model '
                                   f'{self.distortion_model!r}; supported: '
                                   f'{", ".join(DISTORTION_MODELS)}')
        width, height = _size(self.width, 'width'), _size(self.height, 'height')
        k = _numbers(self.k, 'K')
        d = _numbers(self.d, 'D')
        if len(k) != 9:
            raise CameraModelError(f'{where}: K has {len(k)} numbers, expected 9 (3×3 row-major)')
        fx, fy = k[0], k[4]
        if fx <= 0 or fy <= 0:
            raise CameraModelError(f'{where}: K has focal length fx={fx:g}, fy={fy:g}; both '
                                   'must be > 0 (an uncalibrated camera publishes zeros)')
        if k[3] != 0 or k[6] != 0 or k[7] != 0 or k[8] != 1:
            raise CameraModelError(f'{where}: K is not an intrinsic matrix (expected '
                                   f'[fx s cx; 0 fy cy; 0 0 1], got {list(k)})')
        expected = DISTORTION_MODELS[self.distortion_model]
        if len(d) not in (0, expected):
            raise CameraModelError(f'{where}: D has {len(d)} coefficients; '
                                   f'{self.distortion_model} takes {expected}')
        for name, value in (('width', width), ('height', height), ('k', k),
                            ('d', d or (0.0,) * expected)):
            object.__setattr__(self, name, value)

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width), numpy's order."""
        return self.height, self.width

    @property
    def fisheye(self) -> bool:
        return self.distortion_model == 'equidistant'

    def matrix(self) -> np.ndarray:
        return np.asarray(self.k, np.float64).reshape(3, 3)

    def scaled(self, height: int, width: int) -> 'CameraModel':
        """The model of the image resized to height × width (pixel-centre aligned, as
        OpenCV's resizes: u' = (u + 0.5) · sx - 0.5); itself when the size is the same."""
        if (height, width) == self.size:
            return self
        sx, sy = width / float(self.width), height / float(self.height)
        k = list(self.k)
        k[0], k[1], k[2] = k[0] * sx, k[1] * sx, (k[2] + 0.5) * sx - 0.5
        k[4], k[5] = k[4] * sy, (k[5] + 0.5) * sy - 0.5
        return CameraModel(width, height, tuple(k), self.d, self.distortion_model)

    # -- pixels to rays -------------------------------------------------------
    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """N×2 pixel coordinates -> N×2 normalised coordinates (x/z, y/z) of their rays."""
        points = np.ascontiguousarray(pixels, np.float64).reshape(-1, 1, 2)
        k, d = self.matrix(), np.asarray(self.d, np.float64)
        if self.fisheye:
            normalised = cv2.fisheye.undistortPoints(points, k, d, None, None, None,
                                                     _UNDISTORT_CRITERIA)
        else:
            normalised = cv2.undistortPointsIter(points, k, d, None, None, _UNDISTORT_CRITERIA)
        return normalised.reshape(-1, 2)

    def pixel_rays(self) -> np.ndarray:
        """H×W×3 float64: the ray (x/z, y/z, 1) through every pixel centre, optical frame."""
        rows, cols = np.mgrid[0:self.height, 0:self.width]
        pixels = np.stack([cols.ravel(), rows.ravel()], axis=1)
        rays = np.ones((self.height * self.width, 3))
        rays[:, :2] = self.undistort(pixels)
        return rays.reshape(self.height, self.width, 3)

    @cached_property
    def max_radius(self) -> float:
        """The largest undistorted radius (√(x² + y²) of x/z, y/z) on the image border."""
        w, h = self.width - 1, self.height - 1
        steps = max(self.width, self.height)
        t = np.linspace(0.0, 1.0, steps)
        border = np.concatenate([np.stack([t * w, np.zeros(steps)], 1),
                                 np.stack([t * w, np.full(steps, h)], 1),
                                 np.stack([np.zeros(steps), t * h], 1),
                                 np.stack([np.full(steps, w), t * h], 1)])
        return float(np.hypot(*self.undistort(border).T).max() * _BORDER_MARGIN)

    # -- points to pixels -----------------------------------------------------
    def project(self, points: np.ndarray) -> np.ndarray:
        """N×3 points in the optical frame -> N×2 pixel coordinates; NaN for a point behind
        the camera or outside the field of view (beyond the image border's radius)."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        pixels = np.full((len(points), 2), np.nan)
        z = points[:, 2]
        ahead = z > 1e-9
        radius = np.full(len(points), np.inf)
        radius[ahead] = np.hypot(points[ahead, 0], points[ahead, 1]) / z[ahead]
        visible = np.flatnonzero(radius <= self.max_radius)
        if visible.size == 0:
            return pixels
        chosen = np.ascontiguousarray(points[visible]).reshape(-1, 1, 3)
        k, d = self.matrix(), np.asarray(self.d, np.float64)
        zero = np.zeros(3)
        if self.fisheye:
            projected, _ = cv2.fisheye.projectPoints(chosen, zero, zero, k, d)
        else:
            projected, _ = cv2.projectPoints(chosen, zero, zero, k, d)
        pixels[visible] = projected.reshape(-1, 2)
        return pixels


def _size(value, what: str) -> int:
    if isinstance(value, float) and not value.is_integer() or int(value) <= 0:
        raise CameraModelError(f'camera_info: {what} must be a positive whole number, got '
                               f'{value!r}')
    return int(value)


def _numbers(values: Sequence[float], what: str) -> Tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in np.asarray(values, np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise CameraModelError(f'camera_info: {what} must be numbers, got {values!r}') from None
    if not np.isfinite(numbers).all():
        raise CameraModelError(f'camera_info: {what} has NaN or infinite values')
    return numbers
