"""seg-perception demo: the shipped sample bag, end to end, without torch."""
import errno
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bag_helpers as bh
from no_torch import NO_TORCH_CLI
from seg_perception import cli
from seg_perception.commands import demo
from seg_perception.model_info import default_model_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRONT = '/camera/front/image_raw/compressed'
DASH = '/camera/dash/image_raw/compressed'

# A fresh interpreter in which torch (and the export-only packages) cannot be imported.
SCRIPT = NO_TORCH_CLI


def test_sample_bag_holds_two_cameras_and_drivable_ground_truth():
    with bh.open_bag_for_test(demo.sample_bag_path()) as source:
        topics = {name: (s.msgtype, s.count) for name, s in source.topics.items()}
        assert topics[FRONT] == ('sensor_msgs/msg/CompressedImage', 12)
        assert topics[DASH] == ('sensor_msgs/msg/CompressedImage', 11)
        assert topics[demo.GROUND_TRUTH_TOPIC] == ('sensor_msgs/msg/Image', 11)
        assert topics['/camera/dash/camera_info'][1] == 11
        stamps = []
        for _, msgtype, log_ns, raw in source.messages([demo.GROUND_TRUTH_TOPIC, FRONT]):
            msg = source.deserialize(raw, msgtype)
            stamps.append(bh.stamp_ns(msg))
            if msgtype.endswith('/Image'):
                mask = np.asarray(msg.data)
                assert msg.encoding == 'mono8' and (msg.width, msg.height) == (1164, 874)
                assert set(np.unique(mask)) <= {0, 128, 255} and (mask == 255).any()
        assert np.allclose(np.diff(sorted(stamps))[:3], 50_000_000)     # 10 Hz, 50 ms apart
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(demo.SAMPLE_BAG, '*')))
    assert size < 4_000_000


def test_sample_bag_and_licences_are_package_data():
    # setup.py ships package_data 'assets/*' and 'assets/**/*'
    package = os.path.join(ROOT, 'seg_perception')
    shipped = {os.path.relpath(p, package) for pattern in ('assets/*', 'assets/**/*')
               for p in glob.glob(os.path.join(package, pattern), recursive=True)
               if os.path.isfile(p)}
    for name in ('metadata.yaml', 'sample_bag.mcap'):
        assert os.path.join('assets', 'sample_bag', name) in shipped
    licences = os.path.join('assets', 'samples_LICENSES')
    for name in ('README.md', 'SAMPLE_BAG.md', 'commaai_comma2k19_LICENSE',
                 'udacity_CarND-LaneLines-P1_LICENSE'):
        assert os.path.join(licences, name) in shipped


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_sample_without_torch(tmp_path):
    command = [sys.executable, '-c', SCRIPT, 'demo', '--output', str(tmp_path / 'demo'),
               '--no-progress']
    if default_model_path() is None:         # until a default model ships: the test model
        command += ['--model', bh.model_path()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert 'BLOCKED-LOADED []' in done.stdout
    assert 'report: ' in done.stdout and 'output bag: ' in done.stdout
    metrics = json.loads((tmp_path / 'demo' / 'metrics.json').read_text())
    assert metrics['status'] == 'complete'
    assert metrics['cameras']['camera_front']['frames'] == 12
    assert metrics['cameras']['camera_dash']['frames'] == 11
    assert metrics['ground_truth']['kind'] == 'drivable'
    assert metrics['ground_truth']['frames_scored'] == 11
    assert metrics['drivable_iou'] is not None
    written = bh.read_bag(metrics['output_bag'])
    assert len(written['/camera/front/segmentation/labels']) == 12
    assert len(written['/camera/dash/segmentation/drivable_mask']) == 11
    assert len(written[FRONT]) == 12 and len(written['/camera/dash/camera_info']) == 11
    assert (tmp_path / 'demo' / 'report.html').is_file()
    # The sample's CameraInfo is uncalibrated (K all zero): no grid, and the report says why.
    assert metrics['ground']['grids_written'] == 0
    assert '/segmentation/drivable_grid' not in written
    reason = metrics['ground']['no_grid_reason']
    assert 'uncalibrated (K all zero)' in reason
    assert f'No drivable grid: {reason}.' in (tmp_path / 'demo' / 'report.md').read_text()


def test_demo_without_a_default_model_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('seg_perception.model_info.default_model_path', lambda: None)
    code = cli.main(['demo', '--output', str(tmp_path / 'demo'), '--no-progress'])
    assert code == 2
    error = capsys.readouterr().err
    assert 'no default model is installed' in error and '--model' in error
    assert not (tmp_path / 'demo').exists()
    code = cli.main(['demo', '--model', str(tmp_path / 'missing.onnx')])
    assert code == 2 and 'model file not found' in capsys.readouterr().err


def _error_line(error: str) -> str:
    assert 'Traceback' not in error
    lines = [line for line in error.splitlines() if line.startswith('seg-perception demo:')]
    assert len(lines) == 1, error
    return lines[0]


def test_demo_output_that_cannot_be_created_is_one_line_naming_it(tmp_path, capsys):
    regular = tmp_path / 'notes.txt'
    regular.write_text('not a folder')              # root cannot create a folder under it
    code = cli.main(['demo', '--model', bh.model_path(), '--output', str(regular / 'demo'),
                     '--no-progress'])
    assert code == 2
    assert _error_line(capsys.readouterr().err) == (
        f'seg-perception demo: error: cannot create the output folder {regular / "demo"}: '
        'Not a directory')


def test_demo_on_a_full_disk_closes_the_bag_and_writes_the_partial_report(
        tmp_path, monkeypatch, capsys):
    from rosbags.rosbag2 import Writer

    def full(self, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Writer, 'write', full)
    out = tmp_path / 'demo'
    code = cli.main(['demo', '--model', bh.model_path(), '--output', str(out), '--no-progress'])
    assert code == 2
    line = _error_line(capsys.readouterr().err)
    out_bag = out / 'sample_bag_segmentation'
    assert line.startswith(f'seg-perception demo: error: cannot write the output bag {out_bag}')
    assert line.endswith(f'No space left on device (partial output: 0 frames in {out_bag}; '
                         f'report in {out})')
    assert (out_bag / 'metadata.yaml').is_file()
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['status'] == 'partial' and metrics['output_bag_closed'] is True
