"""The repository is a well-formed ament_python package that installs with pip and colcon."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_ros

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format3_ament_python_with_runtime_depends():
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    assert package.package_format == 3
    assert package.name == 'seg_perception'
    assert package.get_build_type() == 'ament_python'
    exec_depends = {d.name for d in package.exec_depends}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs',
            'python3-numpy', 'python3-opencv'} <= exec_depends
    # A maintainer e-mail catkin_pkg cannot parse makes colcon build us as plain Python.
    assert package.maintainers and '@' in package.maintainers[0].email


# package.xml test_depend -> what a test file holds when it uses that tool.
TEST_TOOLS = {
    'python3-pytest': 'import pytest',
    'python3-flake8': "shutil.which('flake8')",
    'python3-catkin-pkg': "importorskip('catkin_pkg",
    'python3-colcon-common-extensions': "'colcon'",
}


def sources_of_tests():
    return '\n'.join(path.read_text() for path in sorted((ROOT / 'test').glob('*.py')))


def imported_names(source):
    return set(re.findall(r'^\s*(?:from|import) ([a-z_0-9]+)', source, re.MULTILINE))


def test_package_xml_test_depends_are_what_the_tests_use():
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    test_depends = {d.name for d in package.test_depends}
    sources = sources_of_tests()
    unused = {name for name in test_depends - imported_names(sources)
              if TEST_TOOLS.get(name, '\0') not in sources}
    assert not unused, f'package.xml declares test tools no test uses: {sorted(unused)}'
    assert set(TEST_TOOLS) <= test_depends


def test_package_xml_declares_the_ros_packages_code_and_tests_import():
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    require_ros()
    from ament_index_python.packages import get_packages_with_prefixes
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    ros_packages = set(get_packages_with_prefixes())
    code = '\n'.join(path.read_text() for folder in ('seg_perception', 'launch')
                     for path in sorted((ROOT / folder).rglob('*.py')))
    # cv_bridge is optional: used where it is installed (ros/conversions.py).
    code_imports = (imported_names(code) & ros_packages) - {'cv_bridge'}
    exec_depends = {d.name for d in package.exec_depends}
    assert code_imports <= exec_depends, sorted(code_imports - exec_depends)
    test_imports = imported_names(sources_of_tests()) & ros_packages
    declared = exec_depends | {d.name for d in package.test_depends}
    assert test_imports <= declared, sorted(test_imports - declared)


def test_setup_cfg_points_scripts_where_ros2_run_looks():
    text = (ROOT / 'setup.cfg').read_text()
    assert 'script_dir=$base/lib/seg_perception' in text
    assert 'install_scripts=$base/lib/seg_perception' in text


def test_runtime_requirements_pull_in_no_torch():
    # setup.py is the source of truth; parse its RUNTIME list without running setup().
    namespace = {}
    source = (ROOT / 'setup.py').read_text()
    start = source.index('RUNTIME = [')
    end = source.index(']', start) + 1
    exec(source[start:end], namespace)  # noqa: S102 - our own file, a list literal
    names = [r.split('>')[0].split('<')[0].split('=')[0] for r in namespace['RUNTIME']]
    assert names and not {'torch', 'torchvision', 'timm'} & set(names)


def test_sources_run_on_python_3_10():
    vermin = shutil.which('vermin')
    if vermin is None:
        pytest.skip('vermin not installed')
    result = subprocess.run(
        [vermin, '--no-tips', '--violations', '-t=3.10-', '--eval-annotations',
         '--backport', 'typing', str(ROOT / 'seg_perception'), str(ROOT / 'launch')],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_colcon_build_installs_launch_config_and_index_marker(tmp_path):
    colcon = shutil.which('colcon')
    if colcon is None:
        pytest.skip('colcon not installed (pip install colcon-common-extensions)')
    src = tmp_path / 'src' / 'seg_perception'
    src.parent.mkdir(parents=True)
    ignore = shutil.ignore_patterns('.git', '.venv', 'build', 'install', 'log', '__pycache__',
                                    '*.egg-info', 'runs', 'outputs', '.pytest_cache')
    shutil.copytree(ROOT, src, ignore=ignore)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    result = subprocess.run([colcon, 'list'], cwd=tmp_path, capture_output=True, text=True,
                            env=env)
    assert 'ros.ament_python' in result.stdout, result.stdout + result.stderr
    result = subprocess.run([colcon, 'build', '--event-handlers', 'console_direct-'],
                            cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    share = tmp_path / 'install' / 'seg_perception' / 'share'
    assert (share / 'ament_index' / 'resource_index' / 'packages' / 'seg_perception').is_file()
    assert (share / 'seg_perception' / 'package.xml').is_file()
    launch_files = sorted(p.name for p in (share / 'seg_perception' / 'launch').glob('*.py'))
    assert launch_files == sorted(p.name for p in (ROOT / 'launch').glob('*.launch.py'))
    configs = sorted(p.name for p in (share / 'seg_perception' / 'config').glob('*.yaml'))
    assert configs == sorted(p.name for p in (ROOT / 'config').glob('*.yaml'))
    lib = tmp_path / 'install' / 'seg_perception' / 'lib' / 'seg_perception'
    assert (lib / 'segmentation_node').is_file() and (lib / 'seg-perception').is_file()
    # colcon test runs this package's pytest suite; one quick file proves the path.
    result = subprocess.run(
        [colcon, 'test', '--event-handlers', 'console_direct-', '--pytest-args',
         'test/test_labels_and_model_info.py'],
        cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = subprocess.run([colcon, 'test-result', '--all'], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert ' 0 errors, 0 failures' in result.stdout, result.stdout


def test_cli_lists_every_subcommand_without_importing_torch():
    code = 'import sys, seg_perception.cli; print("torch" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.stdout.strip() == 'False', out.stderr
    out = subprocess.run([sys.executable, '-m', 'seg_perception.cli', '--help'],
                         capture_output=True, text=True)
    assert out.returncode == 0
    for name in ('models', 'export', 'train', 'evaluate', 'bench', 'bag-eval', 'demo'):
        assert name in out.stdout


def test_ci_runs_the_test_command_written_in_readme():
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('Run the tests', 1)[1]
    command = section.split('```bash\n', 1)[1].split('\n```', 1)[0].strip()
    assert 'pytest' in command
    assert command in (ROOT / '.ci' / 'run').read_text()


def test_code_passes_flake8():
    flake8 = shutil.which('flake8')
    if flake8 is None:
        pytest.skip('flake8 not installed')
    result = subprocess.run([flake8, 'seg_perception', 'test', 'launch', 'tools', 'benchmarks',
                             'setup.py'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
