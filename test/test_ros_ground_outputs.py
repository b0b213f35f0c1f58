"""The node's ground outputs without rclpy: parameters, CameraInfo and tf conversions, the
point-cloud and grid layouts, GroundOutputs with a stand-in for tf, ego masks in the worker."""
import math
import types

import cv2
import numpy as np
import pytest

import ground_scenes
from seg_perception.ground.camera import CameraModelError
from seg_perception.labels import EGO_ID
from seg_perception.ros import ground_outputs, outputs, params
from seg_perception.ros.ground_state import (FEEDS_GRID, GroundOutputs, TransformUnavailable,
                                             check_age)
from seg_perception.ros.worker import FrameProcessor, WarnThrottle
from test_ros_node_logic import FakePipeline, Harness, frame, image_msg

HEIGHT, WIDTH = 120, 160
OPTICAL = 'front_optical'


def camera_info(focal=100.0, model='plumb_bob', d=(), width=WIDTH, height=HEIGHT, **extra):
    values = dict(width=width, height=height, distortion_model=model, d=list(d),
                  k=[focal, 0.0, width / 2 - 0.5, 0.0, focal, height / 2 - 0.5, 0.0, 0.0, 1.0],
                  binning_x=0, binning_y=0)
    values.update(extra)
    return types.SimpleNamespace(**values)


def config(**values):
    return params.build_config({'cameras': ['front'], 'cameras.front.camera_info': 'info',
                                **values}, check_model_file=False)


# -- parameters -------------------------------------------------------------------------
def test_ground_and_grid_parameters_default_and_validate():
    cfg = config()
    assert (cfg.ground.frame, cfg.ground.plane.height, cfg.ground.plane.max_range_m) == \
        ('base_footprint', 0.0, 40.0)
    assert (cfg.grid.frame, cfg.grid.geometry.size_m, cfg.grid.geometry.resolution_m,
            cfg.grid.fusion, cfg.grid.rate_hz) == ('odom', 40.0, 0.1, 'log_odds', 5.0)
    assert not cfg.ground.publish_points and cfg.uses_ground and not cfg.has_ego
    assert not config(**{'grid.rate_hz': 0.0}).uses_ground
    with pytest.raises(params.ParameterError, match=r"'grid.fusion'.*not one of"):
        config(**{'grid.fusion': 'average'})
    with pytest.raises(params.ParameterError, match=r'grid.size_m.*too large'):
        config(**{'grid.size_m': 1000.0, 'grid.resolution_m': 0.1})
    with pytest.raises(params.ParameterError, match=r"'ground.frame'.*tf frame id"):
        config(**{'ground.frame': '/base_link'})


def test_ego_polygon_and_png_parameters(tmp_path):
    polygon = [0.0, 0.75, 1.0, 0.75, 1.0, 1.0, 0.0, 1.0]
    cfg = config(**{'cameras.front.ego_polygon': polygon})
    mask = cfg.cameras[0].ego.at((8, 10))
    assert cfg.has_ego and mask[6:].all() and not mask[:6].any()
    png = tmp_path / 'bonnet.png'
    image = np.zeros((40, 50), np.uint8)
    image[30:] = 255
    cv2.imwrite(str(png), image)
    ego = config(**{'cameras.front.ego_mask': str(png)}).cameras[0].ego
    assert ego.at((4, 5))[3:].all() and not ego.at((4, 5))[:3].any()
    assert not ego.covers_everything()


@pytest.mark.parametrize('values, match', [
    ({'cameras.front.ego_mask': '/no/such/bonnet.png'}, r"'cameras.front.ego_mask'.*no such"),
    ({'cameras.front.ego_polygon': [0.1, 0.2, 0.3]}, r"'cameras.front.ego_polygon'.*odd"),
    ({'cameras.front.ego_polygon': [0, 0, 640, 0, 640, 480]}, r'ego_polygon.*pixels\?'),
    ({'cameras.front.ego_mask': 'x.png', 'cameras.front.ego_polygon': [0.0] * 6},
     'not both'),
])
def test_bad_ego_parameters_are_one_line_parameter_errors(values, match):
    with pytest.raises(params.ParameterError, match=match) as error:
        config(**values)
    assert '\n' not in str(error.value)


def test_unreadable_ego_png_is_a_parameter_error(tmp_path):
    bad = tmp_path / 'bonnet.png'
    bad.write_bytes(b'not a png')
    with pytest.raises(params.ParameterError, match='cannot be read as an image'):
        config(**{'cameras.front.ego_mask': str(bad)})


def test_all_ego_mask_is_recognised_for_a_warning():
    ego = config(**{'cameras.front.ego_polygon': [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]})
    assert ego.cameras[0].ego.covers_everything()


