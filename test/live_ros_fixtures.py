"""pytest plugin for tests on a real ROS 2 runtime: the colcon workspace, a test model,
ros2 commands started in a domain of their own.

Test modules load it with ``pytest_plugins = ['live_ros_fixtures']``: as a plugin its
session fixtures exist once, so however many modules use them, the repository is
built with colcon and the model exported once per session.

Every command starts with SIGINT reset to default (background jobs of a
non-interactive shell ignore it) in a session of its own, and the ``ros`` fixture
ends every process it started.
"""
import fcntl
import itertools
import os
import signal
import subprocess
import tempfile

import pytest

from conftest import require_ros, ros_required
from ros_live_helpers import RosClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_tests_started = itertools.count()


_DOMAIN_BLOCKS = 8               # ROS_DOMAIN_ID 20-99: inside the range safe on Linux
_claimed_block = []             # [block, its open lock file] once this process has one


def _domain_block() -> int:
    """A block of ten domain ids no other test session on this machine holds.

    Sessions run side by side (worktrees, CI and a developer): each holds an exclusive
    lock on its block's file for as long as it runs, so their nodes never meet.
    """
    if not _claimed_block:
        start = os.getpid() % _DOMAIN_BLOCKS
        for offset in range(_DOMAIN_BLOCKS):
            block = (start + offset) % _DOMAIN_BLOCKS
            handle = open(os.path.join(tempfile.gettempdir(),
                                       f'seg_perception_ros_domains_{block}.lock'), 'w')
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _claimed_block.extend([block, handle])
            break
        else:   # every block held: share one (the pid spreads sessions over them)
            _claimed_block.extend([start, None])
    return _claimed_block[0]


def next_domain() -> int:
    """A ROS_DOMAIN_ID of its own for each test, in a block no other session uses."""
    return 20 + _domain_block() * 10 + next(_tests_started) % 10


@pytest.fixture(scope='session')
def workspace(tmp_path_factory):
    """A colcon install of this repository (built once per session)."""
    require_ros()
    root = tmp_path_factory.mktemp('colcon_ws')
    cmd = ['colcon', 'build', '--base-paths', REPO, '--build-base', str(root / 'build'),
           '--install-base', str(root / 'install')]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        if ros_required():
            pytest.fail('colcon is not installed (pip install colcon-common-extensions)')
        pytest.skip('colcon is not installed')
    assert done.returncode == 0, f'colcon build failed:\n{done.stdout}\n{done.stderr}'
    install = root / 'install'
    assert (install / 'seg_perception/lib/seg_perception/segmentation_node').exists()
    assert (install / 'seg_perception/share/ament_index/resource_index/packages/'
            'seg_perception').exists(), 'built as plain Python: package.xml did not parse'
    return install


@pytest.fixture(scope='session')
def colour_model(tmp_path_factory):
    """A small exported ONNX model with known classes (needs torch for the export)."""
    require_ros()
    import runtime_models
    path = str(tmp_path_factory.mktemp('models') / 'colour.onnx')
    runtime_models.export_colour_net(path, with_confidence=True)
    return path


class Launched:
    """A command started in a domain and session of its own; output goes to a log file."""

    def __init__(self, argv, domain, log_path):
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1',
                   RCUTILS_COLORIZED_OUTPUT='0')
        self.log_path = log_path
        self._log = open(log_path, 'w')
        self.proc = subprocess.Popen(
            list(argv), env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def output(self) -> str:
        self._log.flush()
        with open(self.log_path) as handle:
            return handle.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list:
        """Process ids of the programs this one started (``ros2 run``/``launch``: the node)."""
        try:
            with open(f'/proc/{self.proc.pid}/task/{self.proc.pid}/children') as handle:
                return [int(pid) for pid in handle.read().split()]
        except FileNotFoundError:             # exited
            return []

    def interrupt(self, timeout=20.0) -> int:
        """Ctrl-C as in a terminal (SIGINT to the process group); return the exit code."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)

    def terminate_child(self, timeout=20.0) -> int:
        """SIGTERM to the program ``ros2 run`` started, as launch and systemd send it.

        ``ros2 run`` itself would die of a SIGTERM, so it gets none; it exits with
        its child's code.
        """
        children = self.children()
        assert len(children) == 1, children
        os.kill(children[0], signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self):
        """End the process group whatever state it is in."""
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)    # children left behind, if any
        except ProcessLookupError:
            pass
        self._log.close()


@pytest.fixture
def ros(workspace, tmp_path):
    """Start ros2 commands and a test client in a fresh domain; end them afterwards."""
    domain = next_domain()
    started, clients = [], []

    class Session:
        domain_id = domain

        @staticmethod
        def start(*argv):
            """Any command (it sets up its own ROS environment)."""
            launched = Launched(argv, domain, tmp_path / f'command_{len(started)}.log')
            started.append(launched)
            return launched

        @staticmethod
        def launch(*args):
            """``ros2 ARGS`` in the workspace environment."""
            script = f'source "{workspace}/local_setup.bash" && exec ros2 "$@"'
            return Session.start('bash', '-c', script, 'ros2', *args)

        @staticmethod
        def client():
            client = RosClient(domain)
            clients.append(client)
            return client

    yield Session
    for client in clients:
        client.close()
    for launched in started:
        launched.close()


def write_params(path, cameras, **extra):
    """A node parameter file: cameras = {name: (topic, transport)}."""
    lines = ['/**:', '  ros__parameters:', f'    cameras: [{", ".join(cameras)}]']
    for name, (topic, transport) in cameras.items():
        lines += [f'    cameras.{name}.topic: {topic}',
                  f'    cameras.{name}.transport: {transport}']
    lines += [f'    {key}: {value}' for key, value in extra.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)
