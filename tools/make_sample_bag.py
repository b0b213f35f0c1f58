#!/usr/bin/env python3
"""Build the sample bag shipped in seg_perception/assets/sample_bag/ (used by the demo).

    python3 tools/make_sample_bag.py [--samples /work/shared/data/samples]
                                     [--output seg_perception/assets/sample_bag]

From the MIT-licensed road frames in the samples folder (see its README.md,
copied to seg_perception/assets/samples_LICENSES/), writes a rosbag2 in MCAP
storage (zstd-compressed chunks, message types of ROS 2 Humble) holding two
cameras on one 10 Hz timeline:

- ``/camera/front/image_raw/compressed``: the 12 consecutive Udacity frames
  (udacity_sequence, 960x540), JPEG bytes as they are, stamped 100 ms apart.
- ``/camera/dash/image_raw/compressed``: the 11 comma10k frames (1164x874; 11
  different drives, so the "video" jumps), re-encoded from PNG to JPEG quality
  90 to keep the bag small, stamped 100 ms apart, 50 ms after the front camera.
- ``/camera/dash/ground_truth/drivable_mask``: sensor_msgs/Image mono8 per dash
  frame, same header: 255 = drivable (comma10k road or lane markings), 0 = not
  drivable (undrivable, movable), 128 = ignored (the ego car's own hood).
- ``/camera/front/camera_info``, ``/camera/dash/camera_info``: size only; K, D,
  P are zero because the cameras are not calibrated (what CameraInfo specifies
  for an uncalibrated camera). They are there because real bags have them.

Header stamps and log times start at 2023-11-14 22:13:20 UTC (1700000000 s).
The output folder must not exist yet (use --overwrite to replace it).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys

import cv2
import numpy as np

START_NS = 1_700_000_000 * 1_000_000_000
PERIOD_NS = 100_000_000
DASH_OFFSET_NS = 50_000_000
JPEG_QUALITY = 90
# comma10k mask colours (RGB) -> drivable-mask value
MASK_VALUES = {(64, 32, 32): 255, (255, 0, 0): 255, (128, 128, 96): 0, (0, 255, 102): 0,
               (204, 0, 255): 128}
FRONT, DASH = 'camera/front', 'camera/dash'


def drivable_mask(mask_path: str) -> np.ndarray:
    """The comma10k colour mask as the 0 / 255 / 128 drivable mask described above."""
    bgr = cv2.imread(mask_path, cv2.IMREAD_COLOR)      # drops the (all-255) alpha channel
    if bgr is None:
        raise SystemExit(f'cannot read mask {mask_path}')
    rgb = bgr[:, :, ::-1].astype(np.int32)
    codes = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    out = np.full(codes.shape, 1, np.uint8)             # 1: not assigned yet
    for (r, g, b), value in MASK_VALUES.items():
        out[codes == ((r << 16) | (g << 8) | b)] = value
    if (out == 1).any():
        raise SystemExit(f'{mask_path}: {int((out == 1).sum())} pixels of colours that are '
                         'not comma10k classes')
    return out


def _header(types, stamp: int, frame_id: str):
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 1_000_000_000,
                                                   nanosec=stamp % 1_000_000_000),
        frame_id=frame_id)


def _camera_info(types, header, width: int, height: int):
    return types['sensor_msgs/msg/CameraInfo'](
        header=header, height=height, width=width, distortion_model='',
        d=np.zeros(0, np.float64), k=np.zeros(9, np.float64), r=np.eye(3).reshape(-1),
        p=np.zeros(12, np.float64), binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                      width=0, do_rectify=False))


def frames(samples: str):
    """(camera, stamp, jpeg bytes, (w, h), mask or None) in log order."""
    out = []
    front = sorted(glob.glob(os.path.join(samples, 'udacity_sequence', '*.jpg')))
    for index, path in enumerate(front):
        with open(path, 'rb') as stream:
            data = stream.read()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        out.append((FRONT, START_NS + index * PERIOD_NS, data, (width, height), None))
    dash = sorted(glob.glob(os.path.join(samples, 'comma10k', '*.png')))
    for index, path in enumerate(dash):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SystemExit(f'cannot encode {path}')
        mask = drivable_mask(os.path.join(os.path.dirname(path), 'masks', os.path.basename(path)))
        if mask.shape != image.shape[:2]:
            raise SystemExit(f'{path}: mask {mask.shape} and image {image.shape} differ')
        stamp = START_NS + DASH_OFFSET_NS + index * PERIOD_NS
        out.append((DASH, stamp, data.tobytes(), (image.shape[1], image.shape[0]), mask))
    if len(front) != 12 or len(dash) != 11:
        raise SystemExit(f'expected 12 udacity_sequence and 11 comma10k frames in {samples}, '
                         f'found {len(front)} and {len(dash)}')
    return sorted(out, key=lambda item: item[1])


def write_bag(samples: str, output: str) -> None:
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    writer = Writer(output, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.set_custom_data('seg_perception.sample_bag',
                           'MIT-licensed frames of Udacity and comma.ai; see '
                           'seg_perception/assets/samples_LICENSES/README.md')
    writer.open()
    connections = {}

    def write(topic, msg, stamp):
        msgtype = msg.__msgtype__
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
        writer.write(connections[topic], stamp, typestore.serialize_cdr(msg, msgtype))

    for camera, stamp, data, (width, height), mask in frames(samples):
        header = _header(types, stamp, camera.replace('/', '_') + '_optical_frame')
        write(f'/{camera}/image_raw/compressed', types['sensor_msgs/msg/CompressedImage'](
            header=header, format='jpeg', data=np.frombuffer(data, np.uint8)), stamp)
        write(f'/{camera}/camera_info', _camera_info(types, header, width, height), stamp)
        if mask is not None:
            write(f'/{camera}/ground_truth/drivable_mask', types['sensor_msgs/msg/Image'](
                header=header, height=mask.shape[0], width=mask.shape[1], encoding='mono8',
                is_bigendian=0, step=mask.shape[1], data=mask.reshape(-1)), stamp)
    writer.close()


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--samples', default='/work/shared/data/samples')
    parser.add_argument('--output', default=os.path.join(here, '..', 'seg_perception', 'assets',
                                                         'sample_bag'))
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    output = os.path.normpath(args.output)
    if os.path.exists(output):
        if not args.overwrite:
            print(f'{output} exists; pass --overwrite to replace it', file=sys.stderr)
            return 2
        shutil.rmtree(output)
    write_bag(args.samples, output)
    size = sum(os.path.getsize(os.path.join(output, f)) for f in os.listdir(output))
    print(f'wrote {output} ({size / 1e6:.2f} MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
