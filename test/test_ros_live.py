"""segmentation_node on a real ROS 2 runtime: colcon build, ros2 launch, pub/sub.

One colcon build and one exported test model per session (live_ros_fixtures). Each
test runs in its own ROS_DOMAIN_ID and ends every process it started.

The model is runtime_models.ColourNet: flat red = road (drivable), green = grass,
blue = sky, black = car, white = building, so the expected labels are known.
"""
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import require_ros
from live_ros_fixtures import next_domain, write_params
from ros_live_helpers import expected_halves, halves_frame, wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

HEIGHT, WIDTH = 48, 64


def check_labels(received, camera, sent, encoding_kind):
    """The received labels/drivable mask match the halves frame and carry a sent header."""
    labels_msg = received[-1]
    stamp = (labels_msg.header.stamp.sec, labels_msg.header.stamp.nanosec)
    assert sent.get(stamp) == labels_msg.header.frame_id, f'{camera}: header not passed on'
    assert (labels_msg.height, labels_msg.width) == (HEIGHT, WIDTH), camera
    assert labels_msg.encoding == 'mono8' and labels_msg.step == WIDTH
    labels = np.frombuffer(labels_msg.data, np.uint8).reshape(HEIGHT, WIDTH)
    top, bottom = expected_halves(encoding_kind)
    margin = HEIGHT // 6               # rows near the boundary may go either way
    assert (labels[:HEIGHT // 2 - margin] == top).all(), f'{camera}: top {labels[:2]}'
    assert (labels[HEIGHT // 2 + margin:] == bottom).all(), f'{camera}: bottom {labels[-2:]}'
    return labels


def test_encodings_are_segmented_with_input_headers(ros, tmp_path, colour_model):
    cameras = {'rgb': ('/cams/rgb/image', 'raw'), 'bgr': ('/cams/bgr/image', 'raw'),
               'mono': ('/cams/mono/image', 'raw'),
               'jpeg': ('/cams/jpeg/image/compressed', 'compressed'),
               'png': ('/cams/png/image/compressed', 'compressed')}
    params_file = write_params(tmp_path / 'five.yaml', cameras, max_frame_age_ms=0.0,
                               publish_color='true', publish_confidence='true')
    node = ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={colour_model}')
    client = ros.client()
    labels = {cam: client.subscribe('Image', f'/{cam}/segmentation/labels') for cam in cameras}
    drivable = {cam: client.subscribe('Image', f'/{cam}/segmentation/drivable_mask')
                for cam in cameras}
    color = client.subscribe('Image', '/rgb/segmentation/color')
    confidence = client.subscribe('Image', '/rgb/segmentation/confidence')
    diagnostics = client.subscribe('DiagnosticArray', '/diagnostics')
    kinds = {'rgb': 'rgb8', 'bgr': 'bgr8', 'mono': 'mono8', 'jpeg': 'jpeg', 'png': 'png'}
    publishers = {cam: client.image_publisher(topic, kinds[cam])
                  for cam, (topic, _) in cameras.items()}
    sent = {cam: {} for cam in cameras}
    frames = {cam: halves_frame(HEIGHT, WIDTH, kinds[cam]) for cam in cameras}

    def publish_all():
        for cam, publisher in publishers.items():
            if not labels[cam]:
                stamp = publisher.send(frames[cam], frame_id=f'{cam}_optical')
                sent[cam][stamp] = f'{cam}_optical'
        return all(labels[cam] and drivable[cam] for cam in cameras)

    assert wait_until(publish_all, 60, 0.2, node.alive), node.output()
    for cam in cameras:
        check_labels(labels[cam], cam, sent[cam], kinds[cam])
        mask_msg = drivable[cam][-1]
        assert (mask_msg.encoding, mask_msg.height, mask_msg.width) == ('mono8', HEIGHT, WIDTH)
        mask = np.frombuffer(mask_msg.data, np.uint8).reshape(HEIGHT, WIDTH)
        road = check_labels(labels[cam], cam, sent[cam], kinds[cam]) == 0
        matching = [m for m in drivable[cam] if m.header == labels[cam][-1].header]
        if matching:
            mask = np.frombuffer(matching[-1].data, np.uint8).reshape(HEIGHT, WIDTH)
            assert np.array_equal(mask == 255, road), cam
        assert set(np.unique(mask)) <= {0, 255}

    # Optional outputs: colour overlay and confidence, at camera size.
    assert wait_until(lambda: color and confidence, 10), 'no color/confidence'
    assert (color[-1].encoding, color[-1].height, color[-1].width) == ('rgb8', HEIGHT, WIDTH)
    overlay = np.frombuffer(color[-1].data, np.uint8).reshape(HEIGHT, WIDTH, 3)
    assert not np.array_equal(overlay[0, 0], overlay[-1, 0])     # sky and road differ
    assert (confidence[-1].encoding, confidence[-1].height) == ('mono8', HEIGHT)

    # The class map: latched LabelInfo for a late subscriber, and read-only parameters.
    label_info = client.subscribe('LabelInfo', '/segmentation/label_info', latched=True)
    assert wait_until(lambda: label_info, 15), 'no latched LabelInfo'
    names = [c.class_name for c in label_info[0].class_map]
    assert names == ['road', 'grass', 'sky', 'car', 'building']
    assert [c.class_id for c in label_info[0].class_map] == [0, 1, 2, 3, 4]
    values = client.get_parameters('/segmentation_node',
                                   ['class_map.names', 'class_map.drivable_ids'])
    assert values == [names, [0]]

    # Per-camera diagnostics with rates, latency and the backend.
    def camera_status():
        statuses = {s.name: s for array in diagnostics for s in array.status}
        wanted = [statuses.get(f'segmentation_node: {cam} segmentation') for cam in cameras]
        ok = all(s is not None and dict((kv.key, kv.value) for kv in s.values)
                 .get('published', '0') != '0' for s in wanted)
        return wanted if ok else None

    assert wait_until(camera_status, 15), 'no per-camera diagnostics'
    status = camera_status()[0]
    fields = {kv.key: kv.value for kv in status.values}
    assert fields['backend'] == 'onnxruntime' and fields['precision'] == 'fp32'
    # precision 'auto', the default, says why it chose fp32 (this test model has no INT8 form).
    assert fields['precision_reason'].startswith('auto: no ') and \
        fields['precision_reason'].endswith('.cpu.int8.onnx beside the model')
    for key in ('input_rate_hz', 'output_rate_hz', 'latency_p50_ms', 'latency_p95_ms',
                'dropped'):
        assert key in fields, key
    assert float(fields['latency_p95_ms']) >= float(fields['latency_p50_ms']) >= 0

    assert node.interrupt() == 0, node.output()
    output = node.output()
    assert 'Traceback' not in output and 'process has finished cleanly' in output, output


def test_bad_frames_are_dropped_counted_and_the_node_keeps_running(
        ros, tmp_path, colour_model):
    cameras = {'front': ('/front/image', 'raw'),
               'side': ('/side/image/compressed', 'compressed')}
    params_file = write_params(tmp_path / 'two.yaml', cameras, max_frame_age_ms=0.0,
                               **{'diagnostic_updater.period': 0.5})
    node = ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={colour_model}')
    client = ros.client()
    labels = {cam: client.subscribe('Image', f'/{cam}/segmentation/labels') for cam in cameras}
    diagnostics = client.subscribe('DiagnosticArray', '/diagnostics')
    front = client.image_publisher('/front/image', 'rgb8')
    side = client.image_publisher('/side/image/compressed', 'jpeg')
    good = halves_frame(HEIGHT, WIDTH, 'rgb8')

    def dropped(camera):
        for array in reversed(diagnostics):
            for status in array.status:
                if status.name == f'segmentation_node: {camera} segmentation':
                    return {kv.key: kv.value for kv in status.values}
        return {}

    # Wait until the node is up, then send broken frames for a while.
    assert wait_until(lambda: front.send(good) and labels['front'], 60, 0.2, node.alive), \
        node.output()
    corrupt_jpeg = b'\xff\xd8\xff\xe0' + bytes(range(256)) * 4 + b'\xff\xd9'
    for _ in range(10):
        front.send_raw(good, step=WIDTH * 3 - 1)             # step shorter than a row
        side.send_bytes(corrupt_jpeg)
        time.sleep(0.1)
    assert wait_until(lambda: dropped('front').get('dropped.bad_frame', '0') != '0'
                      and dropped('side').get('dropped.bad_frame', '0') != '0', 15), \
        node.output()
    output = node.output()
    assert 'front: dropped frame (bad_frame): step 191 is smaller' in output
    assert 'side: dropped frame (bad_frame): corrupt JPEG' in output
    # Still alive and still segmenting.
    labels['side'].clear()
    assert wait_until(lambda: side.send(halves_frame(HEIGHT, WIDTH, 'jpeg')) and labels['side'],
                      20, 0.2, node.alive), node.output()
    assert node.interrupt() == 0
    assert 'Traceback' not in node.output()


def test_six_camera_config(ros, tmp_path, colour_model, workspace):
    params_file = workspace / 'seg_perception/share/seg_perception/config/six_cameras.yaml'
    node = ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={colour_model}')
    client = ros.client()
    names = ['front', 'front_left', 'front_right', 'back', 'back_left', 'back_right']
    labels = {n: client.subscribe('Image', f'/{n}/segmentation/labels') for n in names}
    infos = {n: client.subscribe('CameraInfo', f'/{n}/segmentation/camera_info') for n in names}
    publishers = {n: client.image_publisher(f'/sensors/camera/{n}/image_raw/compressed', 'jpeg')
                  for n in names}
    info_publishers = {n: client.camera_info_publisher(f'/sensors/camera/{n}/camera_info')
                       for n in names}
    frame = halves_frame(HEIGHT, WIDTH, 'jpeg')

    def publish_all():
        for name in names:
            if not (labels[name] and infos[name]):
                info_publishers[name].send(WIDTH, HEIGHT)
                publishers[name].send(frame, frame_id=name)
        return all(labels[n] and infos[n] for n in names)

    assert wait_until(publish_all, 60, 0.2, node.alive), node.output()
    for name in names:
        msg = labels[name][-1]
        assert msg.header.frame_id == name and (msg.height, msg.width) == (HEIGHT, WIDTH)
        info = infos[name][-1]
        assert (info.width, info.height) == (WIDTH, HEIGHT) and info.header.frame_id == name
    assert node.interrupt() == 0


def test_sim_time_drives_frame_age_and_latency(ros, tmp_path, colour_model):
    params_file = write_params(tmp_path / 'sim.yaml', {'cam': ('/cam/image', 'raw')},
                               max_frame_age_ms=1000.0)
    node = ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={colour_model}',
                      'use_sim_time:=true')
    client = ros.client()
    labels = client.subscribe('Image', '/cam/segmentation/labels')
    clock = client.clock_publisher()
    camera = client.image_publisher('/cam/image', 'rgb8')
    frame = halves_frame(HEIGHT, WIDTH, 'rgb8')
    sim_now = 1000.0                  # far from wall time: only sim time makes these fresh

    def send_fresh():
        clock.send(sim_now)
        camera.send(frame, stamp=sim_now - 0.1)
        return bool(labels)

    assert wait_until(send_fresh, 60, 0.2, node.alive), node.output()
    assert labels[-1].header.stamp.sec == int(sim_now - 0.1)
    for _ in range(10):               # 5 s old in sim time: dropped as too old
        clock.send(sim_now)
        camera.send(frame, stamp=sim_now - 5.0)
        time.sleep(0.1)
    assert wait_until(lambda: 'dropped frame (too_old): 5000 ms old' in node.output(), 10), \
        node.output()
    assert [m for m in labels if m.header.stamp.sec == int(sim_now - 5.0)] == []
    assert node.interrupt() == 0


def test_the_camera_dds_profile_is_installed_and_taken_by_cyclonedds(workspace):
    from seg_perception.ros.upstream import CAMERA_PROFILE, receive_buffer_ceiling
    profile = workspace / 'seg_perception/share/seg_perception' / CAMERA_PROFILE
    assert profile.is_file(), 'setup.py does not install the CycloneDDS profile'
    if os.environ.get('RMW_IMPLEMENTATION', 'rmw_cyclonedds_cpp') != 'rmw_cyclonedds_cpp':
        pytest.skip('the profile is for CycloneDDS')
    if (receive_buffer_ceiling() or 0) < 10 * 2 ** 20:
        pytest.skip('net.core.rmem_max is below 10 MiB: Cyclone refuses the profile here')
    trace = '<Tracing><Category>config</Category><OutputFile>stderr</OutputFile></Tracing>'
    env = dict(os.environ, ROS_DOMAIN_ID=str(next_domain()),
               CYCLONEDDS_URI=f'{os.environ.get("CYCLONEDDS_URI", "")},file://{profile},{trace}'
               .lstrip(','))
    code = 'import rclpy; rclpy.init(); rclpy.create_node("profile_check"); print("started")'
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and 'started' in done.stdout, done.stderr
    assert 'SocketReceiveBufferSize[@min]: 10 MiB' in done.stderr, done.stderr


@pytest.mark.parametrize('args,message', [
    (['-p', 'model:=/nonexistent/model.onnx'],
     "cannot start: parameter 'model': file not found: /nonexistent/model.onnx"),
    (['-p', 'backend:=tensorflow'], "cannot start: parameter 'backend': 'tensorflow' is not"),
    (['-p', 'cameras:=[front]', '-p', 'cameras.front.transport:=h264'],
     "cannot start: parameter 'cameras.front.transport': 'h264' is not one of raw, compressed"),
    (['-p', 'drivable_classes:=[road, lawn]'], "unknown drivable class 'lawn'"),
])
def test_bad_model_or_parameter_fails_with_one_clear_message(ros, colour_model, args, message):
    if '-p' in args and not any(a.startswith('model:=') for a in args):
        args = args + ['-p', f'model:={colour_model}']
    node = ros.launch('run', 'seg_perception', 'segmentation_node', '--ros-args', *args)
    assert node.proc.wait(60) == 1
    output = node.output()
    assert message in output and 'Traceback' not in output, output


def test_corrupt_model_file_fails_cleanly(ros, tmp_path):
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not a model')
    node = ros.launch('run', 'seg_perception', 'segmentation_node', '--ros-args',
                      '-p', f'model:={broken}')
    assert node.proc.wait(60) == 1
    output = node.output()
    assert f'cannot start: cannot use model {broken}' in output and 'Traceback' not in output


def test_stop_signals_record_the_first_signal_and_restore_the_handlers():
    require_ros()
    from seg_perception.signals import StopSignals
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGTERM)     # handled at the next bytecode: no exit
        os.kill(os.getpid(), signal.SIGINT)      # a second signal keeps the first's name
        assert stop.received == 'SIGTERM'
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_stop_signal_ends_the_node_cleanly_with_exit_code_0(ros, colour_model, sig):
    node = ros.launch('run', 'seg_perception', 'segmentation_node', '--ros-args',
                      '-p', f'model:={colour_model}', '-p', 'cameras.camera.topic:=/img')
    client = ros.client()
    camera = client.image_publisher('/img', 'rgb8')
    labels = client.subscribe('Image', '/camera/segmentation/labels')
    frame = cv2.resize(halves_frame(HEIGHT, WIDTH, 'rgb8'), (WIDTH * 4, HEIGHT * 4))
    assert wait_until(lambda: camera.send(frame) and labels, 60, 0.2, node.alive), node.output()
    for _ in range(5):                 # interrupt while frames are in flight
        camera.send(frame)
    stop = node.interrupt if sig == signal.SIGINT else node.terminate_child
    assert stop() == 0, node.output()
    output = node.output()
    # Humble rclpy's own handler raised KeyboardInterrupt anywhere, once inside a
    # Task constructor, whose destructor then printed a traceback (a CI failure).
    assert 'Traceback' not in output and 'Exception ignored' not in output, output
    assert f'{sig.name}: shutting down' in output, output
    assert 'context is invalid' not in output, output


def is_loading_rclpy(pid: int) -> bool:
    """Whether process ``pid`` has mapped rclpy's C extension: its imports are under way."""
    try:
        with open(f'/proc/{pid}/maps') as handle:
            return '_rclpy_pybind11' in handle.read()
    except FileNotFoundError:
        return False


def test_sigint_during_the_slow_imports_ends_the_node_cleanly(ros, colour_model):
    node = ros.launch('run', 'seg_perception', 'segmentation_node', '--ros-args',
                      '-p', f'model:={colour_model}')

    def node_pid():
        """The node's process once ros2 run has started it (not a helper of the setup)."""
        with open(f'/proc/{node.proc.pid}/task/{node.proc.pid}/children') as handle:
            children = handle.read().split()
        for child in children:
            try:
                with open(f'/proc/{child}/cmdline', 'rb') as handle:
                    if b'lib/seg_perception/segmentation_node' in handle.read():
                        return int(child)
            except FileNotFoundError:
                pass
        return None

    pid = wait_until(node_pid, 60, 0.005, node.alive)
    assert pid, node.output()
    # Interrupt while rclpy, NumPy and OpenCV are being imported (about a second).
    assert wait_until(lambda: is_loading_rclpy(pid), 30, 0.002), node.output()
    os.kill(pid, signal.SIGINT)
    assert node.proc.wait(30) == 0, node.output()
    output = node.output()
    assert 'Traceback' not in output and 'SIGINT: shutting down' in output, output
    assert 'segmenting' not in output, output      # stopped before loading the model
