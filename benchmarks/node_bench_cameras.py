"""node_bench.py's mode 3: several cameras through segmentation_node in its own process.

node_bench.py --cameras runs :func:`main_cameras`; this file run as a script with one JSON
argument is the publisher process of a run (:func:`publish_streams`).
"""
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

import node_bench_stats as stats
from node_bench import decode_ms, make_message
from seg_perception.bench.pipeline_bench import machine, run_config
from seg_perception.ros.background_spin import BackgroundSpin
from seg_perception.model_info import resolve_model_path

CAMERAS_XML = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'config',
                           'cyclonedds_cameras.xml')


def camera_names(count):
    return [f'cam{i}' for i in range(count)]


def publish_streams(spec):
    """The publisher process: every camera at ``rate`` Hz, phases spread over one period
    (cameras are not synchronised); prints the stamps sent per camera as JSON."""
    names, encoding = camera_names(spec['cameras']), spec['encoding']
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('bench_cameras', context=context)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    msg = make_message(encoding, spec['width'], spec['height'])
    publishers = [node.create_publisher(type(msg), f'/bench/{name}/image', qos)
                  for name in names]
    period = 1.0 / spec['rate']
    sent = {name: [] for name in names}
    started = time.perf_counter()
    tick = 0
    while time.perf_counter() - started < spec['seconds']:
        for index, (name, publisher) in enumerate(zip(names, publishers)):
            due = started + tick * period + index * period / len(names)
            time.sleep(max(0.0, due - time.perf_counter()))
            stamp = node.get_clock().now()
            msg.header.stamp = stamp.to_msg()
            publisher.publish(msg)
            sent[name].append(stamp.nanoseconds)
        tick += 1
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    print(json.dumps(sent))


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    with open(f'/proc/{pid}/stat') as stream:
        fields = stream.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def memory_mb(pid, field):
    """VmRSS or VmHWM of process ``pid`` in MiB."""
    with open(f'/proc/{pid}/status') as stream:
        for line in stream:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def node_command(args, names, encoding):
    transport = 'compressed' if encoding == 'jpeg' else 'raw'
    params = ['cameras:=[' + ','.join(names) + ']']
    for name in names:
        params += [f'cameras.{name}.topic:=/bench/{name}/image',
                   f'cameras.{name}.transport:={transport}']
    if args.model:
        params.append(f'model:={os.path.abspath(args.model)}')
    params += args.node_param or []
    command = [sys.executable, '-m', 'seg_perception.ros.entry_point', '--ros-args']
    for param in params:
        command += ['-p', param]
    return command


def run_cameras(args, count, encoding):
    """One run: ``count`` cameras of ``encoding`` at args.rate Hz through segmentation_node."""
    names = camera_names(count)
    env = dict(os.environ)
    env['CYCLONEDDS_URI'] = ','.join(filter(None, [env.get('CYCLONEDDS_URI'),
                                                   'file://' + os.path.abspath(CAMERAS_XML)]))
    log = tempfile.TemporaryFile('w+')         # a pipe left unread would block the node
    node = subprocess.Popen(node_command(args, names, encoding), env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node('bench_outputs', context=context)
    outputs = {name: [] for name in names}

    def received(name, msg):
        arrival = time.time_ns()
        outputs[name].append((msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec,
                              arrival))
    ran = {}                             # backend, precision, device from /diagnostics

    def diagnosed(msg):
        ran.update((kv.key, kv.value) for status in msg.status for kv in status.values
                   if kv.key in ('backend', 'precision', 'device'))
    client.create_subscription(DiagnosticArray, '/diagnostics', diagnosed, 10)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    for name in names:
        client.create_subscription(Image, f'/{name}/segmentation/labels',
                                   lambda msg, name=name: received(name, msg), qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    spinner = BackgroundSpin(executor)
    try:
        deadline = time.monotonic() + args.startup_timeout
        while any(client.count_publishers(f'/{name}/segmentation/labels') == 0
                  for name in names):
            if node.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f'segmentation_node did not start: {log.read()[-500:]}')
            time.sleep(0.2)
        spec = {'cameras': count, 'encoding': encoding, 'rate': args.rate,
                'width': args.width, 'height': args.height,
                'seconds': args.warmup + args.duration}
        publisher = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                      json.dumps(spec)], env=env, stdout=subprocess.PIPE,
                                     text=True)
        time.sleep(args.warmup)
        cpu_before = {p.pid: cpu_seconds(p.pid) for p in (node, publisher)}
        time.sleep(args.duration)
        cpu = {p.pid: (cpu_seconds(p.pid) - cpu_before[p.pid]) / args.duration
               for p in (node, publisher)}
        rss, peak = memory_mb(node.pid, 'VmRSS'), memory_mb(node.pid, 'VmHWM')
        sent = json.loads(publisher.communicate(timeout=args.warmup + 30)[0])
        time.sleep(1.0)                  # the results of the last frames
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
        spinner.stop()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
        log.close()
    span = stats.window(sent, args.warmup, args.duration)
    cameras = {name: stats.camera_summary(sent[name], outputs[name], span) for name in names}
    latencies = [(arrival - stamp) / 1e6 for name in names for stamp, arrival in outputs[name]
                 if span[0] <= stamp < span[1]]
    row = stats.run_summary(cameras, latencies)
    row.update(encoding=encoding, rate=args.rate, ran=ran, node_cpu=cpu[node.pid],
               publisher_cpu=cpu[publisher.pid], node_rss_mb=rss, node_peak_rss_mb=peak,
               decode_ms=decode_ms(make_message(encoding, args.width, args.height))
               if encoding == 'jpeg' else float('nan'))
    return row


