"""The managed segmentation node on a real ROS 2 runtime (segmentation.launch.py
lifecycle:=true): driven by ``ros2 lifecycle set`` and ``ros2 param set`` (the command
line) and by the change_state service the way a lifecycle manager does it.

Whether labels flow is told by stamps: every frame sent carries a stamp of its own and
the labels carry their input's header. "No labels while inactive" is checked after the
next activation, once labels of later frames came: none for the frames sent before (no
wait of a guessed length for something not to happen).
"""
import pytest

from conftest import require_ros
from live_ros_fixtures import write_params
from ros_live_helpers import halves_frame, wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = '/segmentation_node'
IMAGES, LABELS = '/front/image', '/front/segmentation/labels'
FRAME = halves_frame(48, 64, 'rgb8')


class Camera:
    """Sends frames with stamps of its own; tells which of them came back as labels."""

    def __init__(self, client):
        self.publisher = client.image_publisher(IMAGES, 'rgb8')
        self.labels = client.subscribe('Image', LABELS)
        self.count = 0

    def send(self):
        self.count += 1
        return self.publisher.send(FRAME, 'front', stamp=1000.0 + self.count)

    def answered(self, stamps):
        got = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in list(self.labels)}
        return got & set(stamps)

    def segments(self, node, timeout=60):
        """Frames sent now come back as labels (within ``timeout``)."""
        sent = []
        return wait_until(lambda: sent.append(self.send()) or self.answered(sent),
                          timeout, 0.2, node.alive)

    def send_many(self, frames=10):
        """Frames sent while the node should not process them (checked once it does again:
        reliable and in order, their labels would come before the later frames')."""
        return [self.send() for _ in range(frames)]


def lifecycle_client(client):
    """change_state(transition) -> success and state() -> label, through the node's services."""
    from lifecycle_msgs.srv import ChangeState, GetState
    change = client.node.create_client(ChangeState, f'{NODE}/change_state')
    get = client.node.create_client(GetState, f'{NODE}/get_state')
    assert change.wait_for_service(30) and get.wait_for_service(30), 'no lifecycle services'

    def call(service, request):
        future = service.call_async(request)
        assert wait_until(future.done, 60), 'lifecycle service timed out'
        return future.result()

    def change_state(label):
        request = ChangeState.Request()
        request.transition.label = label
        return call(change, request).success

    def state():
        return call(get, GetState.Request()).current_state.label

    return change_state, state


def ros2(ros, *args):
    """Run a ros2 command to its end; (exit code, output)."""
    command = ros.launch(*args)
    code = command.proc.wait(60)
    return code, command.output()


def launch_managed(ros, tmp_path, model):
    params_file = write_params(tmp_path / 'front.yaml', {'front': (IMAGES, 'raw')},
                               max_frame_age_ms=0.0)
    return ros.launch('launch', 'seg_perception', 'segmentation.launch.py', 'lifecycle:=true',
                      f'params_file:={params_file}', f'model:={model}')


def test_the_command_line_configures_a_fixed_model_activates_and_shuts_down(
        ros, tmp_path, colour_model):
    require_ros()
    node = launch_managed(ros, tmp_path, str(tmp_path / 'missing.onnx'))
    client = ros.client()
    change_state, state = lifecycle_client(client)
    camera = Camera(client)
    assert state() == 'unconfigured'
    assert client.node.count_publishers(LABELS) == 0

    # A model that is not there: configure fails with the reason, the node stays.
    _, output = ros2(ros, 'lifecycle', 'set', NODE, 'configure')     # Humble's exits 0
    assert 'Transitioning failed' in output, output
    assert state() == 'unconfigured' and node.alive()
    failures = [line for line in node.output().splitlines() if 'configure failed:' in line]
    assert len(failures) == 1 and 'missing.onnx' in failures[0], node.output()

    code, output = ros2(ros, 'param', 'set', NODE, 'model', colour_model)
    assert code == 0 and 'Set parameter successful' in output, output
    code, output = ros2(ros, 'lifecycle', 'set', NODE, 'configure')
    assert code == 0 and 'Transitioning successful' in output, output
    assert state() == 'inactive'
    assert client.node.count_publishers(LABELS) == 0
    while_inactive = camera.send_many()
    code, output = ros2(ros, 'param', 'set', NODE, 'model', '/other.onnx')
    assert 'read at configure' in output, output           # configured: locked

    assert change_state('activate') and state() == 'active'
    assert camera.segments(node), node.output()[-3000:]
    assert not camera.answered(while_inactive), 'frames processed while inactive'

    # Shutdown straight from active: finalized, its topics gone, the process still up.
    code, output = ros2(ros, 'lifecycle', 'set', NODE, 'shutdown')
    assert code == 0, output
    assert state() == 'finalized' and node.alive()
    assert wait_until(lambda: client.node.count_publishers(LABELS) == 0
                      and client.node.count_subscribers(IMAGES) == 0, 10)
    assert node.interrupt() == 0, node.output()[-3000:]
    assert 'Traceback' not in node.output()


def test_a_manager_sequence_and_reactivation_without_reloading(ros, tmp_path, colour_model):
    require_ros()
    node = launch_managed(ros, tmp_path, colour_model)
    client = ros.client()
    change_state, state = lifecycle_client(client)
    camera = Camera(client)

    # What a lifecycle manager does at start-up: configure, then activate.
    assert change_state('configure') and state() == 'inactive'
    assert change_state('activate') and state() == 'active'
    assert camera.segments(node), node.output()[-3000:]

    assert change_state('deactivate') and state() == 'inactive'
    while_inactive = camera.send_many()
    assert change_state('activate')
    assert camera.segments(node, 20), node.output()[-3000:]
    assert not camera.answered(while_inactive), 'frames processed while deactivated'
    loads = [line for line in node.output().splitlines() if 'configured: model' in line]
    assert len(loads) == 1, loads                    # the model was loaded once

    # And at its end: deactivate, clean up (model released), shut down.
    assert change_state('deactivate') and change_state('cleanup')
    assert state() == 'unconfigured'
    assert change_state('shutdown') and state() == 'finalized'
    assert node.interrupt() == 0, node.output()[-3000:]
    assert 'Traceback' not in node.output()
