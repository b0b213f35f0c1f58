"""A model's extra outputs and run-time model swaps on a real ROS 2 runtime.

The two ColourNets label a frame of blue sky over red road differently: the test model of
the other live tests gives sky 2 over road 0, the one exported here (classes air, lane,
verge) air 0 over lane 1, so every labels message shows which model made it.
"""
import threading
import time

import numpy as np
import pytest

from conftest import require_ros
from live_ros_fixtures import write_params
from ros_live_helpers import halves_frame, wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

HEIGHT, WIDTH = 48, 64
OLD, NEW = (2, 0), (0, 1)          # (top, bottom) labels of the two models
NODE = '/segmentation_node'


@pytest.fixture(scope='module')
def other_model(tmp_path_factory):
    """A ColourNet with other classes in another order: blue is air (0), red lane (1)."""
    require_ros()
    from colour_net import ARCHITECTURE, ColourNet

    from seg_perception.deploy.export import export_onnx
    from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo
    colours = [[0, 0, 255], [255, 0, 0], [0, 255, 0]]
    info = ModelInfo(architecture=ARCHITECTURE, num_classes=3, class_names=['air', 'lane', 'verge'],
                     palette=[[70, 130, 180], [128, 64, 128], [0, 200, 0]], drivable_ids=[1],
                     input_size=(32, 64), mean=LITE0_MEAN, std=LITE0_STD,
                     arch_config={'colours': colours, 'texture': 0.0}, label_space='other')
    path = str(tmp_path_factory.mktemp('other') / 'other.onnx')
    export_onnx(ColourNet(3, colours).eval(), info, path, output_resolution='network')
    return path


