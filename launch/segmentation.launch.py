"""Start segmentation_node with a parameter file and optional overrides.

    ros2 launch seg_perception segmentation.launch.py
    ros2 launch seg_perception segmentation.launch.py camera_topic:=/cam/image_raw
    ros2 launch seg_perception segmentation.launch.py \
        params_file:=$(ros2 pkg prefix seg_perception)/share/seg_perception/config/six_cameras.yaml
    ros2 launch seg_perception segmentation.launch.py lifecycle:=true

Empty arguments leave the parameter file's values alone. ``lifecycle:=true`` starts the
managed variant (segmentation_lifecycle_node) unconfigured: ``ros2 lifecycle set
/segmentation_node configure`` then ``activate`` (or a lifecycle manager) start it.

When the node exits on its own (start-up failure, crash, killed) the launch ends
too, with a non-zero status if the node's was, so a supervisor such as systemd's
``Restart=on-failure`` sees the failure; ``respawn:=true`` restarts the node
instead. A stop asked of the launch (Ctrl-C, SIGINT) ends the node cleanly and
exits 0.
"""
import os
import signal

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = 'seg_perception'
NODE_NAME = 'segmentation_node'
LIFECYCLE_EXECUTABLE = 'segmentation_lifecycle_node'

ARGUMENTS = {
    'params_file': ('', 'Node parameter YAML; empty = config/one_camera.yaml of the package'),
    'model': ('', 'Exported ONNX model; empty = the parameter file\'s (or the shipped default)'),
    'backend': ('', 'auto, tensorrt, onnxruntime or torch; empty = the parameter file\'s'),
    'namespace': ('', 'Namespace of the node and its relative topics'),
    'camera_topic': ('', 'One-camera shortcut: subscribe camera "camera" to this topic '
                         '(a topic ending in /compressed is read as CompressedImage)'),
    'use_sim_time': ('false', 'Use /clock (bag playback)'),
    'log_level': ('info', 'debug, info, warn, error or fatal'),
    'respawn': ('false', 'true: start the node again whenever it exits; false: the launch '
                         'ends with it (non-zero status when the node failed)'),
    'respawn_delay': ('2.0', 'Seconds to wait before starting the node again (respawn:=true)'),
    'lifecycle': ('false', 'true: the managed (lifecycle) node, started unconfigured; '
                           'configure and activate it with ros2 lifecycle set or a lifecycle '
                           'manager'),
}


class NodeFailed(RuntimeError):
    """The node exited with an error; raised inside launch so that it exits non-zero.

    Humble's launch exits 0 after any orderly shutdown, whatever the reason; only an
    exception raised while it runs makes ``ros2 launch`` return 1 (it logs the
    message as one line and shuts the remaining processes down).
    """


class LaunchArgumentError(ValueError):
    """A launch argument with a value this file cannot use."""


def node_overrides(values: dict) -> dict:
    """Parameters to set on top of the parameter file, from non-empty launch arguments."""
    overrides = {'use_sim_time': values.get('use_sim_time', 'false').lower() in ('true', '1')}
    for name in ('model', 'backend'):
        if values.get(name):
            overrides[name] = values[name]
    topic = values.get('camera_topic', '')
    if topic:
        overrides['cameras'] = ['camera']
        overrides['cameras.camera.topic'] = topic
        overrides['cameras.camera.transport'] = \
            'compressed' if topic.rstrip('/').endswith('/compressed') else 'raw'
    return overrides


def flag(values: dict, name: str) -> bool:
    """A true/false launch argument (absent: false); another value is an error."""
    text = values.get(name, 'false').strip().lower()
    if text not in ('true', 'false', '1', '0'):
        raise LaunchArgumentError(f"launch argument '{name}': {text!r} is not true or false")
    return text in ('true', '1')


def respawn_settings(values: dict) -> tuple:
    """(respawn, respawn_delay) from the launch arguments; a bad value is an error."""
    respawn = flag(values, 'respawn')
    try:
        delay = float(values.get('respawn_delay', '2.0'))
    except ValueError:
        delay = -1.0
    if not delay >= 0.0:
        raise LaunchArgumentError("launch argument 'respawn_delay': "
                                  f"{values.get('respawn_delay')!r} is not a number of seconds")
    return respawn, delay


def exit_description(returncode: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if returncode < 0:
        try:
            return f'was killed by {signal.Signals(-returncode).name}'
        except ValueError:
            return f'was killed by signal {-returncode}'
    return f'exited with code {returncode}'


def end_launch_with_node(event, context):
    """The node is gone: shut the launch down, failing it when the node failed."""
    if event.returncode != 0:
        raise NodeFailed(f'{NODE_NAME} {exit_description(event.returncode)}')
    if not context.is_shutdown:
        return [EmitEvent(event=Shutdown(reason=f'{NODE_NAME} exited'))]
    return None


def default_params_file() -> str:
    return os.path.join(get_package_share_directory(PACKAGE), 'config', 'one_camera.yaml')


def _launch_node(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    respawn, respawn_delay = respawn_settings(values)
    # launch_ros's LifecycleNode also follows the node's transitions (launch events).
    action, executable = (LifecycleNode, LIFECYCLE_EXECUTABLE) if flag(values, 'lifecycle') \
        else (Node, 'segmentation_node')
    node = action(
        package=PACKAGE, executable=executable, name=NODE_NAME,
        namespace=values['namespace'], output='screen', emulate_tty=True,
        parameters=[values['params_file'] or default_params_file(), node_overrides(values)],
        ros_arguments=['--log-level', values['log_level']],
        respawn=respawn, respawn_delay=respawn_delay)
    if respawn:
        return [node]
    return [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                     on_exit=end_launch_with_node))]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_launch_node)])
