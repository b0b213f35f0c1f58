"""Scenes with known geometry for the ground tests: cameras on a vehicle above flat ground.

Frames: the vehicle frame is x forward, y left, z up, the ground z = 0; the optical frame
is x right, y down, z forward. ``mount`` gives the camera → vehicle transform of a camera
at (x, y, z) turned by roll, pitch (positive: looking down) and yaw (positive: to the left).

The oracles here use OpenCV's forward projection (cv2.projectPoints, the textbook camera
model) or, for a pinhole camera, the closed-form ray through a pixel; the package's own
inverse mapping (undistortion, lookup tables) is what the tests check against them.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from seg_perception.ground.camera import CameraModel

OPTICAL_TO_VEHICLE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
DISTORTIONS = {
    'pinhole': ('plumb_bob', ()),
    'plumb_bob': ('plumb_bob', (-0.3, 0.09, 0.001, -0.002, -0.01)),
    'rational_polynomial': ('rational_polynomial',
                            (-0.25, 0.05, 0.001, 0.0005, 0.0, 0.02, 0.01, 0.001)),
    'equidistant': ('equidistant', (0.05, -0.01, 0.002, -0.0005)),
}


def rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {'x': np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            'y': np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            'z': np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def mount(x=0.0, y=0.0, z=1.5, roll=0.0, pitch=8.0, yaw=0.0) -> np.ndarray:
    """Camera → vehicle transform; angles in degrees."""
    transform = np.eye(4)
    transform[:3, :3] = (rotation('z', math.radians(yaw)) @ rotation('y', math.radians(pitch))
                         @ rotation('x', math.radians(roll)) @ OPTICAL_TO_VEHICLE)
    transform[:3, 3] = (x, y, z)
    return transform


def pose(x=0.0, y=0.0, yaw=0.0) -> np.ndarray:
    """Vehicle → grid-frame transform of a vehicle at (x, y) heading ``yaw`` degrees."""
    transform = np.eye(4)
    transform[:3, :3] = rotation('z', math.radians(yaw))
    transform[:3, 3] = (x, y, 0.0)
    return transform


def camera(distortion='pinhole', width=640, height=480, focal=500.0) -> CameraModel:
    model, d = DISTORTIONS[distortion]
    return CameraModel(width, height, (focal, 0, width / 2 - 0.5 + 3.0, 0, focal,
                                       height / 2 - 0.5 - 2.0, 0, 0, 1), d, model)


def project(model: CameraModel, camera_to_frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """N×3 points of the frame -> N×2 pixels, with OpenCV's forward model."""
    to_camera = np.linalg.inv(camera_to_frame)
    local = np.asarray(points, np.float64) @ to_camera[:3, :3].T + to_camera[:3, 3]
    k, d, zero = model.matrix(), np.asarray(model.d, np.float64), np.zeros(3)
    if model.fisheye:
        pixels, _ = cv2.fisheye.projectPoints(local.reshape(-1, 1, 3), zero, zero, k, d)
    else:
        pixels, _ = cv2.projectPoints(local, zero, zero, k, d)
    return pixels.reshape(-1, 2)


def ground_point_of_pixel(model, camera_to_frame, u: float, v: float) -> np.ndarray:
    """The ground point (z = 0) that ``model`` images at pixel (u, v): Newton's method on
    the forward projection, started from the undistorted pinhole guess."""
    rotation_, origin = camera_to_frame[:3, :3], camera_to_frame[:3, 3]
    k = model.matrix()
    ray = rotation_ @ np.linalg.solve(k, [u, v, 1.0])
    guess = origin[:2] + ray[:2] * (-origin[2] / ray[2])
    for _ in range(50):
        here = project(model, camera_to_frame, [[guess[0], guess[1], 0.0]])[0]
        step = 1e-4 * max(1.0, np.hypot(*guess))
        jacobian = np.stack([
            (project(model, camera_to_frame, [[guess[0] + step, guess[1], 0.0]])[0] - here) / step,
            (project(model, camera_to_frame, [[guess[0], guess[1] + step, 0.0]])[0] - here) / step,
        ], axis=1)
        delta = np.linalg.solve(jacobian, np.array([u, v]) - here)
        guess = guess + delta
        if np.abs(delta).max() < 1e-9:
            break
    return np.array([guess[0], guess[1], 0.0])


def road_image(model, camera_to_frame, rectangle, samples=400) -> np.ndarray:
    """H×W uint8, 255 where the camera sees the ground rectangle (x0, x1, y0, y1).

    The rectangle's outline, densely sampled, is projected with OpenCV's forward model and
    filled: straight edges bend with the distortion. The whole rectangle must be in view.
    """
    x0, x1, y0, y1 = rectangle
    t = np.linspace(0, 1, samples, endpoint=False)
    outline = np.concatenate([
        np.stack([x0 + (x1 - x0) * t, np.full_like(t, y0)], 1),
        np.stack([np.full_like(t, x1), y0 + (y1 - y0) * t], 1),
        np.stack([x1 - (x1 - x0) * t, np.full_like(t, y1)], 1),
        np.stack([np.full_like(t, x0), y1 - (y1 - y0) * t], 1)])
    points = np.concatenate([outline, np.zeros((len(outline), 1))], axis=1)
    pixels = project(model, camera_to_frame, points)
    image = np.zeros(model.size, np.uint8)
    cv2.fillPoly(image, [np.rint(pixels * 256).astype(np.int32)], 255, cv2.LINE_8, 8)
    return image


def pinhole_road_image(model, camera_to_frame, rectangle) -> np.ndarray:
    """H×W uint8, 255 where a distortion-free camera's pixel ray meets the rectangle:
    closed form, for scenes where the rectangle is only partly in view."""
    x0, x1, y0, y1 = rectangle
    rows, cols = np.mgrid[0:model.height, 0:model.width]
    pixels = np.stack([cols, rows, np.ones_like(cols)], axis=-1).astype(np.float64)
    rays = pixels @ np.linalg.inv(model.matrix()).T @ camera_to_frame[:3, :3].T
    origin = camera_to_frame[:3, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        distance = -origin[2] / rays[..., 2]
        x = origin[0] + rays[..., 0] * distance
        y = origin[1] + rays[..., 1] * distance
        inside = (distance > 0) & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return np.where(inside, 255, 0).astype(np.uint8)


def cells_inside(grid, rectangle) -> np.ndarray:
    """cells × cells bool: the grid cells whose centre lies in the rectangle (grid frame)."""
    x0, x1, y0, y1 = rectangle
    centres = (np.arange(grid.cells) + 0.5) * grid.resolution
    xs, ys = grid.origin[0] + centres, grid.origin[1] + centres
    return ((ys >= y0) & (ys <= y1))[:, np.newaxis] & ((xs >= x0) & (xs <= x1))[np.newaxis, :]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
