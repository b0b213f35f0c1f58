"""segmentation_node's rclpy side in this process: no colcon build, no model loaded."""
import functools
import types

import pytest

from conftest import require_ros

pytestmark = pytest.mark.ros


@pytest.fixture
def make_node(tmp_path):
    """SegmentationNode(parameters, ros_args) in a context of its own, torn down afterwards."""
    rclpy = require_ros()
    from rclpy.parameter import Parameter

    from seg_perception.ros.node import SegmentationNode
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'onnx')
    made = []

    def make(parameters, ros_args=(), namespace=None):
        context = rclpy.Context()
        rclpy.init(context=context)
        overrides = [Parameter(name, value=value)
                     for name, value in {'model': str(model), **parameters}.items()]
        node = SegmentationNode(context=context, namespace=namespace,
                                parameter_overrides=overrides,
                                cli_args=['--ros-args', *ros_args] if ros_args else None)
        made.append((node, context))
        return node

    yield make
    for node, context in made:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def never_load(config):
    pytest.fail('the model was loaded although the parameters are invalid')


@pytest.mark.parametrize('topics,ros_args,namespace,message', [
    (['/x', 'x'], (), None, 'cameras a, b all subscribe to /x (given as /x, x)'),
    (['/car/x', 'x'], (), '/car', 'cameras a, b all subscribe to /car/x (given as /car/x, x)'),
    (['/x', 'y'], ('-r', 'y:=/x'), None, 'cameras a, b all subscribe to /x (given as /x, y)'),
    (['/x', 'a b'], (), None, "parameter 'cameras.b.topic': 'a b' is not a valid topic name"),
])
def test_cameras_on_one_resolved_topic_stop_the_start_with_one_line(
        make_node, topics, ros_args, namespace, message):
    from seg_perception.ros.node import StartupError
    node = make_node({'cameras': ['a', 'b'], 'cameras.a.topic': topics[0],
                      'cameras.b.topic': topics[1]}, ros_args, namespace)
    with pytest.raises(StartupError) as raised:
        node.start(pipeline_factory=never_load)
    assert str(raised.value) == message


@pytest.mark.parametrize('topic', ['/x', 'x', 'a/b', '~/x', '~'])
@pytest.mark.parametrize('namespace', ['/', '/car', '/car/front'])
def test_the_ros_free_expansion_matches_rclpy(make_node, topic, namespace):
    from seg_perception.ros import params
    node = make_node({}, namespace=namespace)
    assert params.expand_topic_name(topic, namespace) == node.resolve_topic_name(topic)


class DescribedPipeline:
    """Just enough of SegmentationPipeline for start(): the class map and describe()."""

    def __init__(self, config):
        self.info = types.SimpleNamespace(class_names=['road', 'car'],
                                          palette=[[10, 20, 30], [200, 0, 0]],
                                          input_size=(360, 480))

    def describe(self):
        return {'name': 'fake', 'precision': 'fp32', 'device': 'cpu', 'drivable_ids': [0]}

    def process(self, frames, encodings=None):
        return []


def test_a_raw_frame_over_the_receive_buffer_ceiling_is_warned_about_once(
        make_node, tmp_path, monkeypatch, capfd):
    from sensor_msgs.msg import CompressedImage, Image

    from seg_perception.ros import node as node_module, upstream
    ceiling = tmp_path / 'rmem_max'
    ceiling.write_text(f'{2 ** 20}\n')
    monkeypatch.setattr(node_module, 'receive_buffer_ceiling',
                        functools.partial(upstream.receive_buffer_ceiling, str(ceiling)))
    node = make_node({'cameras': ['front', 'side'], 'cameras.side.transport': 'compressed'})
    node.start(pipeline_factory=DescribedPipeline)
    small = Image(height=480, width=640, encoding='mono8', step=640)
    small.data.frombytes(bytes(640 * 480))
    large = Image(height=1024, width=1280, encoding='rgb8', step=1280 * 3)
    large.data.frombytes(bytes(1280 * 1024 * 3))
    jpeg = CompressedImage(format='jpeg')
    jpeg.data.frombytes(bytes(2 * 2 ** 20))
    capfd.readouterr()
    for camera, msg in (('front', small), ('side', jpeg), ('front', large), ('front', large)):
        node._on_image(camera, msg)
    warnings = [line for line in capfd.readouterr().err.splitlines() if 'rmem_max' in line]
    assert len(warnings) == 1, warnings
    assert 'front: raw frames of 3.8 MiB are larger than the kernel\'s socket receive-buffer ' \
        'ceiling (net.core.rmem_max = 1.0 MiB)' in warnings[0]
