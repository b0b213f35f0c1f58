"""Cost of decoding a 1080p camera JPEG: in full, and at the smallest DCT scale the network needs.

    python benchmarks/jpeg_decode_bench.py [--rounds 30] [--write benchmarks/JPEG.md]

The sample bag's dash frames, upscaled to 1920x1080 and encoded as the drivers do (quality 90,
4:2:0), decoded by each candidate in turn on every round (interleaved, so load on the shared
machine falls on all of them alike):

* full decodes: ``cv2.imdecode`` (what benchmarks/NODE.md timed) and ``simplejpeg.decode_jpeg``;
* scaled decodes to at least the network input (360x480): ``cv2.imdecode`` with
  ``IMREAD_REDUCED_COLOR_2`` (OpenCV scales by 1/2, 1/4, 1/8 only), ``simplejpeg.decode_jpeg(
  min_height=, min_width=)`` (libjpeg-turbo's k/8 scales: 3/8 for 1080p) and the node's own
  path before and now, ``conversions.decode_compressed`` (header check, strict mode), alone
  and followed by the pipeline's conversion to the network input (resize + BGR to RGB).

Writes a markdown table with the machine, date, command and load when ``--write`` is given.
"""
import argparse
import datetime
import os
import platform
import sys
import time
from types import SimpleNamespace

import cv2
import numpy as np
import simplejpeg

from seg_perception.replay.bag_io import open_bag
from seg_perception.ros.conversions import decode, decode_compressed
from seg_perception.runtime.cpu_features import cpu_model_name

BAG = 'seg_perception/assets/sample_bag'
TOPIC = '/camera/dash/image_raw/compressed'
CAMERA = (1080, 1920)
NETWORK = (360, 480)


def camera_jpegs():
    """The bag's dash frames as 1080p JPEGs (quality 90, 4:2:0)."""
    jpegs = []
    with open_bag(BAG) as source:
        for _, msgtype, _, raw in source.messages([TOPIC]):
            pixels = decode(source.deserialize(raw, msgtype)).pixels
            big = cv2.resize(pixels, CAMERA[::-1], interpolation=cv2.INTER_CUBIC)
            jpegs.append(simplejpeg.encode_jpeg(big, quality=90, colorspace='BGR',
                                                colorsubsampling='420'))
    return [np.frombuffer(j, np.uint8) for j in jpegs]


def to_network(bgr):
    """What the pipeline's convert stage does next: resize to the network input, then RGB."""
    small = cv2.resize(bgr, NETWORK[::-1], interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def node_decode(jpeg, min_size=None):
    return decode_compressed(SimpleNamespace(format='jpeg', data=jpeg), min_size=min_size).pixels


def candidates():
    height, width = NETWORK
    return {
        'cv2.imdecode, full': lambda b: cv2.imdecode(b, cv2.IMREAD_COLOR),
        'simplejpeg, full': lambda b: simplejpeg.decode_jpeg(b, colorspace='BGR'),
        'cv2.imdecode IMREAD_REDUCED_COLOR_2 (960x540)': lambda b: cv2.imdecode(
            b, cv2.IMREAD_REDUCED_COLOR_2),
        'simplejpeg min_height/min_width (3/8: 720x405)': lambda b: simplejpeg.decode_jpeg(
            b, colorspace='BGR', min_height=height, min_width=width),
        'node before: decode_compressed(), full': node_decode,
        'node now: decode_compressed(min_size=360x480)': lambda b: node_decode(b, NETWORK),
        'node before, + convert to the network input': lambda b: to_network(node_decode(b)),
        'node now, + convert to the network input': lambda b: to_network(
            node_decode(b, NETWORK)),
    }


def measure(jpegs, rounds):
    times = {name: [] for name in candidates()}
    for name, fn in candidates().items():      # warm-up, and a check of the output sizes
        shape = fn(jpegs[0]).shape
        print(f'{name}: decodes to {shape[1]}x{shape[0]}', file=sys.stderr)
    for _ in range(rounds):
        for name, fn in candidates().items():
            for jpeg in jpegs:
                start = time.perf_counter()
                fn(jpeg)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (float(np.min(t)), float(np.median(t)), float(np.percentile(t, 90)))
            for name, t in times.items()}


def table(results, jpegs, rounds, load_before, load_after, command):
    full = results['cv2.imdecode, full'][1]
    lines = [
        '# JPEG decode: full against scaled to the 360x480 network input',
        '',
        f'Command: `{command}` (PYTHONPATH at the repository root).',
        f'Machine: {cpu_model_name() or platform.machine()}, {os.cpu_count()} logical CPUs '
        f'shared with other jobs, Python {platform.python_version()}, OpenCV {cv2.__version__}, '
        f'simplejpeg {simplejpeg.__version__}.',
        f'Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. '
        f'Load average (1 min) {load_before:.2f} at the start, {load_after:.2f} at the end.',
        '',
        f'{len(jpegs)} sample-bag dash frames upscaled to {CAMERA[1]}x{CAMERA[0]}, JPEG quality '
        f'90, 4:2:0 (mean {np.mean([j.size for j in jpegs]) / 1024:.0f} KiB), {rounds} rounds, '
        'candidates interleaved per round; one thread each.',
        '',
        '| decoder | min ms | median ms | p90 ms | median / full cv2.imdecode |',
        '| --- | --- | --- | --- | --- |',
    ]
    for name, (low, median, p90) in results.items():
        lines.append(f'| {name} | {low:.2f} | {median:.2f} | {p90:.2f} | '
                     f'{median / full:.2f} |')
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=30)
    parser.add_argument('--write', metavar='FILE.md', help='write the results table here')
    args = parser.parse_args()
    jpegs = camera_jpegs()
    load_before = os.getloadavg()[0]
    results = measure(jpegs, args.rounds)
    command = 'python benchmarks/jpeg_decode_bench.py ' + ' '.join(sys.argv[1:])
    text = table(results, jpegs, args.rounds, load_before, os.getloadavg()[0], command.strip())
    print(text)
    if args.write:
        with open(args.write, 'w') as stream:
            stream.write(text)


if __name__ == '__main__':
    main()
