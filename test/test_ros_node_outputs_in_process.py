"""segmentation_node's mask, probability and colour publishers and its model swap, in this
process with stand-in pipelines (no model loaded, no colcon build)."""
import time
import types

import numpy as np
import pytest

import test_ros_node_in_process
from ros_live_helpers import wait_until

pytestmark = pytest.mark.ros
make_node = test_ros_node_in_process.make_node      # the fixture: a node in its own context


class StandIn:
    """Just enough of SegmentationPipeline for the node: class map, heads, describe()."""

    def __init__(self, config, classes=('road', 'car'), masks=(), probabilities=()):
        self.info = types.SimpleNamespace(
            class_names=list(classes), palette=[[i, i, i] for i in range(len(classes))],
            input_size=(8, 8), masks=list(masks), probabilities=list(probabilities))
        self.want_color = config.publish_color

    def describe(self):
        return {'name': 'fake', 'precision': 'fp32', 'device': 'cpu', 'drivable_ids': [0]}

    def process(self, frames, encodings=None, ego_masks=None):
        return []


def factory(**heads):
    return lambda config: StandIn(config, **heads)


def frame():
    """A worker frame of camera 'camera' with a real Image message (its header is reused)."""
    from sensor_msgs.msg import Image

    from seg_perception.ros.frame_slots import Frame
    return Frame('camera', Image(), 0, time.perf_counter())


def result():
    labels = np.zeros((4, 6), np.uint8)
    return types.SimpleNamespace(labels=labels, drivable_mask=labels, confidence=None,
                                 color=np.full((4, 6, 3), 9, np.uint8), masks={},
                                 probabilities={})


def test_a_probability_the_model_lacks_stops_the_start_with_one_line(make_node):
    from seg_perception.ros.node import StartupError
    node = make_node({'publish_probabilities': ['car', 'bus']})
    with pytest.raises(StartupError) as raised:
        node.start(pipeline_factory=factory(probabilities=['car', 'road']))
    assert str(raised.value) == (
        f"cannot use model {node.config.model_path}: parameter 'publish_probabilities': bus "
        "not among the model's probability outputs (it has: car, road); `seg-perception "
        "export --probabilities` or the import contract's probabilities: add them")


def test_colour_is_made_and_published_only_while_someone_subscribes(make_node):
    from sensor_msgs.msg import Image
    node = make_node({'publish_color': True})
    node.start(pipeline_factory=factory())
    received = []
    node.create_subscription(Image, 'camera/segmentation/labels', lambda m: None, 1)
    node._publish(frame(), result())
    assert node.pipeline.want_color is False            # nobody listens: next batch has none
    node.create_subscription(Image, 'camera/segmentation/color', received.append, 1)
    publisher = node.image_publishers['camera']['color']
    assert wait_until(lambda: publisher.get_subscription_count() > 0, 5)
    node._publish(frame(), result())
    assert node.pipeline.want_color is True

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline and rclpy.ok(context=node.context):
        executor.spin_once(timeout_sec=0.1)
    executor.remove_node(node)
    assert received and received[0].encoding == 'rgb8'


def test_a_swap_changes_the_mask_and_probability_publishers_and_the_class_map(
        make_node, tmp_path):
    node = make_node({'publish_probabilities': ['car']})
    node.start(pipeline_factory=factory(masks=['lanes'], probabilities=['car']))
    assert sorted(node.image_publishers['camera']) == [
        'drivable_mask', 'labels', 'lanes', 'probability/car']
    kept = node.image_publishers['camera']['labels']
    other = tmp_path / 'other.onnx'
    other.write_bytes(b'onnx')
    node._swap_factory = factory(classes=('lane', 'car', 'kerb'), masks=['kerbs'],
                                 probabilities=['car'])
    (done,) = node.set_parameters([rclpy_parameter('model', str(other))])
    assert done.successful, done.reason
    assert sorted(node.image_publishers['camera']) == [
        'drivable_mask', 'kerbs', 'labels', 'probability/car']
    assert node.image_publishers['camera']['labels'] is kept
    # The node's own publishers (a graph query by name may also see another test's node).
    topics = {publisher.topic_name for publisher in node.publishers}
    assert '/camera/segmentation/kerbs' in topics and '/camera/segmentation/lanes' not in topics
    assert node.get_parameter('class_map.names').value == ['lane', 'car', 'kerb']
    assert node.backend_values['model'] == str(other)


def test_a_refused_swap_names_the_problem_and_keeps_everything(make_node, tmp_path):
    node = make_node({'publish_probabilities': ['car']})
    node.start(pipeline_factory=factory(probabilities=['car']))
    running, publishers = node.pipeline, dict(node.image_publishers['camera'])
    other = tmp_path / 'other.onnx'
    other.write_bytes(b'onnx')
    node._swap_factory = factory(classes=('lane', 'kerb'))
    (refused,) = node.set_parameters([rclpy_parameter('model', str(other))])
    assert not refused.successful
    assert refused.reason.startswith(f"cannot use model {other}: parameter "
                                     "'publish_probabilities': car not among")
    assert node.pipeline is running and node.image_publishers['camera'] == publishers
    assert node.get_parameter('model').value != str(other)
    assert node.get_parameter('class_map.names').value == ['road', 'car']


def rclpy_parameter(name, value):
    from rclpy.parameter import Parameter
    return Parameter(name, value=value)
