"""Camera health on a real ROS 2 runtime: a frozen camera is reported in /diagnostics, then
clears when its images move again. The checks themselves are tested frame by frame in
test_camera_health.py; this shows them reaching /diagnostics through the running node."""
import os

import cv2
import pytest

from conftest import require_ros
from live_ros_fixtures import write_params
from ros_live_helpers import wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, 'seg_perception', 'assets', 'sample_bag')
STATUS = 'segmentation_node: front camera'


def level(status):
    """A DiagnosticStatus level as a number (rclpy gives the byte field as bytes)."""
    return status.level if isinstance(status.level, int) else ord(status.level)


def two_sample_frames():
    """Two different real frames of the sample bag (RGB, 240x320)."""
    from seg_perception.replay.bag_io import open_bag
    from seg_perception.ros.conversions import decode, to_rgb
    frames = []
    with open_bag(SAMPLES) as source:
        for _, msgtype, _, raw in source.messages(['/camera/front/image_raw/compressed']):
            decoded = decode(source.deserialize(raw, msgtype))
            rgb = to_rgb(decoded.pixels, decoded.encoding)
            frames.append(cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA))
            if len(frames) == 2:
                return frames
    raise AssertionError('the sample bag lost its front frames')


def test_a_frozen_camera_is_reported_in_diagnostics_and_clears(ros, tmp_path, colour_model):
    require_ros()
    still, moving = two_sample_frames()
    params_file = write_params(tmp_path / 'front.yaml', {'front': ('/front/image', 'raw')},
                               max_frame_age_ms=0.0, **{'health.persist_s': 0.5,
                                                        'health.error_s': 60.0,
                                                        'diagnostic_updater.period': 0.5})
    node = ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={colour_model}')
    client = ros.client()
    labels = client.subscribe('Image', '/front/segmentation/labels')
    diagnostics = client.subscribe('DiagnosticArray', '/diagnostics')
    camera = client.image_publisher('/front/image', 'rgb8')

    def health():
        for array in reversed(diagnostics):
            for status in array.status:
                if status.name == STATUS:
                    return status
        return None

    # The same picture over and over (new stamps): frozen, reported as WARN once it persists.
    assert wait_until(lambda: camera.send(still) and labels, 60, 0.1, node.alive), node.output()

    def frozen():
        camera.send(still)
        status = health()
        return status is not None and level(status) == 1 and 'image frozen' in status.message

    assert wait_until(frozen, 20, 0.1, node.alive), (health(), node.output()[-2000:])
    assert health().message.startswith('front: image frozen')

    # Moving again: the condition clears on the first frame without it.
    pictures = [moving, still]

    def cleared():
        camera.send(pictures[0])
        pictures.reverse()
        status = health()
        return status is not None and level(status) == 0 and 'frozen' not in status.message

    assert wait_until(cleared, 20, 0.1, node.alive), (health(), node.output()[-2000:])
    assert node.interrupt() == 0
    assert 'Traceback' not in node.output()
