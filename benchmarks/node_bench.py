#!/usr/bin/env python3
"""What segmentation_node itself costs per frame, and how it drops frames under load.

    source /opt/ros/humble-min/setup.bash
    ROS_DOMAIN_ID=77 python3 benchmarks/node_bench.py                  # fixed-time model
    ROS_DOMAIN_ID=77 python3 benchmarks/node_bench.py --model m.onnx   # a real model
    ROS_DOMAIN_ID=77 python3 benchmarks/node_bench.py --cameras 1,2,4,6 --encodings jpeg \
        --rate 10 --output benchmarks/NODE.md                         # 3. several cameras

Modes 1 and 2 run the real node (SegmentationNode, its worker, rclpy publishers) in
this process with a test publisher node and subscribers for the outputs.

1. cost: frames one at a time (each waits for the previous result), so nothing
   queues. node cost = publish done - callback start - pipeline.process() time,
   i.e. decoding, copies, building messages and rclpy publishing; split into
   decode (conversion) and publish. rclpy's deserialisation before the callback is
   measured on its own.
2. drops: frames at --rate Hz against a slower model; how many the node skips.

The default pipeline is a stand-in that sleeps --inference-ms and returns results
of the frame's size, so the node's share is measured without a model's noise.

3. cameras (--cameras N,...; node_bench_cameras.py): the node as users start it
   (segmentation_node, its own process, the default model unless --model) with N
   cameras; a second process publishes N 1080p streams at --rate Hz each, stamped when
   sent; this one subscribes to every camera's labels and times stamp -> arrival. CPU
   use and RSS are read from /proc per process. The same run times `seg-perception
   bench` for one raw 1080p fp32 stream (bench/pipeline_bench.py) for the ratio of
   issue #23.
"""
import argparse
import os
import statistics
import sys
import threading
import time
import types

import cv2
import numpy as np

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

import node_bench_stats as stats
from seg_perception.ros import conversions
from seg_perception.ros.background_spin import BackgroundSpin
from seg_perception.ros.node import SegmentationNode
from seg_perception.ros.worker import SUPERSEDED


