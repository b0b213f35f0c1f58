"""Ego-vehicle masks: from a PNG or a polygon, at any size; in the pipeline, ego pixels are
labelled EGO_ID and never drivable."""
import logging

import cv2
import numpy as np
import pytest

import runtime_models as rm
from seg_perception.errors import InvalidValueError
from seg_perception.ground.ego import EgoMask, EgoMaskError
from seg_perception.labels import EGO_ID, EGO_NAME
from seg_perception.runtime.pipeline import InputError, SegmentationPipeline

BONNET = [0.0, 0.8, 1.0, 0.8, 1.0, 1.0, 0.0, 1.0]      # the bottom fifth of the image


def test_the_ego_id_is_outside_every_class_range():
    assert EGO_ID == 255 and EGO_NAME == 'ego_vehicle'


def test_a_polygon_covers_the_pixels_whose_centres_are_inside_at_any_size():
    mask = EgoMask.from_polygon(BONNET)
    for height, width in [(100, 200), (37, 50), (1080, 1920)]:
        ego = mask.at((height, width))
        assert ego.shape == (height, width) and ego.dtype == bool
        rows = np.nonzero(ego.all(axis=1))[0]
        # The edge lies at row 0.8 · height - 0.5 (pixel centres), rounded to a whole row.
        assert rows[0] == int(np.floor(0.8 * height - 0.5 + 0.5)) and rows[-1] == height - 1
        assert not ego[:rows[0]].any()
    assert mask.at((100, 200)) is mask.at((100, 200))        # made once per size


def test_a_triangle_polygon_at_two_sizes():
    mask = EgoMask.from_polygon([0.5, 0.5, 1.0, 1.0, 0.0, 1.0])
    small, large = mask.at((40, 40)), mask.at((400, 400))
    assert small[39, 20] and not small[0, 0] and not small[21, 5]
    assert abs(large.mean() - 0.25) < 0.01


def test_a_png_of_another_resolution_is_scaled_nearest(tmp_path):
    path = str(tmp_path / 'bonnet.png')
    picture = np.zeros((200, 400, 3), np.uint8)
    picture[160:, :, 2] = 200                      # non-zero in one colour channel = ego
    cv2.imwrite(path, picture)
    mask = EgoMask.from_png(path)
    ego = mask.at((100, 200))
    assert ego[80:].all() and not ego[:80].any()
    np.testing.assert_array_equal(mask.at((200, 400)), picture[:, :, 2] != 0)


@pytest.mark.parametrize('content, message', [
    (None, 'no such file'),
    (b'not a png at all', 'cannot be read as an image'),
])
def test_an_unreadable_mask_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / 'mask.png'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EgoMaskError) as caught:
        EgoMask.from_png(str(path))
    assert isinstance(caught.value, InvalidValueError)
    assert str(caught.value).startswith(f'ego mask {path}: {message}')


@pytest.mark.parametrize('values, message', [
    ([0.1, 0.2, 0.3, 0.4, 0.5], '5 values, an odd number'),
    ([0.1, 0.2, 0.3, 0.4], '2 point(s); a polygon needs at least 3'),
    ([0, 400, 640, 400, 640, 480], 'normalised image coordinates in 0..1, got 0..640'),
    (['a', 'b', 'c', 'd', 'e', 'f'], 'expected a flat list of numbers'),
])
def test_a_bad_polygon_is_one_clear_line(values, message):
    with pytest.raises(EgoMaskError) as caught:
        EgoMask.from_polygon(values, 'cameras.front.ego_polygon')
    assert str(caught.value).startswith('cameras.front.ego_polygon: ')
    assert message in str(caught.value)


def test_an_all_ego_mask_warns_once_but_works(tmp_path, caplog):
    path = str(tmp_path / 'all.png')
    cv2.imwrite(path, np.full((10, 10), 255, np.uint8))
    mask = EgoMask.from_png(path)
    with caplog.at_level(logging.WARNING, logger='seg_perception.ground.ego'):
        assert mask.at((20, 30)).all()
        mask.at((40, 60))
    warnings = [r for r in caplog.records if 'covers the whole image' in r.getMessage()]
    assert len(warnings) == 1 and path in warnings[0].getMessage()


# -- in the pipeline ---------------------------------------------------------------------
def pipeline(resolution='network'):
    return SegmentationPipeline(rm.exported(resolution, with_confidence=True),
                                backend='onnxruntime', output_resolution='camera')


@pytest.mark.parametrize('output_resolution', ['camera', 'network'])
def test_ego_pixels_are_labelled_ego_and_never_drivable(output_resolution):
    frame = rm.painted_frame(96, 160)         # road over the bottom half
    seg = SegmentationPipeline(rm.exported('network', with_confidence=True),
                               backend='onnxruntime', output_resolution=output_resolution)
    plain = seg.process([frame])[0]
    bonnet = EgoMask.from_polygon(BONNET)
    # Given at the frame's size, and at another resolution: the pipeline scales it.
    for ego in (bonnet.at((96, 160)), bonnet.at((50, 333))):
        result = seg.process([frame], ego_masks=[ego])[0]
        size = result.labels.shape
        expected_ego = cv2.resize(ego.astype(np.uint8), (size[1], size[0]),
                                  interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
        assert expected_ego[-1].all() and not expected_ego[:size[0] // 2].any()
        assert plain.drivable_mask[expected_ego].any()          # it was road
        assert (result.labels[expected_ego] == EGO_ID).all()
        assert not result.drivable_mask[expected_ego].any()
        np.testing.assert_array_equal(result.labels[~expected_ego], plain.labels[~expected_ego])
        np.testing.assert_array_equal(result.drivable_mask[~expected_ego],
                                      plain.drivable_mask[~expected_ego])


def test_each_frame_takes_its_own_camera_mask():
    frame = rm.painted_frame(96, 160)
    seg = pipeline()
    bonnet = EgoMask.from_polygon(BONNET).at((96, 160))
    with_mask, without = seg.process([frame, frame], ego_masks=[bonnet, None])
    assert (with_mask.labels[bonnet] == EGO_ID).all()
    assert not (without.labels == EGO_ID).any()
    again = seg.process([frame], ego_masks=[bonnet])[0]        # the resized mask is kept
    np.testing.assert_array_equal(again.labels, with_mask.labels)


@pytest.mark.parametrize('ego_masks, message', [
    ([np.zeros((4, 4, 3), bool)], 'frame 0: an ego mask must be a non-empty H×W array'),
    ([np.zeros((0, 4), bool)], 'frame 0: an ego mask must be a non-empty H×W array'),
    ([None, None], '2 ego masks for 1 frames'),
])
def test_a_bad_ego_mask_is_rejected_before_any_work(ego_masks, message):
    with pytest.raises(InputError, match=message):
        pipeline().process([rm.painted_frame(96, 160)], ego_masks=ego_masks)
