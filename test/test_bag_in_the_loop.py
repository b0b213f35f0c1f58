"""A drive replayed through the node with rosbag2, on a real ROS 2 runtime.

bag_eval.launch.py plays a bag with ``ros2 bag play --clock`` into the node on sim
time and records its outputs with ``ros2 bag record``; what it recorded is compared
with the input bag, with the node's own /diagnostics and with ``seg-perception
bag-eval`` run on the same bag with the same model and backend. And the other way
round: Humble's ``ros2 bag info`` and ``ros2 bag play`` open the bags bag-eval writes.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

import bag_helpers as bh
from ros_live_helpers import wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_BAG = os.path.join(REPO, 'seg_perception', 'assets', 'sample_bag')
# Half speed: the shared 2-core test machine keeps up with both cameras' frames (the node,
# the player and the recorder share it), so every frame is processed and none is late.
RATE = '0.5'
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


def write_params(path, cameras):
    """A node parameter file for a replay: cameras = {name: (image topic, camera_info)}."""
    # Reliable with room for a few frames: no frame is lost between player and node, so
    # every frame is either answered or counted as dropped by the node.
    section = {'cameras': list(cameras), 'qos.reliability': 'reliable', 'qos.depth': 10}
    for name, (topic, info) in cameras.items():
        section[f'cameras.{name}.topic'] = topic
        section[f'cameras.{name}.transport'] = \
            'compressed' if topic.endswith('/compressed') else 'raw'
        section[f'cameras.{name}.camera_info'] = info
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': section}}))
    return str(path)


def replay_through_node(ros, bag, params_file, model, output_bag, namespace=''):
    """bag_eval.launch.py from start to its own end; the recorded bag."""
    extra = [f'namespace:={namespace}'] if namespace else []
    launched = ros.launch('launch', 'seg_perception', 'bag_eval.launch.py', f'bag:={bag}',
                          f'params_file:={params_file}', f'model:={model}',
                          'backend:=onnxruntime', f'output_bag:={output_bag}',
                          f'rate:={RATE}', 'settle_time:=6.0', *extra)
    assert launched.proc.wait(120) == 0, launched.output()
    return output_bag


def run_bag_eval(bag, model, output, *options):
    """``seg-perception bag-eval`` with the node's backend; its output bag."""
    argv = [sys.executable, '-m', 'seg_perception.cli', 'bag-eval', '--bag', str(bag),
            '--model', model, '--backend', 'onnxruntime', '--output', str(output),
            '--no-progress', *options]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return output / (os.path.basename(os.path.normpath(str(bag))) + '_segmentation')


def messages(bag, wanted):
    """{topic: [message]} of the topics for which ``wanted(topic, msgtype)`` holds."""
    from seg_perception.replay.bag_io import open_bag
    out = {}
    with open_bag(str(bag), allow_salvage=False) as source:
        topics = [name for name, summary in source.topics.items()
                  if wanted(name, summary.msgtype)]
        for topic, msgtype, _, raw in source.messages(topics):
            out.setdefault(topic, []).append(source.deserialize(raw, msgtype))
    return out


def input_stamps(bag):
    """{camera namespace ('/camera/front'): [header stamps of its frames]}."""
    from seg_perception.replay.bag_io import camera_namespace
    frames = messages(bag, lambda topic, msgtype: msgtype in IMAGE_TYPES)
    return {'/' + camera_namespace(topic): [bh.stamp_ns(msg) for msg in msgs]
            for topic, msgs in frames.items()}


def segmentation_outputs(bag):
    """{output topic: {stamp: message}} of the per-camera images and camera_info."""
    out = messages(bag, lambda topic, msgtype: '/segmentation/' in topic and msgtype in (
        'sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo'))
    return {topic: {bh.stamp_ns(msg): msg for msg in msgs} for topic, msgs in out.items()}


def last_diagnostics(bag):
    """{status name: {key: value}} of the last /diagnostics message recorded."""
    arrays = messages(bag, lambda topic, _: topic == '/diagnostics')['/diagnostics']
    return {status.name: {pair.key: pair.value for pair in status.values}
            for status in arrays[-1].status}


def labels_of(msg):
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width]