class FixedTimePipeline:
    """Sleeps a fixed time per batch; labels: a road half and a sky half."""

    def __init__(self, inference_ms):
        self.inference_s = inference_ms / 1000.0
        self.info = types.SimpleNamespace(class_names=['road', 'sky'],
                                          palette=[[128, 64, 128], [70, 130, 180]],
                                          drivable_ids=[0], outputs=['labels'],
                                          input_size=[512, 1024])

    def describe(self):
        return {'name': 'stand-in', 'precision': 'fp32', 'device': 'cpu', 'drivable_ids': [0]}

    def process(self, frames, encodings=None):
        time.sleep(self.inference_s)
        results = []
        for frame in frames:
            labels = np.zeros(frame.shape[:2], np.uint8)
            labels[:frame.shape[0] // 2] = 1
            results.append(types.SimpleNamespace(
                labels=labels, drivable_mask=np.where(labels == 0, 255, 0).astype(np.uint8),
                confidence=None, color=None, timings={}))
        return results


class TimedPipeline:
    """Wraps a pipeline and keeps the duration of its last process() call."""

    def __init__(self, inner):
        self.inner, self.info, self.last_s = inner, inner.info, 0.0
        self.backend = getattr(inner, 'backend', None)

    def describe(self):
        return self.inner.describe()

    def process(self, frames, encodings=None):
        started = time.perf_counter()
        try:
            return self.inner.process(frames, encodings)
        finally:
            self.last_s = time.perf_counter() - started


def make_message(encoding, width, height):
    """A test scene in ``encoding`` (raw Image or, for jpeg, CompressedImage)."""
    rng = np.random.default_rng(0)
    rgb = cv2.resize(rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8),
                     (width, height), interpolation=cv2.INTER_LINEAR)
    if encoding == 'jpeg':
        msg = CompressedImage(format='jpeg')
        msg.data.frombytes(cv2.imencode('.jpg', rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                           [1].tobytes())
        return msg
    if encoding == 'yuv422':
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
        msg = Image(height=height, width=width, encoding='yuv422', step=width * 2)
        msg.data.frombytes(yuv.tobytes())
        return msg
    pixels = {'rgb8': rgb, 'bgr8': rgb[..., ::-1], 'mono8': rgb[..., 1]}[encoding]
    return conversions.build_image(Image, pixels, encoding, None)


class Bench:
    """The node under test plus a client node that publishes and subscribes."""

    def __init__(self, args, encoding):
        compressed = encoding == 'jpeg'
        self.msg = make_message(encoding, args.width, args.height)
        overrides = ['--ros-args', '-p', f'model:={args.model or os.path.abspath(__file__)}',
                     '-p', f'cameras.camera.transport:={"compressed" if compressed else "raw"}',
                     '-p', 'cameras.camera.topic:=/bench/image', '-p', 'max_frame_age_ms:=0.0',
                     '-p', f'publish_color:={str(args.color).lower()}']
        self.context = rclpy.Context()
        rclpy.init(args=overrides, context=self.context)
        self.node = SegmentationNode(context=self.context)
        if args.model:
            self.node.start()
        else:
            self.node.start(lambda config: FixedTimePipeline(args.inference_ms))
        processor = self.node.worker.processor
        self.pipeline = processor.pipeline = TimedPipeline(processor.pipeline)
        self.samples, self.done = [], threading.Event()
        inner_publish, inner_prepare = processor.publish, processor.prepare
        batch_started = [0.0]

        # The worker's first stage (decode) starts the batch; wrapping process() timed
        # nothing once the worker ran decode and inference on threads of their own.
        def timed_prepare(frames):
            batch_started[0] = time.perf_counter()
            return inner_prepare(frames)

        def timed_publish(frame, result):
            started = time.perf_counter()
            inner_publish(frame, result)
            finished = time.perf_counter()
            # (node cost, publish, callback -> worker hand-off)
            self.samples.append((finished - frame.arrived - self.pipeline.last_s,
                                 finished - started, batch_started[0] - frame.arrived))
            self.done.set()
        processor.publish = timed_publish
        processor.prepare = timed_prepare

        self.client = rclpy.create_node('bench_client', context=self.context)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.publisher = self.client.create_publisher(type(self.msg), '/bench/image', qos)
        self.received = []
        for kind in ('labels', 'drivable_mask'):
            self.client.create_subscription(Image, f'/camera/segmentation/{kind}',
                                            lambda m: self.received.append(1), 10)
        self.spinners = []
        for node in (self.node, self.client):
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(node)
            self.spinners.append(BackgroundSpin(executor))
        time.sleep(1.0)                      # discovery

    def send(self):
        self.msg.header.stamp = self.client.get_clock().now().to_msg()
        self.publisher.publish(self.msg)

    def close(self):
        for spinner in self.spinners:
            spinner.stop()
        self.node.destroy_node()
        self.client.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run_cost(args, encoding):
    bench = Bench(args, encoding)
    try:
        for _ in range(args.frames + 3):
            bench.done.clear()
            bench.send()
            if not bench.done.wait(10.0):
                print(f'  {encoding}: no result within 10 s', file=sys.stderr)
            time.sleep(0.02)
        samples = bench.samples[3:]                       # warm-up
        overhead = [s[0] * 1e3 for s in samples]
        publish = [s[1] * 1e3 for s in samples]
        handoff = [s[2] * 1e3 for s in samples]
        decode = overhead_decode(bench)
        data = serialize_message(bench.msg)
        started = time.perf_counter()
        for _ in range(5):
            deserialize_message(data, type(bench.msg))
        deserialise_ms = (time.perf_counter() - started) / 5 * 1e3
    finally:
        bench.close()
    return {'encoding': encoding, 'frames': len(samples),
            'node_ms_p50': stats.percentile(overhead, 50),
            'node_ms_p90': stats.percentile(overhead, 90),
            'publish_ms_p50': stats.percentile(publish, 50), 'decode_ms_p50': decode,
            'handoff_ms_p50': stats.percentile(handoff, 50),
            'rclpy_deserialise_ms': deserialise_ms,
            'pipeline_ms_p50': bench.pipeline.last_s * 1e3}


def overhead_decode(bench):
    return decode_ms(bench.msg)


def decode_ms(msg, repeats=10):
    """Median time of the node's decode of ``msg`` (ros/conversions.py), ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        conversions.decode(msg)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def run_drops(args, encoding):
    bench = Bench(args, encoding)
    try:
        period = 1.0 / args.rate
        sent = 0
        started = time.perf_counter()
        while time.perf_counter() - started < args.duration:
            bench.send()
            sent += 1
            time.sleep(max(0.0, started + sent * period - time.perf_counter()))
        time.sleep(1.0)
        snapshot = bench.node.stats['camera'].snapshot()
    finally:
        bench.close()
    received, published = snapshot['received'], snapshot['published']
    return {'encoding': encoding, 'sent': sent, 'received': received, 'published': published,
            'superseded': snapshot['dropped'].get(SUPERSEDED, 0),
            'drop_rate': 1 - published / received if received else float('nan'),
            'output_hz': published / args.duration}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--width', type=int, default=1920)
    parser.add_argument('--height', type=int, default=1080)
    parser.add_argument('--encodings', default='rgb8,bgr8,yuv422,jpeg')
    parser.add_argument('--frames', type=int, default=30, help='frames per encoding (cost)')
    parser.add_argument('--model', default='',
                        help='ONNX model; default: a fixed-time stand-in (mode 3: the shipped '
                             'default model)')
    parser.add_argument('--inference-ms', type=float, default=50.0,
                        help='stand-in model time per batch')
    parser.add_argument('--color', action='store_true', help='also publish the colour image')
    parser.add_argument('--rate', type=float, default=30.0,
                        help='input rate for the drop test; mode 3: per camera')
    parser.add_argument('--duration', type=float, default=5.0,
                        help='drop test seconds; mode 3: seconds measured')
    parser.add_argument('--cameras', nargs='+', metavar='[ENCODING=]N,...',
                        help='mode 3: camera counts to run, e.g. jpeg=1,2,4,6 rgb8=1,6 (plain '
                             'counts: each of --encodings); the node in its own process, '
                             '--rate Hz per camera')
    parser.add_argument('--warmup', type=float, default=5.0,
                        help='mode 3: seconds of frames before measuring')
    parser.add_argument('--startup-timeout', type=float, default=60.0,
                        help='mode 3: seconds to wait for the node to load its model')
    parser.add_argument('--output', help='mode 3: markdown file whose section to rewrite')
    parser.add_argument('--node-param', action='append', metavar='NAME:=VALUE',
                        help='mode 3: a further node parameter (repeatable), e.g. max_batch:=2')
    args = parser.parse_args(argv)
    if args.cameras:
        from node_bench_cameras import main_cameras     # mode 3 (imports this module)
        return main_cameras(args, argv)

    print(f'# segmentation_node cost at {args.width}x{args.height}, '
          f'{"model " + args.model if args.model else f"stand-in {args.inference_ms:g} ms"}, '
          f'outputs labels + drivable_mask{" + color" if args.color else ""}, '
          f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, {os.cpu_count()} CPUs')
    print('| input | node p50 ms | node p90 ms | decode p50 | publish p50 | hand-off p50 | '
          'rclpy deserialise | pipeline |')
    print('|---|---|---|---|---|---|---|---|')
    for encoding in args.encodings.split(','):
        r = run_cost(args, encoding)
        print(f"| {encoding} | {r['node_ms_p50']:.2f} | {r['node_ms_p90']:.2f} | "
              f"{r['decode_ms_p50']:.2f} | {r['publish_ms_p50']:.2f} | "
              f"{r['handoff_ms_p50']:.2f} | "
              f"{r['rclpy_deserialise_ms']:.2f} | {r['pipeline_ms_p50']:.1f} |", flush=True)
    encoding = args.encodings.split(',')[0]
    r = run_drops(args, encoding)
    print(f"\n# drops: {encoding} at {args.rate:g} Hz for {args.duration:g} s: sent {r['sent']}, "
          f"received {r['received']}, published {r['published']} ({r['output_hz']:.1f} Hz), "
          f"superseded {r['superseded']}, drop rate {r['drop_rate']:.0%}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
