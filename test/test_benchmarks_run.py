"""The benchmark commands that benchmarks/*.md give still run, at their smallest settings.

A figure in benchmarks/ is only worth as much as the command that remakes it; these runs
catch a script that broke when the code under it moved (the figures themselves are not
judged: a shared CI machine's timings say nothing). Each must exit 0 and print or write the
table its results file quotes, with at least one timing that is a positive number.
(node_bench.py needs ROS: test_node_bench_runs.py.)
"""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID = os.path.join(REPO, os.pardir, 'shared', 'data', 'camvid')
MODEL = 'seg_perception/assets/default_model.onnx'
INT8 = 'seg_perception/assets/default_model.cpu.int8.onnx'


def run(args, timeout=300):
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def row_after(text, header):
    """The first data row of the markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(header):
            assert index + 2 < len(lines), text
            return [cell.strip() for cell in lines[index + 2].strip().strip('|').split('|')]
    raise AssertionError(f'no table starting {header!r} in:\n{text[-3000:]}')


def positive(cell):
    value = float(re.match(r'[0-9.]+', cell.strip()).group(0))
    assert value > 0, cell
    return value


def test_ground_bench():
    out = run(['benchmarks/ground_bench.py', '--repeats', '1'])
    positive(row_after(out, '| what | median ms')[1])


def test_jpeg_decode_bench():
    out = run(['benchmarks/jpeg_decode_bench.py', '--rounds', '1'])
    cells = row_after(out, '| decoder | min ms')
    assert cells[0] == 'cv2.imdecode, full' and cells[4] == '1.00'
    positive(cells[2])


def test_health_bench():
    out = run(['benchmarks/health_bench.py'])
    found = re.search(r'network size 360x480: p50 ([0-9.]+) ms', out)
    assert found and float(found.group(1)) > 0, out


def test_int8_bench():
    if not os.path.isdir(os.path.join(CAMVID, 'val')):
        pytest.skip('CamVid val is not at ../shared/data/camvid')
    out = run(['benchmarks/int8_bench.py', '--fp32', MODEL, '--int8', INT8, '--images',
               os.path.join(CAMVID, 'val'), '--count', '2', '--runs', '2', '--threads', '1'])
    cells = row_after(out, '| model | file')
    assert cells[:2] == ['fp32', 'default_model.onnx'] and cells[-1] == '100.00% / 100.00%'
    positive(cells[3])


def test_train_bench():
    pytest.importorskip('torch')
    out = run(['benchmarks/train_bench.py', '--config', 'config/train/camvid.yaml',
               '--crops', '64x64', '--amp', 'off', '--steps', '1', '--warmup', '0',
               '--batch', '2'])
    found = [line for line in out.splitlines() if line.startswith('| 64×64 | fp32 |')]
    assert found, out
    positive(found[0].split('|')[3])


def test_design_bench_writes_every_section(tmp_path):
    output = tmp_path / 'DESIGN.md'
    run(['benchmarks/design_bench.py', '--runs', '1', '--output', str(output)])
    text = output.read_text()
    committed = open(os.path.join(REPO, 'benchmarks', 'DESIGN.md'), encoding='utf-8').read()
    sections = [line for line in committed.splitlines() if line.startswith('## ')
                and 'Reading the figures' not in line]
    assert sections and all(section in text for section in sections), text
    positive(row_after(text, '| | median ms')[1])


def test_fleet_bench(tmp_path):
    output = tmp_path / 'FLEET.md'
    run(['benchmarks/fleet_bench.py', '--bags', '2', '--frames', '3', '--output', str(output)])
    cells = row_after(output.read_text(), '| mode | wall (s)')
    assert cells[0] == 'serial (1 worker)'
    positive(cells[1])
