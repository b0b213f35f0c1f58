"""benchmarks/node_bench.py end to end, small: both modes run and report figures that can be
true. The figures themselves are not judged (they live in benchmarks/NODE.md); what is
checked is that every column measures something: a wrapped worker method the node stopped
calling once printed a hand-off of minus nine hours.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import require_ros
from live_ros_fixtures import next_domain

pytestmark = pytest.mark.ros
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, 'benchmarks', 'node_bench.py')
SMALL = ['--width', '320', '--height', '240']


def run_bench(*args, timeout=240):
    require_ros()
    env = dict(os.environ, ROS_DOMAIN_ID=str(next_domain()),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    done = subprocess.run([sys.executable, BENCH, *args, *SMALL], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def table_rows(text, first_cell):
    """The cells of the markdown table rows whose first cell is one of ``first_cell``."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if line.startswith('|') and cells[0] in first_cell:
            rows[cells[0]] = cells
    return rows


def test_the_node_cost_mode_times_every_stage_of_every_frame():
    out = run_bench('--encodings', 'rgb8,jpeg', '--frames', '5', '--duration', '1',
                    '--inference-ms', '30')
    rows = table_rows(out, ('rgb8', 'jpeg'))
    assert sorted(rows) == ['jpeg', 'rgb8'], out
    for encoding, cells in rows.items():
        node_p50, node_p90, decode, publish, handoff, deserialise, pipeline = map(
            float, cells[1:8])
        # A stage that was not timed shows up negative or absurdly large.
        for name, value in (('node p50', node_p50), ('decode', decode), ('publish', publish),
                            ('hand-off', handoff), ('deserialise', deserialise)):
            assert 0 <= value < 1000, f'{encoding} {name}: {value} ms\n{out}'
        assert node_p50 <= node_p90
        assert 30 <= pipeline < 1000, f'{encoding}: the stand-in sleeps 30 ms, timed {pipeline}'
    drops = re.search(r'sent (\d+), received (\d+), published (\d+)', out)
    assert drops, out
    sent, received, published = map(int, drops.groups())
    assert 0 < published <= received <= sent


def test_the_cameras_mode_runs_the_node_and_rewrites_its_section(tmp_path):
    report = tmp_path / 'NODE.md'
    report.write_text('# kept above\n')
    out = run_bench('--cameras', 'jpeg=1', '--rate', '5', '--warmup', '2', '--duration', '3',
                    '--output', str(report))
    text = report.read_text()
    assert text.startswith('# kept above\n') and 'wrote ' + str(report) in out
    assert '--cameras jpeg=1 --rate 5' in text          # the command that made it
    assert re.search(r'it ran: backend onnxruntime, device cpu, precision (fp32|int8)', text)
    row = table_rows(text, ('jpeg',))['jpeg']
    assert row[1] == '1 × 5'
    sent_per_s, total_fps = float(row[2]), float(row[3])
    assert sent_per_s > 0 and 0 < total_fps <= sent_per_s * 1.2, text
