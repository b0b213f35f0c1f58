"""The node's ground outputs on a real ROS 2 runtime: static_transform_publisher for tf,
CameraInfo topics, ground points, the drivable grid, bad CameraInfo and a missing transform.

The model is runtime_models.ColourNet (blue = sky, red = road); the frames are sky over road,
the camera looks level from 1.5 m, so the road starts a few metres ahead.
"""
import math

import numpy as np
import pytest

from ros_live_helpers import halves_frame, wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

HEIGHT, WIDTH = 48, 64
BONNET = '[0.0, 0.84, 1.0, 0.84, 1.0, 1.0, 0.0, 1.0]'     # the bottom 16 %: ego vehicle
FORWARD, BACKWARD = -math.pi / 2, math.pi / 2              # optical-frame yaw (roll -90°)


def write_params(path, cameras, **values):
    """A node parameter file: cameras = {name: image topic}, raw transport."""
    lines = ['/**:', '  ros__parameters:', f'    cameras: [{", ".join(cameras)}]']
    lines += [f'    cameras.{name}.topic: {topic}' for name, topic in cameras.items()]
    lines += [f'    {key}: {value}' for key, value in values.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def static_transform(ros, yaw, child='front_optical'):
    return ros.launch('run', 'tf2_ros', 'static_transform_publisher', '--x', '0', '--y', '0',
                      '--z', '1.5', '--yaw', str(yaw), '--pitch', '0', '--roll',
                      str(-math.pi / 2), '--frame-id', 'base_footprint',
                      '--child-frame-id', child)


def collect(client, msg_type, topic):
    received = []
    client.node.create_subscription(msg_type, topic, received.append, 10)
    return received


def camera_info(width, height, focal, frame_id):
    from sensor_msgs.msg import CameraInfo
    msg = CameraInfo(width=width, height=height, distortion_model='plumb_bob')
    msg.header.frame_id = frame_id
    msg.k = [focal, 0.0, width / 2 - 0.5, 0.0, focal, height / 2 - 0.5, 0.0, 0.0, 1.0]
    return msg


def grid_values(msg):
    grid = np.array(msg.data, np.int8).reshape(msg.info.height, msg.info.width)
    x = msg.info.origin.position.x + (np.arange(msg.info.width) + 0.5) * msg.info.resolution
    row = int(round(-msg.info.origin.position.y / msg.info.resolution))    # y = 0
    return grid, x, row


def test_ground_points_grid_ego_and_bad_geometry_live(ros, tmp_path, colour_model):
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import CameraInfo, PointCloud2

    cameras = {name: f'/{name}/image' for name in ('front', 'bad', 'lost')}
    extra = {f'cameras.{name}.camera_info': f'/{name}/camera_info' for name in cameras}
    params_file = write_params(
        tmp_path / 'ground.yaml', cameras, max_frame_age_ms=0.0, publish_ground_points='true',
        **extra, **{'cameras.front.ego_polygon': BONNET, 'grid.size_m': 20.0,
                    'grid.resolution_m': 0.5, 'grid.fusion': 'none', 'grid.rate_hz': 10.0,
                    'diagnostics.window_s': 1.0})
    tf = static_transform(ros, FORWARD)
    node = ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={colour_model}')
    client = ros.client()
    labels = {name: client.subscribe('Image', f'/{name}/segmentation/labels')
              for name in cameras}
    points = collect(client, PointCloud2, '/front/segmentation/ground_points')
    grids = collect(client, OccupancyGrid, '/segmentation/drivable_grid')
    diagnostics = client.subscribe('DiagnosticArray', '/diagnostics')
    images = {name: client.image_publisher(topic, 'rgb8') for name, topic in cameras.items()}
    infos = {name: client.node.create_publisher(CameraInfo, f'/{name}/camera_info', 10)
             for name in cameras}
    frames = {'front': 'front_optical', 'bad': 'front_optical', 'lost': 'nowhere_optical'}
    frame = halves_frame(HEIGHT, WIDTH, 'rgb8')
    sent = set()

    def publish():
        for name in cameras:
            focal = 0.0 if name == 'bad' else float(WIDTH)      # 'bad': uncalibrated
            infos[name].publish(camera_info(WIDTH, HEIGHT, focal, frames[name]))
            sent.add(images[name].send(frame, frame_id=frames[name]))

    def ground_drivable(ahead):
        publish()
        if not grids:
            return False
        grid, x, row = grid_values(grids[-1])
        seen = (x > 7.0) & (x < 9.5) if ahead else (x < -7.0) & (x > -9.5)
        return (grid[row, seen] == 0).all()

    assert wait_until(lambda: ground_drivable(True) and points and
                      all(labels.values()), 90, 0.2, node.alive), node.output()

    # The grid: in base_footprint (no odom: said once), centred, road ahead, unknown behind.
    grid_msg = grids[-1]
    assert grid_msg.header.frame_id == 'base_footprint'
    assert (grid_msg.info.width, grid_msg.info.height) == (40, 40)
    assert grid_msg.info.resolution == pytest.approx(0.5)
    assert (grid_msg.info.origin.position.x, grid_msg.info.origin.position.y) == (-10.0, -10.0)
    assert (grid_msg.header.stamp.sec, grid_msg.header.stamp.nanosec) in sent
    grid, x, row = grid_values(grid_msg)
    assert (grid[row, x < 0] == -1).all()
    assert (grid[row, (x > 0) & (x < 5.0)] == -1).all(), 'the bonnet gives no evidence'
    # The log line can still be on its way through launch when the grid arrives: wait for
    # it, then check it was said once.
    assert wait_until(lambda: 'the grid is in base_footprint' in node.output(), 10), \
        node.output()
    assert node.output().count('the grid is in base_footprint') == 1

    # Ground points: organised like the labels, NaN above the horizon, on the ground below.
    cloud = points[-1]
    assert (cloud.height, cloud.width, cloud.is_dense) == (HEIGHT, WIDTH, False)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z'] and cloud.point_step == 12
    assert cloud.header.frame_id == 'base_footprint'
    xyz = np.frombuffer(bytes(cloud.data), '<f4').reshape(HEIGHT, WIDTH, 3)
    assert np.isnan(xyz[:HEIGHT // 2]).all()
    # Bottom row: 1.5 m below a 64 px focal length, 23.5 px below the centre.
    np.testing.assert_allclose(xyz[-1, :, 0], 1.5 * WIDTH / 23.5, rtol=0.01)
    np.testing.assert_allclose(xyz[-1, :, 2], 0.0, atol=1e-6)
    # The cloud carries its labels' stamp (the two topics may arrive here in either order).
    cloud_stamp = (cloud.header.stamp.sec, cloud.header.stamp.nanosec)
    assert wait_until(lambda: cloud_stamp in {(m.header.stamp.sec, m.header.stamp.nanosec)
                                              for m in labels['front']}, 10), cloud_stamp

    # Ego pixels: label 255 in the bottom rows, named in LabelInfo.
    front = np.frombuffer(bytes(labels['front'][-1].data), np.uint8).reshape(HEIGHT, WIDTH)
    assert (front[-6:] == 255).all() and (front[HEIGHT // 2 + 8:HEIGHT - 9] == 0).all()
    label_info = client.subscribe('LabelInfo', '/segmentation/label_info', latched=True)
    assert wait_until(lambda: label_info, 15)
    assert (255, 'ego_vehicle') in [(c.class_id, c.class_name) for c in label_info[0].class_map]

    # Bad CameraInfo and a missing transform: warned, labels still flowing.
    output = node.output()
    assert 'bad: no ground outputs' in output and 'focal length' in output
    assert 'lost: no ground outputs' in output and 'nowhere_optical' in output
    count = {name: len(labels[name]) for name in ('bad', 'lost')}
    assert wait_until(lambda: publish() or all(len(labels[n]) > count[n] + 2 for n in count),
                      20, 0.2)

    def ground_status():
        # The newest status of each camera, once every camera's says something about the
        # ground (diagnostics sent before the first frames carry an empty 'ground').
        statuses = {s.name: dict((kv.key, kv.value) for kv in s.values)
                    for array in diagnostics for s in array.status}
        values = {n: statuses.get(f'segmentation_node: {n} segmentation', {}).get('ground', '')
                  for n in cameras}
        settled = (values['front'] == 'feeds the grid' and 'focal length' in values['bad']
                   and 'nowhere_optical' in values['lost'])
        return values if settled else None
    assert wait_until(lambda: publish() or ground_status(), 20, 0.3), diagnostics[-1:]

    # Turn the camera round: the grid follows the new transform.
    tf.close()
    static_transform(ros, BACKWARD)
    assert wait_until(lambda: ground_drivable(False), 30, 0.2, node.alive), node.output()
    grid, x, row = grid_values(grids[-1])
    assert (grid[row, x > 0] == -1).all()
    assert node.alive()
