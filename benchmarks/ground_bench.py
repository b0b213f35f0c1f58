#!/usr/bin/env python3
"""What the ground-plane outputs cost per camera frame once their tables are precomputed.

    python benchmarks/ground_bench.py                 # prints a markdown report
    python benchmarks/ground_bench.py --repeats 500

1. grid: DrivableGrid.update() with one camera view, a 40 m × 40 m grid at 0.1 m,
   log-odds fusion, the vehicle moving and turning between updates (so every update
   decays, re-centres and warps); with the drivable mask alone, with confidence, with an
   ego mask; and fusion 'none' with the vehicle still. occupancy() (the int8 values a
   publisher sends, at grid.rate_hz rather than per frame) on its own.
2. ground points at 360×480: GroundProjector.points() for a known geometry (the cache
   lookup, the transform's check included) and the copy into a message-sized buffer.
3. the one-off costs on a cache miss: the cell → pixel table, the ground points.

The camera is a 1920×1080 plumb_bob camera 1.5 m up, pitched 8° down; labels at 360×480.
The drivable mask is a road trapezoid; confidence is a gradient.
"""
import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np

from seg_perception.ground.camera import CameraModel
from seg_perception.ground.grid import CameraView, DrivableGrid, GridGeometry
from seg_perception.ground.projection import GroundPlane, GroundProjector
from seg_perception.runtime.cpu_features import cpu_description

LABELS = (360, 480)


def camera_model() -> CameraModel:
    return CameraModel(1920, 1080, (1000.0, 0, 959.5, 0, 1000.0, 539.5, 0, 0, 1),
                       (-0.28, 0.07, 0.0005, -0.0003, -0.008), 'plumb_bob')


def mount(yaw_deg=0.0) -> np.ndarray:
    pitch, yaw = math.radians(8), math.radians(yaw_deg)
    optical = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rotation = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]]) @ \
        np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]]) @ optical
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = rotation, (1.2, 0.0, 1.5)
    return transform


def pose(step: int) -> np.ndarray:
    x, y, yaw = 0.3 * step, 0.2 * math.sin(step / 20), 0.15 * math.sin(step / 30)
    transform = np.eye(4)
    transform[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    transform[:2, 3] = (x, y)
    return transform


def masks():
    height, width = LABELS
    drivable = np.zeros(LABELS, np.uint8)
    road = np.array([[0.42 * width, 0.55 * height], [0.58 * width, 0.55 * height],
                     [width, 0.9 * height], [0, 0.9 * height]], np.int32)
    cv2.fillPoly(drivable, [road], 255)
    confidence = np.tile(np.linspace(40, 255, width).astype(np.uint8), (height, 1))
    ego = np.zeros(LABELS, bool)
    ego[int(0.9 * height):] = True
    return drivable, confidence, ego


def timed(function, repeats: int, warmup: int = 5):
    for step in range(warmup):
        function(step)
    samples = []
    for step in range(warmup, warmup + repeats):
        started = time.perf_counter()
        function(step)
        samples.append((time.perf_counter() - started) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def grid_rows(repeats: int):
    model, camera_to_vehicle = camera_model(), mount()
    drivable, confidence, ego = masks()
    plane = GroundPlane(0.0, 30.0)
    rows = []
    for label, fusion, view, moving in [
            ('drivable mask, log-odds, vehicle moving', 'log_odds',
             CameraView(model, camera_to_vehicle, drivable), True),
            ('+ confidence', 'log_odds',
             CameraView(model, camera_to_vehicle, drivable, confidence), True),
            ('+ confidence + ego mask', 'log_odds',
             CameraView(model, camera_to_vehicle, drivable, confidence, ego), True),
            ("drivable mask, fusion 'none', vehicle still", 'none',
             CameraView(model, camera_to_vehicle, drivable), False)]:
        grid = DrivableGrid(GridGeometry(40.0, 0.1), plane, fusion=fusion)

        def update(step, grid=grid, view=view, moving=moving):
            grid.update([view], pose(step) if moving else None, stamp=0.05 * step)
        rows.append((f'grid update: {label}', *timed(update, repeats)))
    rows.append(('grid occupancy() (per publish, not per frame)',
                 *timed(lambda step: grid.occupancy(), repeats)))
    return rows


def points_rows(repeats: int):
    model, camera_to_vehicle = camera_model(), mount()
    projector = GroundProjector(GroundPlane(0.0, 30.0))
    out = np.empty(LABELS + (3,), np.float32)
    projector.points(model, camera_to_vehicle, LABELS)
    lookup = timed(lambda step: projector.points(model, camera_to_vehicle, LABELS), repeats)
    copy = timed(lambda step: np.copyto(out, projector.points(model, camera_to_vehicle,
                                                              LABELS)), repeats)
    return [('ground points 360×480: cached lookup', *lookup),
            ('ground points 360×480: lookup + copy into a message buffer', *copy)]


def cold_rows():
    model, drivable = camera_model(), masks()[0]
    rows = []
    for name, make in [
            ('cell → pixel table (40 m grid, one camera)',
             lambda yaw: DrivableGrid(GridGeometry(40.0, 0.1), GroundPlane(0.0, 30.0),
                                      fusion='none').update(
                 [CameraView(model, mount(yaw), drivable)])),
            ('ground points 360×480 (rays + intersection)',
             lambda yaw: GroundProjector(GroundPlane(0.0, 30.0)).points(model, mount(yaw),
                                                                        LABELS))]:
        samples = []
        for yaw in (0.0, 1.0, 2.0):
            started = time.perf_counter()
            make(yaw)
            samples.append((time.perf_counter() - started) * 1e3)
        rows.append((name, statistics.median(samples), max(samples)))
    return rows


def machine() -> str:
    return (f'{cpu_description()}, {os.cpu_count()} CPUs visible, '
            f'Python {platform.python_version()}, NumPy {np.__version__}, '
            f'OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=300)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = grid_rows(args.repeats) + points_rows(args.repeats)
    cold = cold_rows()
    load_after = os.getloadavg()
    print(f'- date: {datetime.datetime.now().isoformat(timespec="minutes")}')
    print(f'- machine: {machine()}')
    print(f'- load average (1, 5, 15 min) before: {", ".join(f"{v:.2f}" for v in load_before)}'
          f'; after: {", ".join(f"{v:.2f}" for v in load_after)}')
    print(f'- command: python benchmarks/ground_bench.py --repeats {args.repeats}\n')
    print('| what | median ms | p90 ms |')
    print('|---|---:|---:|')
    for name, median, p90 in rows:
        print(f'| {name} | {median:.3f} | {p90:.3f} |')
    print('\n| one-off, on a cache miss (3 geometries) | median ms | max ms |')
    print('|---|---:|---:|')
    for name, median, worst in cold:
        print(f'| {name} | {median:.0f} | {worst:.0f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