def test_label_info_and_class_map_name_the_ego_id_only_with_an_ego_mask():
    assert outputs.label_info_classes(['road', 'car']) == [(0, 'road'), (1, 'car')]
    assert outputs.label_info_classes(['road', 'car'], ego=True)[-1] == (255, 'ego_vehicle')
    values = params.class_map_parameters(['road'], [(1, 2, 3)], [0], ego=True)
    assert (values['class_map.ego_id'], values['class_map.ego_name']) == (255, 'ego_vehicle')
    assert 'class_map.ego_id' not in params.class_map_parameters(['road'], [(1, 2, 3)], [0])


# -- conversions --------------------------------------------------------------------------
def test_camera_info_to_camera_model_and_its_errors():
    model = ground_outputs.camera_model(camera_info(d=(0.1, 0, 0, 0, 0)))
    assert (model.width, model.height, model.k[0], model.d[0]) == (WIDTH, HEIGHT, 100.0, 0.1)
    assert ground_outputs.camera_model(camera_info(model='')).distortion_model == 'plumb_bob'
    with pytest.raises(CameraModelError, match='focal length'):
        ground_outputs.camera_model(camera_info(focal=0.0))
    with pytest.raises(CameraModelError, match="unknown distortion model 'kannala'"):
        ground_outputs.camera_model(camera_info(model='kannala'))
    with pytest.raises(CameraModelError, match='binning'):
        ground_outputs.camera_model(camera_info(binning_x=2))


def test_transform_matrix_from_translation_and_quaternion():
    half = math.radians(90) / 2           # 90° about z
    matrix = ground_outputs.transform_matrix(
        types.SimpleNamespace(x=1.0, y=2.0, z=1.5),
        types.SimpleNamespace(x=0.0, y=0.0, z=math.sin(half), w=math.cos(half)))
    np.testing.assert_allclose(matrix @ [1, 0, 0, 1], [1, 3, 1.5, 1], atol=1e-12)
    # The optical frame of a camera looking forward (tf's -90°, 0, -90° yaw-pitch-roll).
    optical = ground_outputs.transform_matrix((0, 0, 1.5), (-0.5, 0.5, -0.5, 0.5))
    np.testing.assert_allclose(optical[:3, :3], ground_scenes.OPTICAL_TO_VEHICLE, atol=1e-12)
    assert np.isnan(ground_outputs.transform_matrix((0, 0, 0), (0, 0, 0, 0))).all()


def test_ground_cloud_layout_round_trips_with_nans():
    points = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    points[0, 1] = np.nan
    cloud = ground_outputs.ground_cloud(points)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (2, 3, 12, 36)
    back = np.frombuffer(cloud.data, '<f4').reshape(2, 3, 3)
    np.testing.assert_array_equal(back, points)
    assert [name for name, _ in ground_outputs.POINT_FIELDS] == ['x', 'y', 'z']


def test_check_age_names_stale_transforms():
    check_age(0, 5_000_000_000, 0.5, 'a → b')              # static transform: never stale
    check_age(4_800_000_000, 5_000_000_000, 0.5, 'a → b')
    with pytest.raises(TransformUnavailable, match=r'stale transform a → b.*2.00 s older'):
        check_age(3_000_000_000, 5_000_000_000, 0.5, 'a → b')


# -- GroundOutputs with a stand-in for tf ---------------------------------------------------
class Tf:
    """Transforms by (target, source); a missing pair raises TransformUnavailable."""

    def __init__(self, **pairs):
        self.pairs = {tuple(k.split('__')): v for k, v in pairs.items()}

    def __call__(self, target, source, stamp_ns):
        try:
            return self.pairs[(target, source)]
        except KeyError:
            raise TransformUnavailable(f'no transform {source} → {target}') from None


