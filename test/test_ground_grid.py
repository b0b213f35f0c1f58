"""The fused bird's-eye drivable grid against known ground: one camera, two, a moving car."""
import math

import numpy as np
import pytest

import ground_scenes as scenes
from seg_perception.errors import InvalidValueError
from seg_perception.ground.grid import (BLOCKED, FREE, UNKNOWN, CameraView, DrivableGrid,
                                        GridGeometry, GridInputError)
from seg_perception.ground.projection import GroundGeometryError, GroundPlane

ROAD = (4.0, 14.0, -2.0, 2.0)       # x0, x1, y0, y1 in the vehicle frame, metres
# name -> (distortion, mount, road rectangle in view)
SETUPS = {
    'pinhole, pitched': ('pinhole', scenes.mount(pitch=8), ROAD),
    'plumb_bob k1 != 0': ('plumb_bob', scenes.mount(pitch=8), ROAD),
    'rational_polynomial': ('rational_polynomial', scenes.mount(pitch=8), ROAD),
    'equidistant': ('equidistant', scenes.mount(pitch=8), ROAD),
    'rolled on its mount': ('pinhole', scenes.mount(roll=6, pitch=8), ROAD),
    'yawed on its mount': ('plumb_bob', scenes.mount(x=1.0, y=0.4, yaw=30, pitch=8),
                           (5.0, 13.0, 1.0, 5.0)),
    'looking backwards': ('plumb_bob', scenes.mount(x=-1.0, z=1.2, yaw=180, pitch=8),
                          (-14.0, -5.0, -2.0, 2.0)),
}


def grid(fusion='none', size_m=40.0, resolution_m=0.1, max_range_m=30.0, **options):
    return DrivableGrid(GridGeometry(size_m, resolution_m), GroundPlane(0.0, max_range_m),
                        fusion=fusion, **options)


@pytest.mark.parametrize('setup', sorted(SETUPS))
def test_drivable_cells_match_the_road_on_the_ground(setup):
    distortion, camera_to_vehicle, road = SETUPS[setup]
    model = scenes.camera(distortion)
    drivable = scenes.road_image(model, camera_to_vehicle, road)
    fused = grid()
    fused.update([CameraView(model, camera_to_vehicle, drivable)])
    values = fused.occupancy()
    assert values.shape == (400, 400) and values.dtype == np.int8
    assert fused.origin == (-20.0, -20.0)
    assert scenes.iou(values == FREE, scenes.cells_inside(fused, road)) >= 0.95
    # The ground around the road that the camera sees is there, and not drivable.
    assert (values == BLOCKED).sum() > (values == FREE).sum()


def test_two_overlapping_cameras_fuse_into_one_consistent_grid():
    road = (4.0, 14.0, -3.0, 3.0)
    model = scenes.camera('pinhole')
    left, right = scenes.mount(x=1.5, y=0.5, yaw=22), scenes.mount(x=1.5, y=-0.5, yaw=-22)
    views = [CameraView(model, mount, scenes.pinhole_road_image(model, mount, road))
             for mount in (left, right)]
    singles = []
    for view in views:
        one = grid(fusion='log_odds')
        one.update([view], stamp=0.0)
        singles.append(one.occupancy())
    both = grid(fusion='log_odds')
    both.update(views, stamp=0.0)
    fused = both.occupancy()
    inside = scenes.cells_inside(both, road)
    assert scenes.iou(fused == FREE, inside) >= 0.95
    # Each camera alone sees only a part of the road; together they see it all.
    assert all(scenes.iou(single == FREE, inside) < 0.9 for single in singles)
    # Where both cameras see a cell, they agree: the fused value is theirs.
    seen_by_both = (singles[0] != UNKNOWN) & (singles[1] != UNKNOWN)
    agree = seen_by_both & (singles[0] == singles[1])
    assert agree.sum() > 0.97 * seen_by_both.sum() > 1000
    np.testing.assert_array_equal(fused[agree], singles[0][agree])
    # A cell only one camera sees takes that camera's value.
    only_left = (singles[0] != UNKNOWN) & (singles[1] == UNKNOWN)
    np.testing.assert_array_equal(fused[only_left], singles[0][only_left])


