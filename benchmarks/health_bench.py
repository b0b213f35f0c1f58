"""Cost per frame of the camera health checks (ros/camera_health.py) on the sample frames.

    python benchmarks/health_bench.py

Times CameraHealth.check_image (+ check_stamp) per frame, fed the sample bag's frames
already at the network size (360x480, the budget's case) and at camera size (the resize
to the network size included). Results: benchmarks/HEALTH.md.
"""
import time

import cv2
import numpy as np

from seg_perception.replay.bag_io import open_bag
from seg_perception.ros.camera_health import NETWORK_SIZE, CameraHealth
from seg_perception.ros.conversions import decode

BAG = 'seg_perception/assets/sample_bag'
TOPIC = '/camera/dash/image_raw/compressed'


def frames():
    with open_bag(BAG) as source:
        for _, msgtype, _, raw in source.messages([TOPIC]):
            yield decode(source.deserialize(raw, msgtype))


def per_frame_ms(images, rounds=50):
    health = CameraHealth('dash', NETWORK_SIZE)
    times = []
    for round_ in range(rounds):
        for index, (pixels, encoding) in enumerate(images):
            now = (round_ * len(images) + index) * 0.1
            start = time.perf_counter()
            health.check_stamp(int(now * 1e9) + 1, now)
            health.check_image(pixels, encoding, now)
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95))


def main():
    decoded = list(frames())
    height, width = NETWORK_SIZE
    network = [(cv2.resize(d.pixels, (width, height)), d.encoding) for d in decoded]
    camera = [(d.pixels, d.encoding) for d in decoded]
    for name, images in (('network size 360x480', network),
                         (f'camera size {camera[0][0].shape[1]}x{camera[0][0].shape[0]}',
                          camera)):
        p50, p95 = per_frame_ms(images)
        print(f'{name}: p50 {p50:.3f} ms, p95 {p95:.3f} ms per frame')


if __name__ == '__main__':
    main()
