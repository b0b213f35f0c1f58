"""Launch files and node configs: declared arguments, files they point at, valid parameters.

The ROS-free checks read the launch files' source (ast) and the YAML configs; with
ROS the launch descriptions are built, and segmentation.launch.py's node is expanded
for a set of arguments.
"""
import ast
import importlib.util
import logging
import os

import pytest
import yaml

from seg_perception.ros import params

from conftest import require_ros


@pytest.fixture(autouse=True)
def plain_loggers_after_launch():
    """Importing ROS 2 `launch` makes every logger created later a non-propagating
    LaunchLogger; put the standard class back so later tests' logs reach caplog and files."""
    yield
    logging.setLoggerClass(logging.Logger)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch')
CONFIG = os.path.join(REPO, 'config')
SEGMENTATION_ARGS = {'params_file', 'model', 'backend', 'namespace', 'camera_topic',
                     'use_sim_time', 'log_level', 'respawn', 'respawn_delay', 'lifecycle'}
BAG_EVAL_ARGS = {'bag', 'params_file', 'model', 'output_bag', 'rate'}
CONFIGS = ['one_camera.yaml', 'six_cameras.yaml', 'jetson_orin.yaml']


def argument_names(filename):
    """The keys of the module-level ARGUMENTS dict of a launch file."""
    tree = ast.parse(open(os.path.join(LAUNCH, filename)).read(), filename)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'ARGUMENTS':
            return {ast.literal_eval(key) for key in node.value.keys}
    raise AssertionError(f'{filename} has no ARGUMENTS table')


def node_parameters(config_file):
    """The flattened ros__parameters of a config (nested keys joined with dots)."""
    with open(os.path.join(CONFIG, config_file)) as handle:
        document = yaml.safe_load(handle)
    (section,) = document.values()
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f'{prefix}{key}.', item)
        else:
            flat[prefix[:-1]] = value

    walk('', section['ros__parameters'])
    return flat


@pytest.mark.parametrize('filename,expected', [('segmentation.launch.py', SEGMENTATION_ARGS),
                                               ('bag_eval.launch.py', BAG_EVAL_ARGS)])
def test_launch_files_declare_their_arguments(filename, expected):
    assert expected <= argument_names(filename)


def test_launch_and_config_files_are_installed_and_the_executable_declared():
    setup_py = open(os.path.join(REPO, 'setup.py')).read()
    assert "glob('launch/*.launch.py')" in setup_py and "glob('config/*.yaml')" in setup_py
    assert 'segmentation_node = seg_perception.ros.entry_point:main' in setup_py
    assert 'segmentation_lifecycle_node = seg_perception.ros.entry_point:main_lifecycle' \
        in setup_py
    assert 'script_dir=$base/lib/seg_perception' in open(os.path.join(REPO, 'setup.cfg')).read()
    launch_source = open(os.path.join(LAUNCH, 'segmentation.launch.py')).read()
    assert "'one_camera.yaml'" in launch_source
    for name in CONFIGS:
        assert os.path.isfile(os.path.join(CONFIG, name))


@pytest.mark.parametrize('config_file', CONFIGS)
def test_configs_hold_only_known_valid_parameters(config_file):
    values = node_parameters(config_file)
    config = params.build_config(values, check_model_file=False)
    declared = [s.name for s in params.NODE_PARAMS]
    for camera in config.cameras:
        declared += [s.name for s in params.camera_params(camera.name)]
    assert params.unknown_parameters(list(values), declared) == []


def test_six_camera_config_names_the_car_cameras():
    config = params.build_config(node_parameters('six_cameras.yaml'), check_model_file=False)
    names = [c.name for c in config.cameras]
    assert names == ['front', 'front_left', 'front_right', 'back', 'back_left', 'back_right']
    assert all(c.transport == 'compressed' and c.topic.endswith('/compressed')
               and c.camera_info_topic for c in config.cameras)
    assert config.max_batch == 1        # on a CPU: in turn, not six frames per batch
    assert params.build_config(node_parameters('one_camera.yaml'),
                               check_model_file=False).max_batch == 0