@pytest.fixture(scope='module')
def heads_model(tmp_path_factory):
    """An imported foreign model with two masks (lane_lines, drivable) and car probability."""
    require_ros()
    from import_helpers import TwoHeads, blocky_frame, export

    from seg_perception.deploy.contract import parse_contract
    from seg_perception.deploy.import_model import import_model
    folder = tmp_path_factory.mktemp('heads')
    contract = parse_contract({
        'input': {'size': [64, 96], 'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.3, 0.25]},
        'classes': {'output': 'seg', 'names': ['road', 'sidewalk', 'car', 'pedestrian', 'sky'],
                    'drivable': ['road']},
        'drivable': {'output': 'da'}, 'masks': {'lane_lines': {'output': 'll', 'positive': 1}},
        'probabilities': ['car']})
    path = str(folder / 'heads.onnx')
    import_model(export(TwoHeads(), folder / 'two.onnx'), contract, path, blocky_frame())
    return path


class Stream:
    """Publishes the halves frame at about 20 Hz from a thread of its own."""

    def __init__(self, client, topic):
        self.camera = client.image_publisher(topic, 'rgb8')
        self.frame = halves_frame(HEIGHT, WIDTH, 'rgb8')
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.camera.send(self.frame)
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(5)


def which_model(msg):
    """OLD or NEW for a labels message (each half flat in one model's labels), else None."""
    labels = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
    top, bottom = labels[:HEIGHT // 2 - 2], labels[HEIGHT // 2 + 2:]
    for model in (OLD, NEW):
        if (top == model[0]).all() and (bottom == model[1]).all():
            return model
    return None


def set_parameter(client, name, value, timeout=60.0):
    """The node's SetParametersResult for one parameter."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    service = client.node.create_client(SetParameters, f'{NODE}/set_parameters')
    assert service.wait_for_service(timeout), 'set_parameters not available'
    future = service.call_async(SetParameters.Request(
        parameters=[Parameter(name, value=value).to_parameter_msg()]))
    assert wait_until(future.done, timeout), 'set_parameters timed out'
    return future.result().results[0]


def start_node(ros, tmp_path, model, **extra):
    params_file = write_params(tmp_path / 'front.yaml', {'front': ('/front/image', 'raw')},
                               max_frame_age_ms=0.0, **extra)
    return ros.launch('launch', 'seg_perception', 'segmentation.launch.py',
                      f'params_file:={params_file}', f'model:={model}')


def test_a_swap_under_a_stream_changes_model_between_frames(ros, tmp_path, colour_model,
                                                            other_model):
    node = start_node(ros, tmp_path, colour_model)
    client = ros.client()
    labels = client.subscribe('Image', '/front/segmentation/labels')
    stream = Stream(client, '/front/image')
    try:
        assert wait_until(lambda: len(labels) >= 5, 60, 0.1, node.alive), node.output()
        result = set_parameter(client, 'model', other_model)
        assert result.successful, result.reason
        assert wait_until(lambda: sum(which_model(m) == NEW for m in labels) >= 5, 20, 0.1,
                          node.alive), node.output()[-2000:]
    finally:
        stream.stop()
    models = [which_model(m) for m in labels]
    assert None not in models, 'a labels message from neither model (or from both)'
    first_new = models.index(NEW)
    assert set(models[:first_new]) == {OLD} and set(models[first_new:]) == {NEW}
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in labels]
    assert stamps == sorted(stamps)

    label_info = client.subscribe('LabelInfo', '/segmentation/label_info', latched=True)
    assert wait_until(lambda: label_info, 15), 'no latched LabelInfo'
    assert [(c.class_id, c.class_name) for c in label_info[-1].class_map] == \
        [(0, 'air'), (1, 'lane'), (2, 'verge')]
    assert client.get_parameters(NODE, ['class_map.names', 'class_map.drivable_ids', 'model']) \
        == [['air', 'lane', 'verge'], [1], other_model]
    log = node.output()
    for line in (f'model swap: loading {other_model}', f'model swap: loaded {other_model}',
                 f'model swap: swapped to {other_model}'):
        assert line in log


def test_a_refused_swap_names_the_problem_and_changes_nothing(
        ros, tmp_path, colour_model, other_model):
    node = start_node(ros, tmp_path, colour_model, drivable_classes='[road]')
    client = ros.client()
    labels = client.subscribe('Image', '/front/segmentation/labels')
    names = ['class_map.names', 'class_map.drivable_ids', 'model']
    stream = Stream(client, '/front/image')
    try:
        assert wait_until(lambda: len(labels) >= 3, 60, 0.1, node.alive), node.output()
        before = client.get_parameters(NODE, names)
        missing = str(tmp_path / 'missing.onnx')
        result = set_parameter(client, 'model', missing)
        assert not result.successful
        assert result.reason == f"parameter 'model': file not found: {missing}"
        # The other model has no class 'road' for the node's drivable_classes.
        result = set_parameter(client, 'model', other_model)
        assert not result.successful
        assert result.reason.startswith(f'cannot use model {other_model}: ') and \
            'road' in result.reason, result.reason
        count = len(labels)
        assert wait_until(lambda: len(labels) >= count + 5, 20, 0.1, node.alive), \
            node.output()[-2000:]
    finally:
        stream.stop()
    assert {which_model(m) for m in labels} == {OLD}
    assert client.get_parameters(NODE, names) == before
    assert before[0] == ['road', 'grass', 'sky', 'car', 'building'] and before[2] == colour_model


def test_masks_and_probabilities_are_published_and_colour_when_subscribed(
        ros, tmp_path, heads_model):
    node = start_node(ros, tmp_path, heads_model, publish_color='true',
                      publish_probabilities='[car]')
    client = ros.client()
    topics = ['labels', 'lane_lines', 'drivable', 'probability/car']
    received = {t: client.subscribe('Image', f'/front/segmentation/{t}') for t in topics}
    stream = Stream(client, '/front/image')
    try:
        assert wait_until(lambda: all(received.values()), 60, 0.1, node.alive), node.output()
        color = client.subscribe('Image', '/front/segmentation/color')
        assert wait_until(lambda: len(color) >= 2, 20, 0.1, node.alive), node.output()[-2000:]
    finally:
        stream.stop()
    for topic in topics:
        msg = received[topic][-1]
        assert (msg.encoding, msg.height, msg.width) == ('mono8', HEIGHT, WIDTH), topic
    for topic in ('lane_lines', 'drivable'):
        assert set(np.unique(np.frombuffer(received[topic][-1].data, np.uint8))) <= {0, 255}
    assert (color[-1].encoding, color[-1].height, color[-1].width) == ('rgb8', HEIGHT, WIDTH)
    headers = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in received['labels']}
    assert (received['probability/car'][-1].header.stamp.sec,
            received['probability/car'][-1].header.stamp.nanosec) in headers
