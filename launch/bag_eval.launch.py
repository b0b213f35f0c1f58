"""Replay a bag through segmentation_node and record its outputs to a new bag.

    ros2 launch seg_perception bag_eval.launch.py bag:=/data/drive_01 \
        params_file:=$(ros2 pkg prefix seg_perception)/share/seg_perception/config/six_cameras.yaml

Plays ``bag`` with ``ros2 bag play --clock`` (/tf_static latched, see
config/bag_play_qos.yaml), runs the node on sim time (through
segmentation.launch.py, so with its default parameter file and overrides), records
every ``*/segmentation/*`` topic and /diagnostics to ``output_bag`` and shuts
everything down a few seconds after playback ends; a node that fails ends the run
with a non-zero status. Needs rosbag2 (ros2 bag).
For offline evaluation without ROS see ``seg-perception bag-eval``.
"""
import os

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess,
                            IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler,
                            TimerAction)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

LAUNCH_DIR = os.path.dirname(os.path.abspath(__file__))
NODE_LAUNCH = os.path.join(LAUNCH_DIR, 'segmentation.launch.py')
# /tf_static played latched, as tf2 listens to it (installed beside launch/, as in the source).
PLAY_QOS = os.path.join(os.path.dirname(LAUNCH_DIR), 'config', 'bag_play_qos.yaml')
# The player's publishers are new: the node's subscriptions must match them before the
# first frame, or the first frames are lost without the node knowing of them.
PLAY_DELAY_S = '1.0'
NODE_ARGUMENTS = ('params_file', 'model', 'backend', 'namespace', 'log_level')
RECORDED_TOPICS = r'(.*/segmentation/.*|/diagnostics)'

ARGUMENTS = {
    'bag': (None, 'Input bag (folder or file) holding the camera topics'),
    'params_file': ('', 'Node parameter YAML; empty = config/one_camera.yaml of the package'),
    'model': ('', 'Exported ONNX model; empty = the parameter file\'s'),
    'backend': ('', 'auto, tensorrt, onnxruntime or torch; empty = the parameter file\'s'),
    'namespace': ('', 'Namespace of the node and its relative topics'),
    'output_bag': ('', 'Bag to write; empty = <bag>_segmentation next to the input'),
    'rate': ('1.0', 'Playback rate; lower it when inference cannot keep up'),
    'start_delay': ('3.0', 'Seconds to wait for the node (model loading) before playing'),
    'settle_time': ('3.0', 'Seconds to keep recording after playback ends (the last frames '
                           'through inference, the last diagnostics)'),
    'log_level': ('info', 'debug, info, warn, error or fatal'),
}


def output_bag_path(bag: str, output_bag: str) -> str:
    """Where the outputs go: ``output_bag``, or ``<bag>_segmentation`` beside the input."""
    return output_bag or os.path.normpath(bag).rstrip(os.sep) + '_segmentation'


def node_launch():
    """segmentation.launch.py with this file's node arguments passed through, on sim time."""
    arguments = [(name, LaunchConfiguration(name)) for name in NODE_ARGUMENTS]
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(NODE_LAUNCH),
                                    launch_arguments=arguments + [('use_sim_time', 'true')])


def _launch(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    record = ExecuteProcess(
        cmd=['ros2', 'bag', 'record', '-o', output_bag_path(values['bag'], values['output_bag']),
             '-e', RECORDED_TOPICS],
        output='screen')
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', values['bag'], '--clock', '--rate', values['rate'],
             '--qos-profile-overrides-path', PLAY_QOS, '--delay', PLAY_DELAY_S],
        output='screen')
    # Let the last frames through inference and into the recorder, then stop everything.
    stop_after_play = RegisterEventHandler(OnProcessExit(
        target_action=play,
        on_exit=[TimerAction(period=float(values['settle_time']), actions=[
            EmitEvent(event=Shutdown(reason='bag playback finished'))])]))
    return [node_launch(), record, stop_after_play,
            TimerAction(period=float(values['start_delay']), actions=[play])]


def generate_launch_description():
    declared = []
    for name, (default, text) in ARGUMENTS.items():
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=text))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default, description=text))
    return LaunchDescription(declared + [OpaqueFunction(function=_launch)])