def test_a_moving_vehicle_keeps_a_static_road_where_it_was():
    road = (8.0, 30.0, -2.0, 2.0)                  # in the grid frame (odom)
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    mount = scenes.mount(x=1.0, pitch=6)
    fused = grid(fusion='log_odds', max_range_m=22.0, decay_s=5.0)
    for step in range(21):
        x, y, yaw = 0.5 * step, 0.1 * math.sin(step / 3), 4 * math.sin(step / 4)
        vehicle = scenes.pose(x, y, yaw)
        drivable = scenes.pinhole_road_image(model, vehicle @ mount, road)
        fused.update([CameraView(model, mount, drivable)], vehicle, stamp=0.1 * step)
        # The grid follows the vehicle: it stays in the centre cell.
        centre = np.array(fused.origin) + fused.cells // 2 * fused.resolution
        assert np.all(np.abs(np.array([x, y]) - centre) <= fused.resolution + 1e-9)
    values = fused.occupancy()
    assert scenes.iou(values == FREE, scenes.cells_inside(fused, road)) >= 0.95
    # Behind the vehicle's first position nothing was ever seen.
    behind = scenes.cells_inside(fused, (-10.0, 0.0, -20.0, 20.0))
    assert (values[behind] == UNKNOWN).all()


def test_cells_nobody_sees_stay_unknown():
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    mount = scenes.mount(pitch=8)
    fused = grid(max_range_m=12.0)
    fused.update([CameraView(model, mount, np.full(model.size, 255, np.uint8))])
    values = fused.occupancy()
    xs = fused.origin[0] + (np.arange(fused.cells) + 0.5) * fused.resolution
    ys = fused.origin[1] + (np.arange(fused.cells) + 0.5) * fused.resolution
    distance = np.hypot(xs[np.newaxis, :], ys[:, np.newaxis])
    behind = xs[np.newaxis, :].repeat(fused.cells, 0) < 0
    assert (values[behind] == UNKNOWN).all()                    # behind the camera
    assert (values[distance > 12.0 + fused.resolution] == UNKNOWN).all()    # past range
    assert (values == FREE).sum() > 1000 and not (values == BLOCKED).any()


def test_no_holes_at_30_m():
    road = (4.0, 36.0, -3.0, 3.0)
    model = scenes.camera('pinhole')
    mount = scenes.mount(pitch=4)
    fused = grid(size_m=64.0, max_range_m=38.0)
    fused.update([CameraView(model, mount, scenes.road_image(model, mount, road))])
    values = fused.occupancy()
    far = scenes.cells_inside(fused, (25.0, 30.0, -2.5, 2.5))
    assert far.sum() == 50 * 50
    assert (values[far] == FREE).all()


def test_ego_pixels_give_no_evidence_and_are_never_drivable():
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    mount = scenes.mount(pitch=8)
    drivable = np.full(model.size, 255, np.uint8)
    ego = np.zeros(model.size, bool)
    ego[200:] = True                                   # the bonnet: the bottom rows
    with_ego, without = grid(), grid()
    with_ego.update([CameraView(model, mount, drivable, ego=ego)])
    without.update([CameraView(model, mount, drivable)])
    difference = (without.occupancy() == FREE) & (with_ego.occupancy() == UNKNOWN)
    assert difference.sum() > 100
    assert not ((with_ego.occupancy() != UNKNOWN) & (without.occupancy() == UNKNOWN)).any()
    # The cells lost are the nearest ones, which only the bottom rows see.
    xs = with_ego.origin[0] + (np.nonzero(difference)[1] + 0.5) * with_ego.resolution
    assert xs.max() < 6.0