def bench_fps(args):
    """Frames/s of `seg-perception bench` for one raw 1080p stream, fp32, ONNX Runtime."""
    result = run_config({'kind': 'pipeline', 'model': resolve_model_path(args.model),
                         'input_size': [args.height, args.width], 'batch': 1,
                         'iterations': 20, 'warmup': 3, 'threads': 0, 'backend': 'onnxruntime',
                         'precision': 'fp32', 'color': False, 'ego': False, 'fill_holes': 0,
                         'engine_cache_dir': None})
    if 'error' in result:
        raise RuntimeError(f'seg-perception bench failed: {result["error"]}')
    return result['fps']


def display_path(path):
    """``path`` relative to the repository when inside it (the report is committed)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inside = os.path.abspath(path).startswith(repo + os.sep)
    return os.path.relpath(path, repo) if inside else path


def describe_runs(rows):
    """What the node said it ran (its /diagnostics), once per distinct setting."""
    settings = {', '.join(f'{k} {v}' for k, v in sorted(r['ran'].items())) or 'not reported'
                for r in rows}
    return '; '.join(sorted(settings))


def main_cameras(args, argv=None):
    command_args = sys.argv[1:] if argv is None else list(argv)
    load_before = os.getloadavg()
    reference = bench_fps(args)
    print(f'# seg-perception bench, one raw {args.width}x{args.height} stream, fp32: '
          f'{reference:.1f} frames/s', flush=True)
    rows = []
    for encoding, count in stats.camera_runs(args.cameras, args.encodings.split(',')):
        rows.append(run_cameras(args, count, encoding))
        print(stats.results_table(rows[-1:]).splitlines()[-1], flush=True)
    load_after = os.getloadavg()
    # The machine's load changes during the runs: the reference is timed on both sides.
    reference_after = bench_fps(args)
    print(f'# seg-perception bench again: {reference_after:.1f} frames/s', flush=True)
    info = machine()
    section = '\n'.join([
        '## Several cameras through the node (`--cameras`)', '',
        f'- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}',
        f'- command: `{shlex.join(["python3", "benchmarks/node_bench.py"] + command_args)}`',
        f'- machine: {info["cpu"]}, {info["cores"]} cores, {info["memory"]}; {info["os"]}; '
        f'{info["versions"]}',
        f'- load average (1/5/15 min) before: {", ".join(f"{v:.1f}" for v in load_before)}; '
        f'after: {", ".join(f"{v:.1f}" for v in load_after)}',
        f'- model: {display_path(resolve_model_path(args.model))}; node parameters at their '
        f'defaults but cameras, topics and transport'
        + ''.join(f', `{param}`' for param in args.node_param or [])
        + f'; it ran: {describe_runs(rows)}',
        f'- {args.width}x{args.height} frames at {args.rate:g} Hz per camera, {args.warmup:g} s '
        f'warm-up, then {args.duration:g} s measured',
        f'- `seg-perception bench`, one raw stream, fp32, ONNX Runtime: {reference:.1f} '
        f'frames/s before the node runs, {reference_after:.1f} after (the ratio below uses the '
        'higher)',
        '- CPU in cores (CPU seconds / wall seconds over the measured window), per process: '
        'the node; the publisher process (all cameras); this process subscribes',
        '', stats.results_table(rows), '',
        *stats.target_lines(rows, max(reference, reference_after))])
    print(section)
    if args.output:
        text = open(args.output).read() if os.path.isfile(args.output) else ''
        with open(args.output, 'w') as stream:
            stream.write(stats.replace_section(text, section))
        print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    publish_streams(json.loads(sys.argv[1]))