def check_replay(input_bag, recorded, reference, cameras):
    """The recorded outputs against the input, the node's diagnostics and bag-eval's bag.

    ``cameras``: {node camera name: its output namespace ('/camera/front')}.
    """
    stamps = input_stamps(input_bag)
    outputs = segmentation_outputs(recorded)
    diagnostics = last_diagnostics(recorded)
    expected = segmentation_outputs(reference)
    for name, namespace in cameras.items():
        inputs = set(stamps[namespace])
        camera_topics = [topic for topic in outputs if topic.startswith(namespace + '/')]
        assert camera_topics, f'{name}: nothing recorded under {namespace}/ ({list(outputs)})'
        for topic in camera_topics:
            assert set(outputs[topic]) <= inputs, f'{topic}: stamps of no input frame'
        labels = outputs[f'{namespace}/segmentation/labels']
        status = diagnostics[f'segmentation_node: {name} segmentation']
        skipped = len(inputs) - len(labels)
        assert int(status['published']) == len(labels), (name, status)
        assert skipped == int(status['dropped']) + int(status['lost_upstream']), (name, status)
        assert int(status['received']) - int(status['published']) == int(status['dropped'])
        assert labels, f'{name}: no frame processed'
        reference_labels = expected[f'{namespace}/segmentation/labels']
        for stamp, msg in labels.items():
            np.testing.assert_array_equal(labels_of(msg), labels_of(reference_labels[stamp]),
                                          err_msg=f'{name} at {stamp}')


def test_sample_bag_through_the_node_matches_bag_eval(ros, tmp_path, colour_model):
    params_file = write_params(tmp_path / 'sample.yaml', {
        'front': ('/camera/front/image_raw/compressed', '/camera/front/camera_info'),
        'dash': ('/camera/dash/image_raw/compressed', '/camera/dash/camera_info')})
    # In namespace camera the node's topics are bag-eval's: /camera/front/segmentation/labels.
    recorded = replay_through_node(ros, SAMPLE_BAG, params_file, colour_model,
                                   tmp_path / 'recorded', namespace='camera')
    reference = run_bag_eval(SAMPLE_BAG, colour_model, tmp_path / 'bag_eval')
    check_replay(SAMPLE_BAG, recorded, reference,
                 {'front': '/camera/front', 'dash': '/camera/dash'})


def test_calibrated_bag_with_tf_static_through_the_node(ros, tmp_path, colour_model):
    bag = bh.write_rosbag2(tmp_path / 'calibrated', bh.ground_scene_messages(count=8))
    params_file = write_params(tmp_path / 'calibrated.yaml', {
        'cam_front': ('/cam_front/image_raw', '/cam_front/camera_info')})
    recorded = replay_through_node(ros, bag, params_file, colour_model, tmp_path / 'recorded')
    reference = run_bag_eval(bag, colour_model, tmp_path / 'bag_eval')
    check_replay(bag, recorded, reference, {'cam_front': '/cam_front'})
    infos = segmentation_outputs(recorded)['/cam_front/segmentation/camera_info']
    assert infos and all(tuple(info.k) == bh.GROUND_K for info in infos.values())
    # The grid needs the camera mount from /tf_static: played latched, or tf2 never gets it.
    grids = messages(recorded, lambda topic, _: topic == '/segmentation/drivable_grid')
    assert grids.get('/segmentation/drivable_grid'), 'no drivable grid: /tf_static not received'
    assert grids['/segmentation/drivable_grid'][-1].header.frame_id == 'odom'


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_ros2_bag_info_and_play_open_bag_evals_output(ros, tmp_path, colour_model, storage):
    bag = bh.write_rosbag2(tmp_path / 'drive', bh.two_camera_messages(count=4))
    output = run_bag_eval(bag, colour_model, tmp_path / 'bag_eval', '--storage', storage)
    metadata = yaml.safe_load((output / 'metadata.yaml').read_text())
    # Humble's rosbag2 reads metadata up to version 8 (9's QoS lists fail in yaml-cpp).
    assert metadata['rosbag2_bagfile_information']['version'] == 8
    assert metadata['rosbag2_bagfile_information']['storage_identifier'] == storage

    info = ros.launch('bag', 'info', str(output))
    assert info.proc.wait(60) == 0, info.output()
    assert f'Storage id:        {storage}' in info.output(), info.output()
    assert '/cam_front/segmentation/labels | Type: sensor_msgs/msg/Image | Count: 4' \
        in info.output(), info.output()

    client = ros.client()
    received = client.subscribe('Image', '/cam_front/segmentation/labels')
    play = ros.launch('bag', 'play', '--delay', '1', str(output))    # discovery first
    assert play.proc.wait(60) == 0, play.output()
    written = segmentation_outputs(output)['/cam_front/segmentation/labels']
    assert wait_until(lambda: len(received) == len(written), 10), (len(received), play.output())
    for msg in received:
        np.testing.assert_array_equal(labels_of(msg), labels_of(written[bh.stamp_ns(msg)]))
