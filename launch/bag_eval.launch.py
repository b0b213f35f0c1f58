"""Replay a bag through segmentation_node and record its outputs to a new bag.

    ros2 launch seg_perception bag_eval.launch.py bag:=/data/drive_01 \
        params_file:=$(ros2 pkg prefix seg_perception)/share/seg_perception/config/six_cameras.yaml

Plays ``bag`` with ``ros2 bag play --clock``, runs the node on sim time, records
every ``*/segmentation/*`` topic and /diagnostics to ``output_bag`` and shuts
everything down a few seconds after playback ends. Needs rosbag2 (ros2 bag).
For offline evaluation without ROS see ``seg-perception bag-eval``.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, OpaqueFunction,
                            RegisterEventHandler, TimerAction)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'seg_perception'
RECORDED_TOPICS = r'(.*/segmentation/.*|/diagnostics)'

ARGUMENTS = {
    'bag': (None, 'Input bag (folder or file) holding the camera topics'),
    'params_file': ('', 'Node parameter YAML; empty = config/one_camera.yaml of the package'),
    'model': ('', 'Exported ONNX model; empty = the parameter file\'s'),
    'backend': ('', 'auto, tensorrt, onnxruntime or torch; empty = the parameter file\'s'),
    'output_bag': ('', 'Bag to write; empty = <bag>_segmentation next to the input'),
    'rate': ('1.0', 'Playback rate; lower it when inference cannot keep up'),
    'start_delay': ('3.0', 'Seconds to wait for the node (model loading) before playing'),
    'log_level': ('info', 'debug, info, warn, error or fatal'),
}


def output_bag_path(bag: str, output_bag: str) -> str:
    """Where the outputs go: ``output_bag``, or ``<bag>_segmentation`` beside the input."""
    return output_bag or os.path.normpath(bag).rstrip(os.sep) + '_segmentation'


def _launch(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = values['params_file'] or os.path.join(
        get_package_share_directory(PACKAGE), 'config', 'one_camera.yaml')
    overrides = {'use_sim_time': True}
    overrides.update({k: values[k] for k in ('model', 'backend') if values[k]})
    node = Node(package=PACKAGE, executable='segmentation_node', name='segmentation_node',
                output='screen', parameters=[params_file, overrides],
                ros_arguments=['--log-level', values['log_level']])
    record = ExecuteProcess(
        cmd=['ros2', 'bag', 'record', '-o', output_bag_path(values['bag'], values['output_bag']),
             '-e', RECORDED_TOPICS],
        output='screen')
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', values['bag'], '--clock', '--rate', values['rate']],
        output='screen')
    # Let the last frames through inference and into the recorder, then stop everything.
    stop_after_play = RegisterEventHandler(OnProcessExit(
        target_action=play,
        on_exit=[TimerAction(period=3.0, actions=[
            EmitEvent(event=Shutdown(reason='bag playback finished'))])]))
    return [node, record, stop_after_play,
            TimerAction(period=float(values['start_delay']), actions=[play])]


def generate_launch_description():
    declared = []
    for name, (default, text) in ARGUMENTS.items():
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=text))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default, description=text))
    return LaunchDescription(declared + [OpaqueFunction(function=_launch)])
