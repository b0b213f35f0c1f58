"""The camera model: CameraInfo numbers checked with one clear line, rays and projection."""
import numpy as np
import pytest

import ground_scenes as scenes
from seg_perception.errors import InvalidValueError
from seg_perception.ground.camera import CameraModel, CameraModelError

K = (500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize('kwargs, message', [
    (dict(k=(0.0, 0, 320, 0, 0.0, 240, 0, 0, 1)), 'focal length fx=0, fy=0'),
    (dict(k=(0.0,) * 9), 'focal length'),
    (dict(k=K[:8]), 'K has 8 numbers, expected 9'),
    (dict(k=(500, 0, 320, 0, 500, 240, 0, 0, 0)), 'K is not an intrinsic matrix'),
    (dict(distortion_model='kannala_brandt'),
     "unknown distortion model 'kannala_brandt'; supported: plumb_bob, rational_polynomial, "
     'equidistant'),
    (dict(d=(0.1, 0.0, 0.0)), 'D has 3 coefficients; plumb_bob takes 5'),
    (dict(d=(0.1,) * 5, distortion_model='equidistant'), 'equidistant takes 4'),
    (dict(d=(float('nan'),) * 5), 'D has NaN'),
    (dict(width=0), 'width must be a positive whole number'),
])
def test_bad_camera_info_is_one_clear_line(kwargs, message):
    fields = dict(width=640, height=480, k=K, d=(), distortion_model='plumb_bob')
    fields.update(kwargs)
    with pytest.raises(CameraModelError) as caught:
        CameraModel(**fields)
    assert isinstance(caught.value, InvalidValueError)
    assert message in str(caught.value) and '\n' not in str(caught.value)


def test_an_empty_d_means_no_distortion_and_models_are_equal_by_value():
    plain = CameraModel(640, 480, K)
    zeros = CameraModel(640, 480, list(K), [0.0] * 5, 'plumb_bob')
    assert plain == zeros and hash(plain) == hash(zeros)
    assert plain.d == (0.0,) * 5


def test_scaling_keeps_pixel_centres_aligned():
    model = CameraModel(640, 480, K)
    half = model.scaled(240, 320)
    assert half.size == (240, 320)
    # Pixel centre u maps to (u + 0.5) / 2 - 0.5 in the half-size image.
    assert half.k[0] == 250 and half.k[2] == (320 + 0.5) / 2 - 0.5
    assert half.k[4] == 250 and half.k[5] == (240 + 0.5) / 2 - 0.5
    assert model.scaled(480, 640) is model


@pytest.mark.parametrize('distortion', sorted(scenes.DISTORTIONS))
def test_rays_and_projection_round_trip(distortion):
    model = scenes.camera(distortion, 160, 120, focal=125.0)
    rays = model.pixel_rays()
    pixels = model.project(rays.reshape(-1, 3) * 3.0)     # any point on the ray
    rows, cols = np.mgrid[0:120, 0:160]
    np.testing.assert_allclose(pixels, np.stack([cols.ravel(), rows.ravel()], 1), atol=1e-4)


def test_points_behind_or_far_outside_the_view_do_not_project():
    model = scenes.camera('plumb_bob')
    # Far off axis, barrel distortion folds x/z = 3 back into the image; it must not land.
    pixels = model.project([[0, 0, -1.0], [3.0, 0, 1.0], [0.1, 0.1, 1.0]])
    assert np.isnan(pixels[:2]).all() and np.isfinite(pixels[2]).all()
