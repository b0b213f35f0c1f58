"""segmentation.launch.py's exit status on a real ROS 2 runtime, and the systemd recipe.

A supervisor restarts what fails: the launch must end non-zero when the node fails
or dies, end with 0 when it is asked to stop, and with ``respawn:=true`` bring the
node back itself. UNIT is README's systemd unit, run here as far as a machine
without systemd allows.
"""
import os
import shlex
import shutil
import signal

import pytest

from ros_live_helpers import halves_frame, wait_until

pytest_plugins = ['live_ros_fixtures']
pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = ('launch', 'seg_perception', 'segmentation.launch.py')
READY = 'segmenting camera <- /img'        # the node's log line once it serves

UNIT = """\
[Unit]
Description=seg_perception segmentation node
Wants=network-online.target
After=network-online.target

[Service]
User=nvidia
ExecStart=/bin/bash -c 'source /opt/ros/humble/setup.bash && \\
    source /home/nvidia/ws/install/setup.bash && \\
    exec ros2 launch seg_perception segmentation.launch.py \\
    params_file:=/home/nvidia/ws/install/seg_perception/share/seg_perception/config/jetson_orin.yaml'
Restart=on-failure
RestartSec=5
KillSignal=SIGINT
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""
UNIT_ROS = '/opt/ros/humble'
UNIT_INSTALL = '/home/nvidia/ws/install'


def unit_service():
    """The [Service] settings of UNIT, lines joined as systemd joins them."""
    text = UNIT.replace('\\\n', ' ')
    section, settings = None, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('['):
            section = line
        elif line and not line.startswith('#') and section == '[Service]':
            key, value = line.split('=', 1)
            settings[key] = value
    return settings


def start_node(ros, colour_model, *args):
    """ros2 launch segmentation.launch.py with the test model; wait until the node serves."""
    launched = ros.launch(*LAUNCH, f'model:={colour_model}', 'camera_topic:=/img', *args)
    assert wait_until(lambda: READY in launched.output(), 60, 0.2, launched.alive), \
        launched.output()
    (node_pid,) = launched.children()
    return launched, node_pid


def test_node_failing_at_start_up_fails_the_launch(ros):
    launched = ros.launch(*LAUNCH, 'model:=/nonexistent/model.onnx')
    assert launched.proc.wait(60) != 0
    output = launched.output()
    assert "cannot start: parameter 'model': file not found: /nonexistent/model.onnx" in output
    assert 'segmentation_node exited with code 1' in output, output


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGSEGV], ids=['SIGKILL', 'SIGSEGV'])
def test_node_dying_while_running_fails_the_launch(ros, colour_model, sig):
    launched, node_pid = start_node(ros, colour_model)
    os.kill(node_pid, sig)
    assert launched.proc.wait(30) != 0
    assert f'segmentation_node was killed by {sig.name}' in launched.output(), launched.output()


@pytest.mark.parametrize('to_group', [True, False], ids=['process-group', 'launch-only'])
def test_the_units_stop_signal_ends_the_launch_cleanly_with_0(ros, colour_model, to_group):
    # systemd sends KillSignal to every process of the unit (KillMode=control-group),
    # as a terminal's Ctrl-C does; launch alone receiving it must stop the node too.
    stop = signal.Signals[unit_service()['KillSignal']]
    launched, node_pid = start_node(ros, colour_model)
    if to_group:
        os.killpg(launched.proc.pid, stop)
    else:
        os.kill(launched.proc.pid, stop)
    assert launched.proc.wait(30) == 0, launched.output()
    output = launched.output()
    assert f'{stop.name}: shutting down' in output and 'Traceback' not in output, output
    assert not os.path.exists(f'/proc/{node_pid}')
    # the core's own log lines (backend choice) came through the node's ROS logger
    assert '[segmentation_node]: runtime.pipeline: pipeline: ' in output, output


def test_respawn_brings_a_killed_node_back(ros, colour_model):
    launched, first_pid = start_node(ros, colour_model, 'respawn:=true', 'respawn_delay:=0.5')
    client = ros.client()
    camera = client.image_publisher('/img', 'rgb8')
    labels = client.subscribe('Image', '/camera/segmentation/labels')
    frame = halves_frame(48, 64, 'rgb8')
    assert wait_until(lambda: camera.send(frame) and labels, 60, 0.2), launched.output()
    os.kill(first_pid, signal.SIGKILL)

    def new_node():
        pids = launched.children()
        return pids if pids and pids != [first_pid] else None

    assert wait_until(new_node, 30, 0.2, launched.alive), launched.output()
    labels.clear()
    assert wait_until(lambda: camera.send(frame) and labels, 60, 0.2, launched.alive), \
        launched.output()
    assert launched.output().count(READY) == 2
    assert launched.interrupt() == 0, launched.output()


def test_systemd_unit_runs_the_launch_whose_failure_it_restarts(ros, workspace):
    service = unit_service()
    assert service['Restart'] == 'on-failure'      # restarts on a non-zero exit status
    argv = shlex.split(service['ExecStart'])
    assert argv[:2] == ['/bin/bash', '-c']
    steps = [shlex.split(step) for step in argv[2].split('&&')]
    assert steps[:2] == [['source', f'{UNIT_ROS}/setup.bash'],
                         ['source', f'{UNIT_INSTALL}/setup.bash']]
    launch_args = steps[2]
    assert len(steps) == 3 and launch_args[:5] == ['exec', 'ros2', *LAUNCH]
    params_file = f'{UNIT_INSTALL}/seg_perception/share/seg_perception/config/jetson_orin.yaml'
    assert launch_args[5:] == [f'params_file:={params_file}']
    # The same command on this machine's ROS and workspace: the Jetson profile's model
    # is not here, so the node cannot start, and the launch must say so by its status.
    model = '/opt/seg_perception/models/model_1024x512.onnx'
    if os.path.exists(model):
        pytest.skip(f'{model} exists here: the unit would start')
    ros_prefix = os.path.dirname(os.path.dirname(shutil.which('ros2')))
    script = argv[2].replace(UNIT_ROS, ros_prefix).replace(UNIT_INSTALL, str(workspace))
    launched = ros.start('/bin/bash', '-c', script)
    assert launched.proc.wait(60) != 0
    output = launched.output()
    assert f"parameter 'model': file not found: {model}" in output, output
    assert 'segmentation_node exited with code 1' in output, output


def test_readme_unit_is_the_tested_one():
    readme = open(os.path.join(REPO, 'README.md')).read()
    if '[Service]' not in readme:
        pytest.skip('README.md holds no systemd unit yet')
    assert UNIT in readme


def test_bag_eval_ends_non_zero_when_its_node_fails(ros, tmp_path):
    # bag_eval.launch.py includes segmentation.launch.py, exit handling and all.
    bag = os.path.join(REPO, 'seg_perception', 'assets', 'sample_bag')
    launched = ros.launch('launch', 'seg_perception', 'bag_eval.launch.py', f'bag:={bag}',
                          f'output_bag:={tmp_path / "out"}', 'model:=/nonexistent/model.onnx')
    assert launched.proc.wait(60) != 0
    assert 'segmentation_node exited with code 1' in launched.output(), launched.output()