def test_confidence_weighs_the_evidence():
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    mount = scenes.mount(pitch=8)
    drivable = np.full(model.size, 255, np.uint8)
    confidence = np.full(model.size, 255, np.uint8)
    confidence[:, :160] = 20           # the left half barely sure
    fused = grid(fusion='log_odds')
    fused.update([CameraView(model, mount, drivable, confidence)], stamp=0.0)
    values = fused.occupancy()
    ys = fused.origin[1] + (np.arange(fused.cells) + 0.5) * fused.resolution
    left, right = values[ys > 0.5], values[ys < -0.5]     # the left half of the image sees y > 0
    assert (left == FREE).sum() < 0.05 * (right == FREE).sum()
    for stamp in (0.1, 0.2, 0.3, 0.4, 0.5):       # weak evidence adds up
        fused.update([CameraView(model, mount, drivable, confidence)], stamp=stamp)
    assert (fused.occupancy()[ys > 0.5] == FREE).sum() > 0.8 * (right == FREE).sum()


def test_fusion_none_replaces_and_log_odds_remembers_then_decays():
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    mount = scenes.mount(pitch=8)
    road = np.full(model.size, 255, np.uint8)
    fused, single = grid(fusion='log_odds', decay_s=1.0), grid(fusion='none')
    for index, stamp in enumerate((0.0, 0.1, 0.2)):
        fused.update([CameraView(model, mount, road)], stamp=stamp)
        single.update([CameraView(model, mount, road)], stamp=stamp)
    seen = single.occupancy() == FREE
    blocked = np.zeros(model.size, np.uint8)
    fused.update([CameraView(model, mount, blocked)], stamp=0.3)
    single.update([CameraView(model, mount, blocked)], stamp=0.3)
    assert (single.occupancy()[seen] == BLOCKED).all()      # replaced at once
    assert (fused.occupancy()[seen] == FREE).all()          # one frame does not undo three
    fused.update([], stamp=20.0)                            # nothing seen for 20 decay times
    assert (fused.occupancy() == UNKNOWN).all()


def test_time_going_backwards_clears_the_grid():
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    fused = grid(fusion='log_odds')
    fused.update([CameraView(model, scenes.mount(), np.full(model.size, 255, np.uint8))],
                 stamp=10.0)
    assert (fused.occupancy() == FREE).any()
    fused.update([], stamp=1.0)
    assert (fused.occupancy() == UNKNOWN).all()


def test_tables_are_reused_until_the_geometry_changes():
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    fused = grid()
    drivable = np.full(model.size, 255, np.uint8)
    fused.update([CameraView(model, scenes.mount(), drivable)])
    fused.update([CameraView(model, scenes.mount(), drivable)])
    assert len(fused._tables) == 1
    fused.update([CameraView(model, scenes.mount(z=1.6), drivable)])
    fused.update([CameraView(model, scenes.mount(), drivable[::2, ::2].copy())])
    assert len(fused._tables) == 3


@pytest.mark.parametrize('options, message', [
    (dict(fusion='bayes'), "unknown fusion 'bayes'"),
    (dict(decay_s=0.0), 'decay_s must be > 0'),
    (dict(hit_probability=0.4), 'hit_probability must be in'),
])
def test_bad_grid_settings_are_named(options, message):
    with pytest.raises(InvalidValueError, match=message):
        grid(**options)


def test_bad_geometry_and_views_are_named():
    with pytest.raises(GroundGeometryError, match='resolution_m must be > 0'):
        GridGeometry(40.0, 0.0)
    with pytest.raises(GroundGeometryError, match='too large'):
        GridGeometry(1000.0, 0.01)
    model = scenes.camera('pinhole', 320, 240, focal=250.0)
    drivable = np.zeros(model.size, np.uint8)
    fused = grid()
    with pytest.raises(GridInputError, match='confidence: shape'):
        fused.update([CameraView(model, scenes.mount(), drivable, drivable[:10])])
    with pytest.raises(GridInputError, match='confidence: expected uint8'):
        fused.update([CameraView(model, scenes.mount(), drivable, drivable.astype(float))])
    with pytest.raises(InvalidValueError, match='a stamp is needed'):
        grid(fusion='log_odds').update([])
