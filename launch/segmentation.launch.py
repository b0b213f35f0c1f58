"""Start segmentation_node with a parameter file and optional overrides.

    ros2 launch seg_perception segmentation.launch.py
    ros2 launch seg_perception segmentation.launch.py camera_topic:=/cam/image_raw
    ros2 launch seg_perception segmentation.launch.py \
        params_file:=$(ros2 pkg prefix seg_perception)/share/seg_perception/config/six_cameras.yaml

Empty arguments leave the parameter file's values alone.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'seg_perception'

ARGUMENTS = {
    'params_file': ('', 'Node parameter YAML; empty = config/one_camera.yaml of the package'),
    'model': ('', 'Exported ONNX model; empty = the parameter file\'s (or the shipped default)'),
    'backend': ('', 'auto, tensorrt, onnxruntime or torch; empty = the parameter file\'s'),
    'namespace': ('', 'Namespace of the node and its relative topics'),
    'camera_topic': ('', 'One-camera shortcut: subscribe camera "camera" to this topic '
                         '(a topic ending in /compressed is read as CompressedImage)'),
    'use_sim_time': ('false', 'Use /clock (bag playback)'),
    'log_level': ('info', 'debug, info, warn, error or fatal'),
}


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


def default_params_file() -> str:
    return os.path.join(get_package_share_directory(PACKAGE), 'config', 'one_camera.yaml')


def _launch_node(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(
        package=PACKAGE, executable='segmentation_node', name='segmentation_node',
        namespace=values['namespace'], output='screen', emulate_tty=True,
        parameters=[values['params_file'] or default_params_file(), node_overrides(values)],
        ros_arguments=['--log-level', values['log_level']])]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_launch_node)])
