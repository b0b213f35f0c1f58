"""The managed segmentation node's transitions in this process: which phase each runs, what
it makes and destroys, the model loaded once per configure, parameters locked while
configured. A stand-in pipeline: no model, no colcon build (test_ros_lifecycle_live.py
drives the built node through ros2 lifecycle and the change_state service)."""
import types

import pytest

from conftest import require_ros
from test_ros_node_in_process import DescribedPipeline

pytestmark = pytest.mark.ros

LABELS = '/camera/segmentation/labels'
IMAGES = '/camera/image_raw'


class StandInPipeline(DescribedPipeline):
    """DescribedPipeline that counts its loads and has a backend to release."""

    loaded = 0

    def __init__(self, config):
        super().__init__(config)
        type(self).loaded += 1
        self.backend = types.SimpleNamespace(closed=False)
        self.backend.close = lambda: setattr(self.backend, 'closed', True)


@pytest.fixture
def make_node(tmp_path):
    """LifecycleSegmentationNode(parameters) in a context of its own, torn down afterwards."""
    rclpy = require_ros()
    from rclpy.parameter import Parameter

    from seg_perception.ros.lifecycle_node import LifecycleSegmentationNode
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'onnx')
    made = []

    class Counting(StandInPipeline):
        loaded = 0

    def make(parameters=()):
        context = rclpy.Context()
        rclpy.init(context=context)
        overrides = [Parameter(name, value=value)
                     for name, value in {'model': str(model), **dict(parameters)}.items()]
        node = LifecycleSegmentationNode(pipeline_factory=Counting, context=context,
                                         parameter_overrides=overrides)
        made.append((node, context))
        return node, Counting

    make.model = str(model)
    yield make
    for node, context in made:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def topics(node):
    """The topics the node publishes and subscribes to, and its number of timers."""
    return ({p.topic_name for p in node.publishers}, {s.topic_name for s in node.subscriptions},
            len(list(node.timers)))


def test_each_transition_runs_its_phase_and_activation_keeps_the_loaded_model(make_node):
    from rclpy.lifecycle import TransitionCallbackReturn as Result
    node, pipeline = make_node()
    idle = topics(node)
    assert LABELS not in idle[0] and IMAGES not in idle[1]

    assert node.trigger_configure() == Result.SUCCESS
    assert pipeline.loaded == 1 and node.get_parameter('class_map.names').value == ['road', 'car']
    assert topics(node) == idle                     # inactive: nothing in or out yet
    loaded = node.pipeline

    assert node.trigger_activate() == Result.SUCCESS
    published, subscribed, timers = topics(node)
    assert {LABELS, '/diagnostics', '/segmentation/drivable_grid'} <= published
    assert {IMAGES, '/tf', '/tf_static'} <= subscribed and timers > idle[2]
    assert node.worker.alive

    worker = node.worker
    assert node.trigger_deactivate() == Result.SUCCESS
    assert topics(node) == idle and not worker.alive and node.ground is None
    assert node.pipeline is loaded and not loaded.backend.closed

    assert node.trigger_activate() == Result.SUCCESS     # again: same model, not reloaded
    assert pipeline.loaded == 1 and node.pipeline is loaded and LABELS in topics(node)[0]
    assert node.trigger_deactivate() == Result.SUCCESS

    assert node.trigger_cleanup() == Result.SUCCESS
    assert node.pipeline is None and loaded.backend.closed
    assert not node.get_parameters_by_prefix('class_map')
    assert node.trigger_configure() == Result.SUCCESS   # a fresh load
    assert pipeline.loaded == 2 and node.has_parameter('class_map.names')


@pytest.mark.parametrize('state', ['unconfigured', 'inactive', 'active'])
def test_shutdown_from_any_state_leaves_nothing_on(make_node, state):
    from rclpy.lifecycle import TransitionCallbackReturn as Result
    node, _ = make_node()
    idle = topics(node)
    steps = {'unconfigured': [], 'inactive': [node.trigger_configure],
             'active': [node.trigger_configure, node.trigger_activate]}[state]
    for step in steps:
        assert step() == Result.SUCCESS
    loaded = node.pipeline
    assert node.trigger_shutdown() == Result.SUCCESS
    assert topics(node) == idle and node.worker is None and node.pipeline is None
    assert loaded is None or loaded.backend.closed


def test_a_failed_configure_leaves_it_unconfigured_until_the_parameter_is_fixed(
        make_node, capfd):
    from rclpy.lifecycle import TransitionCallbackReturn as Result
    from rclpy.parameter import Parameter
    node, pipeline = make_node({'model': '/nowhere/model.onnx'})
    assert node.trigger_configure() == Result.FAILURE
    errors = [line for line in capfd.readouterr().err.splitlines() if 'configure failed' in line]
    assert len(errors) == 1 and '/nowhere/model.onnx' in errors[0], errors
    assert pipeline.loaded == 0 and node.pipeline is None

    (done,) = node.set_parameters([Parameter('model', value=make_node.model)])
    assert done.successful, done.reason
    assert node.trigger_configure() == Result.SUCCESS and pipeline.loaded == 1

    # Configured: what configure read is locked (it would not apply); others are not.
    (refused,) = node.set_parameters([Parameter('model', value='/other.onnx')])
    assert not refused.successful and refused.reason.startswith('model: read at configure')
    (refused,) = node.set_parameters([Parameter('class_map.names', value=['x', 'y'])])
    assert not refused.successful
    (done,) = node.set_parameters([Parameter('use_sim_time', value=True)])
    assert done.successful
    assert node.trigger_cleanup() == Result.SUCCESS
    (done,) = node.set_parameters([Parameter('publish_color', value=True)])
    assert done.successful, done.reason


def test_an_activation_that_raises_is_undone_and_the_node_can_configure_again(
        make_node, monkeypatch, capfd):
    from rclpy.lifecycle import TransitionCallbackReturn as Result
    node, pipeline = make_node()
    idle = topics(node)
    assert node.trigger_configure() == Result.SUCCESS

    def broken():
        raise RuntimeError('no diagnostics today')
    monkeypatch.setattr(node, '_create_diagnostics', broken)
    loaded = node.pipeline
    assert node.trigger_activate() == Result.ERROR
    assert 'activate failed: RuntimeError: no diagnostics today' in capfd.readouterr().err
    # on_error released what the half-done activation made, and the model: unconfigured.
    assert topics(node) == idle and node.worker is None and loaded.backend.closed
    monkeypatch.undo()
    assert node.trigger_configure() == Result.SUCCESS
    assert node.trigger_activate() == Result.SUCCESS and pipeline.loaded == 2
