#!/usr/bin/env python3
"""The TensorRT path on one NVIDIA GPU, checked in one go (issue #23 item 5).

    bash benchmarks/gpu_check.sh          # installs TensorRT 10 + onnxruntime-gpu, runs this

Steps, each a command with its own time limit, all inside one budget (default 470 s,
counted from when gpu_check.sh started, the install included):

1. frames:   the sample bag's camera frames as PNG files (calibration and comparison)
2. build:    the FP16 engine through `seg-perception build-engine` (a timing cache)
3. agree:    its labels against ONNX Runtime on the CPU running the same ONNX file, on
             every sample frame (target: >= 99.5 % of the pixels)
4. bench:    `seg-perception bench` with TensorRT at 1080p, 1 and 6 cameras per call
5. quantize: the default model to a QDQ INT8 model for TensorRT (the frames calibrate),
             then 2-4 again for INT8

benchmarks/GPU.md gets its header (GPU, driver, TensorRT, date, command) first and each
figure as soon as it is measured, so a run that is cut off leaves what it had; a
complete run ends with a 'finished' line. A step that fails or runs out of time is
written as such, and the steps that need its output are skipped.
"""
import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
DEFAULT_REPORT = os.path.join(REPO, 'benchmarks', 'GPU.md')
BUDGET_S = 470.0              # under the 8 minutes asked for, with room to write the file
MIN_STEP_S = 10.0             # a step with less time left than this is not started
AGREEMENT_TARGET = 0.995
# A fixed 1080p profile for one camera, and a range for six cameras and the sample frames
# (which are not 1080p); the pipeline takes the first profile a batch fits.
PROFILES = ('1x1080x1920', '1x64x64/6x1080x1920/6x1280x2048')
CAMERAS = (1, 6)
# Every step's environment: the node, bench and the check's own pipelines look the engine up
# under these profiles (SHAPES_ENV of runtime/trt/engine.py), so they find build-engine's.
STEP_ENV = {'SEG_PERCEPTION_TRT_SHAPES': ' '.join(PROFILES)}


class Outcome(NamedTuple):
    returncode: Optional[int]        # None: stopped at its time limit
    stdout: str
    stderr: str
    seconds: float


class Step(NamedTuple):
    name: str
    command: List[str]
    timeout_s: float
    report: Callable[[str], List[str]]        # stdout -> the report's lines
    needs: Sequence[str] = ()


Runner = Callable[[List[str], float], Outcome]


# -- running ----------------------------------------------------------------------

