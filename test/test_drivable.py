"""Drivable-area post-processing on hand-made label maps."""
import time

import cv2
import numpy as np
import pytest

from seg_perception.runtime.drivable import (DrivableMasker, fill_small_holes,
                                             keep_ego_component, resolve_drivable_ids)

NAMES = ['road', 'sidewalk', 'building', 'car', 'parking']
ROAD, SIDEWALK, BUILDING, CAR, PARKING = range(5)


def scene(height=60, width=80):
    """Building on top, road in the lower half, a car on the road, an island of road."""
    labels = np.full((height, width), BUILDING, np.uint8)
    labels[height // 2:] = ROAD
    labels[height // 2:, :10] = SIDEWALK
    labels[40:48, 50:60] = CAR
    labels[5:12, 5:15] = ROAD           # a road patch not connected to the vehicle
    return labels


def test_default_ids_come_from_the_metadata():
    labels = scene()
    mask = DrivableMasker(resolve_drivable_ids(NAMES, [ROAD]))(labels)
    assert mask.dtype == np.uint8 and mask.shape == labels.shape
    np.testing.assert_array_equal(mask, np.where(labels == ROAD, 255, 0))


def test_override_by_names_ids_and_comma_string():
    assert resolve_drivable_ids(NAMES, [ROAD], ['Road', 'parking']) == (ROAD, PARKING)
    assert resolve_drivable_ids(NAMES, [ROAD], 'road, sidewalk') == (ROAD, SIDEWALK)
    assert resolve_drivable_ids(NAMES, [ROAD], [4, 'road']) == (ROAD, PARKING)
    assert resolve_drivable_ids(NAMES, [ROAD], '1') == (SIDEWALK,)
    assert resolve_drivable_ids(NAMES, [ROAD], None) == (ROAD,)
    labels = scene()
    mask = DrivableMasker(resolve_drivable_ids(NAMES, [ROAD], ['sidewalk']))(labels)
    np.testing.assert_array_equal(mask, np.where(labels == SIDEWALK, 255, 0))


def test_unknown_class_name_and_out_of_range_id_are_named():
    with pytest.raises(ValueError, match="'gravel'.*road, sidewalk"):
        resolve_drivable_ids(NAMES, [ROAD], ['road', 'gravel'])
    with pytest.raises(ValueError, match='id 7 out of range'):
        resolve_drivable_ids(NAMES, [ROAD], [7])


def test_ego_region_keeps_only_the_component_touching_the_bottom_centre():
    labels = scene()
    labels[30:60, 70:75] = BUILDING     # a wall splits off a road strip on the right
    mask = DrivableMasker([ROAD], keep_ego_region=True)(labels)
    assert mask[59, 40] == 255                       # under the vehicle
    assert mask[8, 10] == 0                          # the island is dropped
    assert (mask[30:, 75:] == 0).all()               # the split-off strip is dropped
    assert (mask[40:48, 50:60] == 0).all()           # the car stays non-drivable
    # Everything kept is road and connected: one component.
    assert (labels[mask > 0] == ROAD).all()
    assert cv2.connectedComponents(mask, connectivity=4)[0] == 2


def test_ego_region_looks_past_a_bonnet_and_is_empty_without_road_near_the_bottom():
    labels = scene()
    labels[55:, 20:60] = CAR            # the vehicle's own bonnet at the bottom centre
    mask = DrivableMasker([ROAD], keep_ego_region=True)(labels)
    assert mask[40, 40] == 255 and mask[8, 10] == 0
    no_road = np.full((60, 80), BUILDING, np.uint8)
    no_road[5:12, 5:15] = ROAD
    assert not DrivableMasker([ROAD], keep_ego_region=True)(no_road).any()


def test_small_holes_are_filled_large_ones_kept():
    labels = np.full((60, 80), ROAD, np.uint8)
    labels[10:13, 10:13] = CAR          # 9 px: a hole
    labels[30:40, 30:40] = CAR          # 100 px: a real obstacle
    labels[:5, :] = BUILDING            # touches the border, large
    mask = DrivableMasker([ROAD], fill_holes_px=50)(labels)
    assert (mask[10:13, 10:13] == 255).all()
    assert (mask[30:40, 30:40] == 0).all()
    assert (mask[:5] == 0).all()
    untouched = DrivableMasker([ROAD])(labels)
    assert (untouched[10:13, 10:13] == 0).all()


def test_fill_small_holes_handles_masks_with_more_than_65535_components():
    mask = np.full((600, 600), 255, np.uint8)
    mask[::2, ::2] = 0                  # 90 000 one-pixel holes
    fill_small_holes(mask, 2)
    assert mask.min() == 255


def test_ego_region_handles_masks_with_more_than_65535_components():
    mask = np.zeros((600, 600), np.uint8)
    mask[::2, ::2] = 255                # 90 000 one-pixel drivable islands
    keep_ego_component(mask)
    kept = mask > 0
    assert kept[400:, 200:400].sum() == 100 * 100      # every island at the bottom centre
    assert not kept[:400].any() and not kept[:, :200].any() and not kept[:, 400:].any()


def test_mask_at_another_size_equals_the_mask_of_the_upsampled_labels():
    small = scene(40, 60)
    small[30:32, 20:22] = CAR           # 4 px hole at the small size, 16 px upsampled
    size = (80, 120)
    upsampled = cv2.resize(small, (120, 80), interpolation=cv2.INTER_NEAREST_EXACT)
    for options in ({}, {'keep_ego_region': True}, {'fill_holes_px': 20},
                    {'fill_holes_px': 10}, {'keep_ego_region': True, 'fill_holes_px': 20}):
        masker = DrivableMasker([ROAD], **options)
        direct = DrivableMasker([ROAD], **options)(upsampled)
        np.testing.assert_array_equal(masker(small, size=size), direct, err_msg=str(options))
    assert DrivableMasker([ROAD], fill_holes_px=20)(small, size=size)[61, 41] == 255
    assert DrivableMasker([ROAD], fill_holes_px=10)(small, size=size)[61, 41] == 0


def test_keep_ego_component_function_in_place():
    mask = np.zeros((20, 20), np.uint8)
    mask[15:, 8:12] = 255
    mask[:3, :3] = 255
    out = keep_ego_component(mask)
    assert out is mask and mask[:3, :3].max() == 0 and mask[15:, 8:12].min() == 255


def test_bad_labels_and_settings_are_refused():
    masker = DrivableMasker([ROAD])
    with pytest.raises(ValueError, match='uint8'):
        masker(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match='out must be'):
        masker(np.zeros((4, 4), np.uint8), out=np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match='fill_holes_px'):
        DrivableMasker([ROAD], fill_holes_px=-1)


def test_fast_at_1080p_and_reuses_its_scratch_buffers():
    labels = np.full((1080, 1920), BUILDING, np.uint8)
    labels[500:] = ROAD
    rng = np.random.default_rng(0)
    holes = cv2.resize((rng.random((108, 192)) > 0.95).astype(np.uint8), (1920, 1080),
                       interpolation=cv2.INTER_NEAREST)
    labels[holes > 0] = CAR
    masker = DrivableMasker([ROAD], keep_ego_region=True, fill_holes_px=500)
    out = np.empty_like(labels)
    masker(labels, out)
    scratch = dict(masker._scratch)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        masker(labels, out)
        times.append(time.perf_counter() - start)
    assert masker._scratch.keys() == scratch.keys()
    assert all(masker._scratch[k] is scratch[k] for k in scratch)
    # A few ms on one free core; generous for a shared CI machine.
    assert min(times) < 0.25, times
    assert (out > 0).sum() > (labels == ROAD).sum()          # holes were filled
    _, _, stats, _ = cv2.connectedComponentsWithStats(255 - out, connectivity=8)
    assert stats[1:, cv2.CC_STAT_AREA].min() >= 500          # and none small is left


def test_ego_region_survives_a_bonnet_partly_labelled_road():
    """A bonnet reflects the road: patches of it come out as road, apart from the road."""
    labels = scene()
    labels[44:, 10:70] = CAR                      # the bonnet, bottom quarter and more
    labels[56:, 30:45] = ROAD                     # a reflection on it, labelled road
    mask = DrivableMasker([ROAD], keep_ego_region=True)(labels)
    assert mask[30, 40] == 255                    # the road ahead is kept
    assert mask[8, 10] == 0                       # the island far up still goes
