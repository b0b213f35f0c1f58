"""Organised ground points against closed form: known cameras above flat ground."""
import math

import numpy as np
import pytest

import ground_scenes as scenes
from seg_perception.ground.projection import (GroundGeometryError, GroundPlane,
                                              GroundProjector)
from seg_perception.ground.transforms import TransformError

# name -> (distortion, mount)
SETUPS = {
    'pinhole, pitched': ('pinhole', scenes.mount(pitch=8)),
    'plumb_bob k1 != 0': ('plumb_bob', scenes.mount(pitch=8)),
    'rational_polynomial': ('rational_polynomial', scenes.mount(pitch=10)),
    'equidistant': ('equidistant', scenes.mount(pitch=12)),
    'rolled on its mount': ('pinhole', scenes.mount(roll=6, pitch=8)),
    'yawed on its mount': ('plumb_bob', scenes.mount(x=1.0, y=0.4, yaw=30, pitch=9)),
    'looking backwards': ('plumb_bob', scenes.mount(x=-1.0, z=1.2, yaw=180, pitch=10)),
}
PIXELS = [(320, 470), (50, 400), (600, 300), (330, 260), (100, 250), (500, 420)]


def tolerance(point, camera_to_frame):
    ground_range = np.hypot(*(point[:2] - camera_to_frame[:2, 3]))
    return max(0.01, 0.005 * ground_range)


@pytest.mark.parametrize('setup', sorted(SETUPS))
def test_ground_points_of_known_pixels_land_where_the_camera_sees_them(setup):
    distortion, camera_to_vehicle = SETUPS[setup]
    model = scenes.camera(distortion)
    projector = GroundProjector(GroundPlane(0.0, 40.0))
    points = projector.points(model, camera_to_vehicle, (480, 640))
    assert points.shape == (480, 640, 3) and points.dtype == np.float32
    checked = 0
    for u, v in PIXELS:
        truth = scenes.ground_point_of_pixel(model, camera_to_vehicle, u, v)
        if np.hypot(*(truth[:2] - camera_to_vehicle[:2, 3])) > 40:
            continue
        assert np.abs(points[v, u] - truth).max() <= tolerance(truth, camera_to_vehicle), \
            (setup, u, v, points[v, u], truth)
        checked += 1
    assert checked >= 4


def test_pinhole_points_match_the_closed_form_everywhere_below_the_horizon():
    model = scenes.camera('pinhole', 160, 120, focal=125.0)
    camera_to_vehicle = scenes.mount(z=1.5, pitch=8)
    projector = GroundProjector(GroundPlane(0.0, 25.0))
    points = projector.points(model, camera_to_vehicle, (120, 160))
    rows, cols = np.mgrid[0:120, 0:160]
    pitch = math.radians(8)
    a, b = (cols - model.k[2]) / model.k[0], (rows - model.k[5]) / model.k[4]
    # The ray (a, b, 1) in the vehicle frame: (cos p - b sin p, -a, -sin p - b cos p).
    with np.errstate(divide='ignore'):
        distance = 1.5 / (math.sin(pitch) + b * math.cos(pitch))
    x = distance * (math.cos(pitch) - b * math.sin(pitch))
    y = -a * distance
    expected_valid = (distance > 0) & (np.hypot(x, y) <= 25.0)
    valid = ~np.isnan(points[..., 0])
    # Rays above or at the horizon, or past range: NaN; the rest exact.
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_allclose(points[..., 0][valid & expected_valid],
                               x[valid & expected_valid], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(points[..., 1][valid & expected_valid],
                               y[valid & expected_valid], rtol=1e-5, atol=1e-4)
    assert (points[..., 2][valid] == 0).all() and np.isnan(points[..., 2][~valid]).all()


def test_labels_of_another_size_get_a_scaled_camera():
    model = scenes.camera('plumb_bob')
    camera_to_vehicle = scenes.mount(pitch=8)
    small = GroundProjector(GroundPlane(0.0, 40.0)).points(model, camera_to_vehicle, (120, 160))
    assert small.shape == (120, 160, 3)
    # Pixel (u, v) of the 160×120 labels is pixel (4u + 1.5, 4v + 1.5) of the camera.
    for u, v in [(80, 117), (20, 100), (150, 75)]:
        truth = scenes.ground_point_of_pixel(model, camera_to_vehicle, 4 * u + 1.5, 4 * v + 1.5)
        assert np.abs(small[v, u] - truth).max() <= tolerance(truth, camera_to_vehicle)


def test_points_are_cached_per_geometry_and_recomputed_when_it_changes():
    projector = GroundProjector(GroundPlane(0.0, 20.0))
    model = scenes.camera('pinhole', 160, 120, focal=125.0)
    first = projector.points(model, scenes.mount(pitch=8), (120, 160))
    again = projector.points(scenes.camera('pinhole', 160, 120, focal=125.0),
                             scenes.mount(pitch=8), (120, 160))
    assert again is first and not first.flags.writeable
    moved = projector.points(model, scenes.mount(pitch=8, z=1.6), (120, 160))
    assert moved is not first
    assert np.nanmax(np.abs(moved - first)) > 0.05
    recalibrated = projector.points(scenes.camera('pinhole', 160, 120, focal=130.0),
                                    scenes.mount(pitch=8), (120, 160))
    assert recalibrated is not first


def test_a_camera_looking_up_sees_no_ground():
    model = scenes.camera('pinhole', 160, 120, focal=125.0)
    points = GroundProjector().points(model, scenes.mount(pitch=-40), (120, 160))
    assert np.isnan(points).all()


@pytest.mark.parametrize('transform, error, message', [
    (scenes.mount(z=-0.5), GroundGeometryError, 'not above the ground plane'),
    (np.eye(3), TransformError, 'expected a 4×4 matrix'),
    (np.diag([2.0, 1, 1, 1]), TransformError, 'not a rigid transform'),
    (np.full((4, 4), np.nan), TransformError, 'NaN'),
])
def test_bad_placements_are_named(transform, error, message):
    with pytest.raises(error, match=message):
        GroundProjector().points(scenes.camera('pinhole', 160, 120), transform, (120, 160))


def test_bad_planes_are_named():
    with pytest.raises(GroundGeometryError, match='max_range_m must be > 0'):
        GroundPlane(0.0, 0.0)