def run_command(command: List[str], timeout_s: float) -> Outcome:
    """Run ``command``, killing its whole process group at ``timeout_s`` (bench and the
    engine builds start processes of their own)."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True, cwd=REPO,
                                   env=dict(os.environ, **STEP_ENV))
    except OSError as exc:                       # no nvidia-smi, say
        return Outcome(127, '', str(exc), 0.0)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        code = None
    return Outcome(code, stdout, stderr, time.monotonic() - started)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else 'no output'


def run_steps(steps: Sequence[Step], runner: Runner, report: 'Report', deadline: float,
              clock: Callable[[], float] = time.monotonic) -> Dict[str, bool]:
    """Run ``steps`` in order inside ``deadline`` (a ``clock`` time); True where one passed."""
    passed: Dict[str, bool] = {}
    for step in steps:
        missing = [n for n in step.needs if not passed.get(n)]
        left = deadline - clock()
        if missing:
            report.add(f'- {step.name}: skipped, needs {", ".join(missing)}')
        elif left < MIN_STEP_S:
            report.add(f'- {step.name}: not run, the time budget is spent')
        else:
            outcome = runner(step.command, min(step.timeout_s, left))
            took = f'{outcome.seconds:.0f} s'
            if outcome.returncode is None:
                report.add(f'- {step.name}: stopped at its limit after {took}: '
                           f'{last_line(outcome.stderr or outcome.stdout)}')
            elif outcome.returncode != 0:
                report.add(f'- {step.name}: FAILED (exit {outcome.returncode}, {took}): '
                           f'{last_line(outcome.stderr or outcome.stdout)}')
            else:
                try:
                    lines = step.report(outcome.stdout)
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    report.add(f'- {step.name}: ran ({took}) but its output is unreadable: '
                               f'{exc}: {last_line(outcome.stdout)}')
                else:
                    passed[step.name] = True
                    for line in lines:
                        report.add(line)
                    continue
        passed[step.name] = False
    return passed


# -- the report -------------------------------------------------------------------

class Report:
    """benchmarks/GPU.md, written line by line (flushed to disk each time)."""

    def __init__(self, path: str, header: Sequence[str]):
        self.path = path
        with open(path, 'w') as stream:
            stream.write('\n'.join(header) + '\n\n')
            stream.flush()
            os.fsync(stream.fileno())

    def add(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, 'a') as stream:
            stream.write(line + '\n')
            stream.flush()
            os.fsync(stream.fileno())


def header(environment: Dict[str, str], command: str, date: str) -> List[str]:
    return ['# GPU check: TensorRT engines of the default model', '',
            f'- date: {date}',
            f'- command: `{command}`',
            f'- GPU: {environment.get("gpu", "unknown")}, driver '
            f'{environment.get("driver", "unknown")}',
            f'- TensorRT {environment.get("tensorrt", "unknown")}, onnxruntime '
            f'{environment.get("onnxruntime", "unknown")}, Python '
            f'{environment.get("python", "unknown")}',
            f'- engine profiles (NxHxW): {", ".join(PROFILES)}',
            '- written as it runs: a run cut off ends without the "finished" line', '',
            '## Results', '']


def environment_facts(runner: Runner) -> Dict[str, str]:
    """GPU name and driver (nvidia-smi), TensorRT and onnxruntime versions."""
    facts = {'python': sys.version.split()[0]}
    smi = runner(['nvidia-smi', '--query-gpu=name,driver_version', '--format=csv,noheader'],
                 20.0)
    if smi.returncode == 0 and smi.stdout.strip():
        name, _, driver = smi.stdout.strip().splitlines()[0].rpartition(',')
        facts.update(gpu=name.strip(), driver=driver.strip())
    for module in ('tensorrt', 'onnxruntime'):
        found = runner([sys.executable, '-c', f'import {module}; print({module}.__version__)'],
                       60.0)
        if found.returncode == 0 and found.stdout.strip():
            facts[module] = found.stdout.strip().splitlines()[-1]
    return facts


# -- what each step prints, in the report's words ----------------------------------

def frames_lines(stdout: str) -> List[str]:
    found = json.loads(last_line(stdout))
    return [f'- sample frames: {found["frames"]} from {found["bag"]}']


def quantize_lines(stdout: str) -> List[str]:
    fields = dict(line.strip().split(None, 1) for line in stdout.splitlines()
                  if line.startswith('  ') and len(line.split()) > 1)
    return [f'- INT8 (QDQ) model: {fields["quantised"]}; calibration {fields["calibration"]}']


def build_lines(precision: str) -> Callable[[str], List[str]]:
    def lines(stdout: str) -> List[str]:
        engine = next(line.split(None, 1)[1] for line in stdout.splitlines()
                      if line.strip().startswith('engine '))
        return [f'- build-engine {precision}: {engine.strip()}']
    return lines


def agreement_lines(precision: str) -> Callable[[str], List[str]]:
    def lines(stdout: str) -> List[str]:
        found = json.loads(last_line(stdout))
        share = found['agreement']
        verdict = 'met' if share >= AGREEMENT_TARGET else 'MISSED'
        worst = min(found['per_frame'])
        return [f'- labels TensorRT {precision} vs ONNX Runtime CPU: {100 * share:.3f} % of '
                f'{found["pixels"]} pixels agree over {found["frames"]} frames (worst frame '
                f'{100 * worst:.2f} %); target >= {100 * AGREEMENT_TARGET:g} %: {verdict}']
    return lines


def bench_lines(precision: str, cameras: int, results_path: str) -> Callable[[str], List[str]]:
    def lines(stdout: str) -> List[str]:
        with open(results_path) as stream:
            row = json.load(stream)['results'][0]
        if 'error' in row:
            raise ValueError(row['error'])
        total = row['stages_ms']['total']
        infer = row['stages_ms']['infer']
        return [f'- pipeline TensorRT {row["describe"].get("precision", precision)}, '
                f'{cameras} camera{"s" if cameras > 1 else ""} of 1920x1080 per call: '
                f'{row["fps"]:.1f} frames/s; per call total {total["median"]:.1f} ms median / '
                f'{total["p95"]:.1f} ms p95, inference {infer["median"]:.1f} ms median; '
                f'peak RSS {row["peak_rss_mb"]:.0f} MB']
    return lines


# -- the steps --------------------------------------------------------------------

def plan(work: str, model: str) -> List[Step]:
    """Every step of the check, with its time limit, for the ONNX ``model``."""
    cli = [sys.executable, '-m', 'seg_perception.cli']
    me = [sys.executable, os.path.abspath(__file__)]
    frames = os.path.join(work, 'frames')
    engines = os.path.join(work, 'engines')
    timing = os.path.join(engines, 'timing.cache')
    int8_model = os.path.join(work, 'default_model.trt.int8.onnx')
    models = {'fp16': model, 'int8': int8_model}
    steps = [Step('frames', me + ['frames', '--output', frames], 60, frames_lines)]
    # FP16 first, all of it, then INT8: a run cut off early still says the most.
    for precision in ('fp16', 'int8'):
        if precision == 'int8':
            steps.append(Step('quantize', cli + [
                'quantize', '--model', model, '--target', 'tensorrt', '--images', frames,
                '--output', int8_model], 120, quantize_lines, needs=('frames',)))
        steps.append(Step(f'build {precision}', cli + [
            'build-engine', '--model', models[precision], '--precision', precision,
            '--shapes', *PROFILES, '--cache-dir', engines, '--timing-cache', timing],
            150, build_lines(precision), needs=('quantize',) if precision == 'int8' else ()))
        steps.append(Step(f'agree {precision}', me + [
            'agree', '--model', models[precision], '--precision', precision,
            '--frames', frames, '--engine-cache', engines], 90, agreement_lines(precision),
            needs=('frames', f'build {precision}')))
        for cameras in CAMERAS:
            results = os.path.join(work, f'bench_{precision}_{cameras}.json')
            steps.append(Step(f'bench {precision} x{cameras}', cli + [
                'bench', '--model', models[precision], '--backend', 'tensorrt',
                '--precision', precision, '--batch', str(cameras), '--input-size', '1080x1920',
                '--iterations', '30', '--engine-cache-dir', engines, '--output', results],
                60, bench_lines(precision, cameras, results),
                needs=(f'build {precision}',)))
    return steps


# -- the steps that run in their own process ----------------------------------------

def export_frames(output: str) -> dict:
    """Every camera image of the sample bag as PNG files in ``output``."""
    import cv2
    import numpy as np

    from seg_perception.commands.demo import sample_bag_path
    from seg_perception.replay.bag_io import open_bag
    os.makedirs(output, exist_ok=True)
    bag = sample_bag_path()
    count = 0
    with open_bag(bag) as source:
        topics = [t.name for t in source.topics.values()
                  if t.msgtype.endswith('/CompressedImage')]
        for _, msgtype, _, raw in source.messages(topics):
            msg = source.deserialize(raw, msgtype)
            bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is not None:
                cv2.imwrite(os.path.join(output, f'frame_{count:03d}.png'), bgr)
                count += 1
    return {'frames': count, 'bag': os.path.relpath(bag, REPO)}


def label_agreement(pairs) -> dict:
    """Share of equal labels over (labels, reference labels) pairs, overall and per pair."""
    equal = total = 0
    per_frame = []
    for labels, reference in pairs:
        if labels.shape != reference.shape:
            raise ValueError(f'label maps differ in size: {labels.shape} vs {reference.shape}')
        same = int((labels == reference).sum())
        equal, total = equal + same, total + labels.size
        per_frame.append(same / labels.size)
    if not total:
        raise ValueError('no frames to compare')
    return {'agreement': equal / total, 'pixels': total, 'frames': len(per_frame),
            'per_frame': per_frame}


def agree(model: str, precision: str, frames: str, engine_cache: str) -> dict:
    """TensorRT's labels against ONNX Runtime's on the CPU, frame by frame."""
    import cv2

    from seg_perception.runtime.pipeline import SegmentationPipeline
    os.environ.update(STEP_ENV)        # set by run_command too; here for a run by hand
    engine = SegmentationPipeline(model, backend='tensorrt', precision=precision,
                                  engine_cache_dir=engine_cache)
    reference = SegmentationPipeline(model, backend='onnxruntime-cpu')
    pairs = []
    for name in sorted(os.listdir(frames)):
        rgb = cv2.cvtColor(cv2.imread(os.path.join(frames, name)), cv2.COLOR_BGR2RGB)
        pairs.append((engine.process([rgb])[0].labels, reference.process([rgb])[0].labels))
    return label_agreement(pairs)


def build_parser() -> argparse.ArgumentParser:
    """The check's own command line: check (the default), and the steps it runs in a
    process of their own (frames, agree)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='what')
    check = sub.add_parser('check', help='run every step, write the report (the default)')
    check.add_argument('--work', default='/tmp/seg_gpu_check', help='scratch folder')
    check.add_argument('--report', default=DEFAULT_REPORT)
    check.add_argument('--model', default='', help='ONNX model (default: the shipped one)')
    check.add_argument('--budget', type=float, default=BUDGET_S, help='seconds in all')
    check.add_argument('--started', type=float,
                       help='epoch seconds the whole check began (gpu_check.sh: before install)')
    frames = sub.add_parser('frames')
    frames.add_argument('--output', required=True)
    compare = sub.add_parser('agree')
    for option in ('--model', '--precision', '--frames', '--engine-cache'):
        compare.add_argument(option, required=True)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv if argv is not None else sys.argv[1:] or ['check'])
    if args.what == 'frames':
        print(json.dumps(export_frames(args.output)))
        return 0
    if args.what == 'agree':
        print(json.dumps(agree(args.model, args.precision, args.frames, args.engine_cache)))
        return 0
    started = args.started or time.time()
    deadline = time.monotonic() + args.budget - (time.time() - started)
    from seg_perception.model_info import resolve_model_path
    model = resolve_model_path(args.model)
    os.makedirs(args.work, exist_ok=True)
    report = Report(args.report, header(
        environment_facts(run_command),
        os.environ.get('GPU_CHECK_COMMAND') or shlex.join(['python3'] + sys.argv),
        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')))
    passed = run_steps(plan(args.work, model), run_command, report, deadline)
    report.add('')
    report.add(f'- finished in {time.time() - started:.0f} s (install included): '
               f'{sum(passed.values())} of {len(passed)} steps passed')
    return 0 if all(passed.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