def road_result(height=HEIGHT, width=WIDTH):
    """Everything below the horizon drivable (the camera looks level)."""
    drivable = np.zeros((height, width), np.uint8)
    drivable[height // 2 + 1:] = 255
    return types.SimpleNamespace(labels=np.zeros((height, width), np.uint8),
                                 drivable_mask=drivable, confidence=None)


def level_mount(z=1.5):
    return ground_scenes.mount(z=z, pitch=0.0)


def make_outputs(tf, **values):
    warnings = []
    ground = GroundOutputs(config(**values), tf, warnings.append, WarnThrottle(60.0))
    return ground, warnings


def test_points_and_grid_of_a_camera_at_1_5_m():
    tf = Tf(base_footprint__front_optical=level_mount(), odom__base_footprint=ground_scenes.pose(
        x=3.0))
    ground, warnings = make_outputs(tf, **{'grid.size_m': 20.0, 'grid.resolution_m': 0.5,
                                           'grid.fusion': 'none'})
    points = ground.on_result('front', camera_info(), OPTICAL, 7_000_000_000, road_result(),
                              want_points=True)
    assert points.shape == (HEIGHT, WIDTH, 3) and points.dtype == np.float32
    assert np.isnan(points[:HEIGHT // 2]).all()            # at or above the horizon
    # The bottom centre pixel: 1.5 m below, focal 100, 59.5 px down -> 1.5 · 100 / 59.5 ahead.
    np.testing.assert_allclose(points[-1, WIDTH // 2 - 1:WIDTH // 2 + 1, 0],
                               1.5 * 100 / 59.5, rtol=0.01)
    assert ground.status('front') == FEEDS_GRID and not warnings
    frame, stamp = ground.fuse()
    assert (frame, stamp) == ('odom', 7_000_000_000)
    layout = ground_outputs.grid_layout(ground.grid)
    assert (layout.width, layout.height, layout.resolution) == (40, 40, 0.5)
    # Centred on the vehicle at x = 3 in odom, by whole cells.
    assert layout.origin == (-7.0, -10.0)
    grid = layout.data
    x = layout.origin[0] + (np.arange(40) + 0.5) * 0.5         # cell centres along x
    ahead = (x > 3.0 + 3.0) & (x < 3.0 + 8.0)
    assert (grid[20, ahead] == 0).all()                       # drivable in front
    assert (grid[20, x < 3.0] == -1).all()                    # nobody sees behind
    assert ground.fuse() is None                              # nothing new: nothing to publish


def test_grid_falls_back_to_the_vehicle_frame_and_says_so_once():
    tf = Tf(base_footprint__front_optical=level_mount())
    ground, warnings = make_outputs(tf)
    for stamp in (1, 2):
        ground.on_result('front', camera_info(), OPTICAL, stamp, road_result(), False)
        assert ground.fuse() == ('base_footprint', stamp)
    assert len(warnings) == 1 and 'grid is in base_footprint' in warnings[0]
    assert 'odom' in warnings[0]


@pytest.mark.parametrize('info, frame_id, match', [
    (camera_info(focal=0.0), OPTICAL, 'focal length'),
    (camera_info(model='kannala'), OPTICAL, 'unknown distortion model'),
    (camera_info(), 'rear_optical', 'no transform rear_optical → base_footprint'),
    (camera_info(), '', 'no frame_id'),
])
def test_bad_geometry_warns_throttled_and_gives_no_ground_outputs(info, frame_id, match):
    tf = Tf(base_footprint__front_optical=level_mount())
    ground, warnings = make_outputs(tf)
    for _ in range(3):
        assert ground.on_result('front', info, frame_id, 1, road_result(), True) is None
    assert len(warnings) == 1 and 'labels still published' in warnings[0]
    assert match in warnings[0] and match in ground.status('front')
    assert ground.fuse() is None


def test_camera_below_the_ground_plane_is_named_not_fused():
    tf = Tf(base_footprint__front_optical=level_mount(z=-0.2))
    ground, warnings = make_outputs(tf)
    assert ground.on_result('front', camera_info(), OPTICAL, 1, road_result(), True) is None
    assert 'not above the ground plane' in warnings[0]


def test_status_before_camera_info_and_without_a_topic():
    ground, _ = make_outputs(Tf())
    assert ground.status('front') == 'waiting for CameraInfo'
    cfg = params.build_config({'cameras': ['side']}, check_model_file=False)
    assert 'no cameras.<name>.camera_info' in GroundOutputs(cfg, Tf(), print).status('side')


def test_ego_pixels_give_no_grid_evidence():
    tf = Tf(base_footprint__front_optical=level_mount())
    bonnet = [0.0, 0.8, 1.0, 0.8, 1.0, 1.0, 0.0, 1.0]
    values = {'grid.size_m': 20.0, 'grid.resolution_m': 0.25, 'grid.fusion': 'none'}
    result = road_result()
    result.drivable_mask[int(HEIGHT * 0.8):] = 0          # the pipeline's ego: not drivable
    with_ego, _ = make_outputs(tf, **values, **{'cameras.front.ego_polygon': bonnet})
    without, _ = make_outputs(tf, **values)
    for ground in (with_ego, without):
        ground.on_result('front', camera_info(), OPTICAL, 1, result, False)
        ground.fuse()
    assert (without.grid.occupancy() == 100).any()        # the bonnet as ground: not drivable
    assert not (with_ego.grid.occupancy() == 100).any()


# -- ego masks in the worker --------------------------------------------------------------
class EgoRecordingPipeline(FakePipeline):
    def process(self, frames, encodings=None, ego_masks=None):
        self.ego_masks = ego_masks
        return super().process(frames, encodings)


def test_worker_passes_each_cameras_ego_mask_at_the_frame_size():
    ego = params.build_config({'cameras': ['front'], 'cameras.front.ego_polygon':
                               [0.0, 0.5, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0]},
                              check_model_file=False).cameras[0].ego
    harness = Harness(pipeline=EgoRecordingPipeline())
    processor = FrameProcessor(harness.pipeline, harness.stats,
                               lambda f, r: harness.published.append((f, r)),
                               lambda: 10 * 10**9, ego_masks={'front': ego})
    processor.process([frame('front', image_msg(height=4, width=6)),
                       frame('back', image_msg(height=4, width=6))])
    masks = harness.pipeline.ego_masks
    assert masks[1] is None and masks[0].shape == (4, 6)
    assert masks[0][2:].all() and not masks[0][:2].any()
    assert EGO_ID == 255