def test_jetson_profile_uses_tensorrt_fp16_and_a_persistent_engine_cache():
    config = params.build_config(node_parameters('jetson_orin.yaml'), check_model_file=False)
    assert (config.backend, config.precision) == ('tensorrt', 'fp16')
    assert config.engine_cache_dir.startswith('/var/lib/')
    assert '1024x512' in open(os.path.join(CONFIG, 'jetson_orin.yaml')).read()


# -- with ROS: build the descriptions -------------------------------------------------
def load_launch_module(filename):
    require_ros()
    spec = importlib.util.spec_from_file_location(filename.replace('.', '_'),
                                                  os.path.join(LAUNCH, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.ros
@pytest.mark.parametrize('filename,expected', [('segmentation.launch.py', SEGMENTATION_ARGS),
                                               ('bag_eval.launch.py', BAG_EVAL_ARGS)])
def test_launch_descriptions_build(filename, expected):
    module = load_launch_module(filename)
    description = module.generate_launch_description()
    names = {arg.name for arg in description.get_launch_arguments()}
    assert expected <= names


@pytest.mark.ros
def test_segmentation_launch_expands_to_the_node_with_overrides():
    module = load_launch_module('segmentation.launch.py')
    given = {'params_file': os.path.join(CONFIG, 'six_cameras.yaml'), 'model': '/m.onnx',
             'namespace': 'car', 'camera_topic': '/cam/image_raw/compressed',
             'use_sim_time': 'true', 'log_level': 'debug'}
    (node, _exit_handler), _ = expand(module, given)
    assert node.node_package == 'seg_perception' and node.node_executable == 'segmentation_node'
    assert module.node_overrides(given) == {
        'use_sim_time': True, 'model': '/m.onnx', 'cameras': ['camera'],
        'cameras.camera.topic': '/cam/image_raw/compressed',
        'cameras.camera.transport': 'compressed'}
    assert module.node_overrides({'use_sim_time': 'false', 'backend': ''}) == \
        {'use_sim_time': False}


@pytest.mark.ros
def test_segmentation_launch_ends_with_the_node_unless_it_respawns():
    module = load_launch_module('segmentation.launch.py')
    from launch.actions import RegisterEventHandler
    from launch_ros.actions import Node
    params_file = os.path.join(CONFIG, 'one_camera.yaml')
    (node, handler), _ = expand(module, {'params_file': params_file})
    assert isinstance(node, Node) and isinstance(handler, RegisterEventHandler)
    (node,), _ = expand(module, {'params_file': params_file, 'respawn': 'true',
                                 'respawn_delay': '0.5'})
    assert isinstance(node, Node)
    assert module.respawn_settings({'respawn': 'True', 'respawn_delay': '0'}) == (True, 0.0)
    for name, value in [('respawn', 'yes'), ('respawn_delay', '-1'),
                        ('respawn_delay', 'soon'), ('respawn_delay', 'nan')]:
        with pytest.raises(module.LaunchArgumentError, match=f"launch argument '{name}': "):
            module.respawn_settings({name: value})


@pytest.mark.ros
def test_lifecycle_true_launches_the_managed_node_with_the_same_settings():
    module = load_launch_module('segmentation.launch.py')
    from launch_ros.actions import LifecycleNode
    given = {'params_file': os.path.join(CONFIG, 'one_camera.yaml'), 'model': '/m.onnx'}
    (plain, _), _ = expand(module, given)
    assert not isinstance(plain, LifecycleNode)
    (node, _exit_handler), _ = expand(module, {**given, 'lifecycle': 'true'})
    assert isinstance(node, LifecycleNode)
    assert node.node_executable == 'segmentation_lifecycle_node'
    assert node.node_package == plain.node_package == 'seg_perception'
    with pytest.raises(module.LaunchArgumentError, match="launch argument 'lifecycle': 'on' "):
        expand(module, {**given, 'lifecycle': 'on'})


@pytest.mark.ros
def test_node_exit_fails_the_launch_only_when_the_node_failed():
    module = load_launch_module('segmentation.launch.py')
    from launch import LaunchContext
    from launch.actions import EmitEvent

    class Exited:
        def __init__(self, returncode):
            self.returncode = returncode

    context = LaunchContext()
    with pytest.raises(module.NodeFailed, match='segmentation_node exited with code 1$'):
        module.end_launch_with_node(Exited(1), context)
    with pytest.raises(module.NodeFailed, match='segmentation_node was killed by SIGSEGV$'):
        module.end_launch_with_node(Exited(-11), context)
    (shutdown,) = module.end_launch_with_node(Exited(0), context)
    assert isinstance(shutdown, EmitEvent)       # exited 0 on its own: the launch ends, 0
    context._set_is_shutdown(True)
    assert module.end_launch_with_node(Exited(0), context) is None


def expand(module, given):
    """Run a launch file's OpaqueFunction for ``given`` arguments; return its actions."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    context = LaunchContext()
    for action in module.generate_launch_description().entities:
        if isinstance(action, DeclareLaunchArgument):
            default = action.default_value[0].text if action.default_value else ''
            context.launch_configurations[action.name] = given.get(action.name, default)
        elif isinstance(action, OpaqueFunction):
            return action.execute(context), context
    raise AssertionError('no OpaqueFunction in the launch description')


def performed(context, substitutions):
    from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions
    return perform_substitutions(context, normalize_to_list_of_substitutions(substitutions))


@pytest.mark.ros
def test_bag_eval_plays_with_clock_runs_on_sim_time_and_records():
    module = load_launch_module('bag_eval.launch.py')
    from launch.actions import ExecuteProcess, IncludeLaunchDescription, TimerAction
    actions, context = expand(module, {'bag': '/data/drive_01', 'rate': '0.5',
                                       'params_file': os.path.join(CONFIG, 'one_camera.yaml')})
    (record,) = [a for a in actions if isinstance(a, ExecuteProcess)]
    record_cmd = [''.join(part.perform(context) for part in piece) for piece in record.cmd]
    assert record_cmd[:5] == ['ros2', 'bag', 'record', '-o', '/data/drive_01_segmentation']
    (timer,) = [a for a in actions if isinstance(a, TimerAction)]
    (play,) = timer.actions
    play_cmd = [''.join(part.perform(context) for part in piece) for piece in play.cmd]
    assert play_cmd == ['ros2', 'bag', 'play', '/data/drive_01', '--clock', '--rate', '0.5',
                        '--qos-profile-overrides-path',
                        os.path.join(CONFIG, 'bag_play_qos.yaml'), '--delay', '1.0']
    assert os.path.isfile(play_cmd[-3])
    # The node: segmentation.launch.py's, given bag_eval's arguments and sim time.
    (include,) = [a for a in actions if isinstance(a, IncludeLaunchDescription)]
    source = include.launch_description_source
    source.get_launch_description(context)          # loads it; the location is then known
    assert source.location == os.path.join(LAUNCH, 'segmentation.launch.py')
    passed = {performed(context, name): performed(context, value)
              for name, value in include.launch_arguments}
    assert passed == {'params_file': os.path.join(CONFIG, 'one_camera.yaml'), 'model': '',
                      'backend': '', 'namespace': '', 'log_level': 'info',
                      'use_sim_time': 'true'}
    node_module = load_launch_module('segmentation.launch.py')
    (node, _exit_handler), _ = expand(node_module, passed)
    assert node.node_executable == 'segmentation_node'
    assert node_module.node_overrides(passed) == {'use_sim_time': True}


@pytest.mark.ros
def test_bag_eval_output_path():
    module = load_launch_module('bag_eval.launch.py')
    assert module.output_bag_path('/data/drive_01/', '') == '/data/drive_01_segmentation'
    assert module.output_bag_path('/data/drive_01', '/out/x') == '/out/x'
