"""Small bags for the bag-eval, report and demo tests, written with rosbags.

Frames are ``runtime_models.painted_frame`` pictures, so the ColourNet test
model labels them exactly (``runtime_models.expected_labels``).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

import runtime_models as rm

START_NS = 1_700_000_000 * 1_000_000_000
PERIOD_NS = 100_000_000


def typestore(ros1: bool = False):
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)


def header(store, stamp: int, frame_id: str = 'cam', seq: int = 0):
    types = store.types
    fields = dict(stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 10 ** 9,
                                                             nanosec=stamp % 10 ** 9),
                  frame_id=frame_id)
    if 'seq' in types['std_msgs/msg/Header'].__dataclass_fields__:
        fields['seq'] = seq
    return types['std_msgs/msg/Header'](**fields)


def image_msg(store, pixels: np.ndarray, stamp: int, encoding: str = 'rgb8',
              frame_id: str = 'cam'):
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return store.types['sensor_msgs/msg/Image'](
        header=header(store, stamp, frame_id), height=pixels.shape[0], width=pixels.shape[1],
        encoding=encoding, is_bigendian=0, step=pixels.shape[1] * channels,
        data=np.ascontiguousarray(pixels).reshape(-1))


def compressed_msg(store, rgb: np.ndarray, stamp: int, fmt: str = 'png', frame_id: str = 'cam'):
    ok, data = cv2.imencode('.' + fmt, rgb[:, :, ::-1])
    assert ok
    return store.types['sensor_msgs/msg/CompressedImage'](
        header=header(store, stamp, frame_id), format=fmt, data=data.reshape(-1))


def camera_info_msg(store, width: int, height: int, stamp: int):
    types = store.types
    info_type = types['sensor_msgs/msg/CameraInfo']
    matrices = dict(d=np.zeros(5), k=np.arange(9, dtype=np.float64), r=np.eye(3).reshape(-1),
                    p=np.arange(12, dtype=np.float64))
    if 'K' in info_type.__dataclass_fields__:         # ROS 1 spells them D, K, R, P
        matrices = {name.upper(): value for name, value in matrices.items()}
    return info_type(
        header=header(store, stamp), height=height, width=width, distortion_model='plumb_bob',
        binning_x=0, binning_y=0, **matrices,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                      width=0, do_rectify=False))


def frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A painted frame whose car box moves with ``index``."""
    x0 = 0.2 + 0.05 * (index % 8)
    return rm.painted_frame(height, width, [
        ('building', 0, 1, 0, 1), ('sky', 0, 0.3, 0, 1), ('road', 0.55, 1, 0, 1),
        ('grass', 0.55, 1, 0, 0.15), ('car', 0.6, 0.85, x0, x0 + 0.2)])


class Undeserializable:
    """Stands for a message in write_rosbag2: ``msg`` serialized, then cut to ``keep`` bytes."""

    def __init__(self, msg, keep: int = 40):
        self.msg, self.keep = msg, keep
        self.__msgtype__ = msg.__msgtype__


def write_rosbag2(path, messages, storage: str = 'mcap'):
    """Write [(topic, msg, log_ns)] as a rosbag2 folder; returns the folder."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    store = typestore()
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    connections = {}
    with Writer(Path(path), version=8, storage_plugin=plugin) as writer:
        for topic, msg, log_ns in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__,
                                                           typestore=store)
            if isinstance(msg, Undeserializable):
                data = store.serialize_cdr(msg.msg, msg.__msgtype__)[:msg.keep]
            else:
                data = store.serialize_cdr(msg, msg.__msgtype__)
            writer.write(connections[topic], log_ns, data)
    return Path(path)


def write_ros1(path, messages):
    """Write [(topic, msg, log_ns)] (ROS 1 typestore messages) as a ROS 1 bag file."""
    from rosbags.rosbag1 import Writer
    store = typestore(ros1=True)
    connections = {}
    with Writer(Path(path)) as writer:
        for topic, msg, log_ns in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__,
                                                           typestore=store)
            writer.write(connections[topic], log_ns, store.serialize_ros1(msg, msg.__msgtype__))
    return Path(path)


def two_camera_messages(count: int = 4, store=None, size=(48, 64)):
    """cam_front raw rgb8 and cam_rear PNG-compressed, interleaved at 10 Hz."""
    store = store or typestore()
    messages = []
    for index in range(count):
        stamp = START_NS + index * PERIOD_NS
        picture = frame(index, *size)
        messages.append(('/cam_front/image_raw', image_msg(store, picture, stamp), stamp))
        messages.append(('/cam_rear/image_raw/compressed',
                         compressed_msg(store, picture, stamp + 1000, frame_id='rear'),
                         stamp + 1000))
    return messages


def storage_file(bag: Path) -> Path:
    """The .mcap / .db3 file of a rosbag2 folder."""
    files = [p for p in Path(bag).iterdir() if p.suffix in ('.mcap', '.db3')]
    assert len(files) == 1, files
    return files[0]


def cut(path: Path, fraction: float) -> int:
    """Truncate ``path`` to ``fraction`` of its size (a recording cut short); new size."""
    size = int(os.path.getsize(path) * fraction)
    with open(path, 'r+b') as stream:
        stream.truncate(size)
    return size


def read_bag(path):
    """{topic: [(log_ns, message)]} of a bag, read with seg_perception.replay.bag_io."""
    from seg_perception.replay.bag_io import open_bag
    out = {}
    with open_bag(path, allow_salvage=False) as source:
        for topic, msgtype, log_ns, raw in source.messages(list(source.topics)):
            out.setdefault(topic, []).append((log_ns, source.deserialize(raw, msgtype)))
    return out


def model_path() -> str:
    """ColourNet exported with camera-resolution output: exact labels on painted frames."""
    return rm.exported('camera', texture=0.0)


def open_bag_for_test(path):
    """bag_io.open_bag without the salvage fallback (a test must see damage)."""
    from seg_perception.replay.bag_io import open_bag
    return open_bag(path, allow_salvage=False)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


# -- a calibrated camera over flat ground (the drivable grid) ----------------------------------

GROUND_SIZE = (240, 320)                        # H, W
GROUND_K = (200.0, 0.0, 159.5, 0.0, 200.0, 119.5, 0.0, 0.0, 1.0)
CAMERA_HEIGHT, CAMERA_PITCH = 1.5, np.radians(20.0)     # above base_footprint, looking down
ROAD = ((4.0, 12.0), (-2.0, 2.0))              # x and y range of the road in base_footprint
VEHICLE_IN_ODOM = (5.0, 3.0)                    # the vehicle stands still there, yaw 0
OPTICAL_FRAME = 'cam_front_optical'


def ground_points_by_hand(height: int = GROUND_SIZE[0], width: int = GROUND_SIZE[1]):
    """H×W×3: where each pixel centre's ray meets z = 0 in base_footprint (NaN where it
    does not), in closed form for the pinhole camera at CAMERA_HEIGHT pitched CAMERA_PITCH."""
    fx, _, cx, _, fy, cy = GROUND_K[:6]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x_opt, y_opt = (cols - cx) / fx, (rows - cy) / fy
    # optical (x right, y down, z ahead) -> camera_link (x ahead, y left, z up), then pitch.
    ahead, left, up = np.ones_like(x_opt), -x_opt, -y_opt
    c, s = np.cos(CAMERA_PITCH), np.sin(CAMERA_PITCH)
    dx, dz = c * ahead + s * up, -s * ahead + c * up
    with np.errstate(divide='ignore', invalid='ignore'):
        t = np.where(dz < 0, CAMERA_HEIGHT / -dz, np.nan)
    return np.stack([t * dx, t * left, np.where(np.isnan(t), np.nan, 0.0)], axis=2)


def road_frame() -> np.ndarray:
    """The camera's view: road where a pixel centre's ground point is in ROAD, grass on
    the rest of the ground, sky above the horizon (a trapezoid of road, drawn exactly)."""
    points = ground_points_by_hand()
    picture = np.empty(GROUND_SIZE + (3,), np.uint8)
    picture[:] = rm.COLOURS['sky']
    with np.errstate(invalid='ignore'):
        ground = ~np.isnan(points[:, :, 0])
        road = ground & (points[:, :, 0] >= ROAD[0][0]) & (points[:, :, 0] <= ROAD[0][1]) & \
            (np.abs(points[:, :, 1]) <= ROAD[1][1])
    picture[ground] = rm.COLOURS['grass']
    picture[road] = rm.COLOURS['road']
    return picture


def calibrated_camera_info_msg(store, stamp: int, k=GROUND_K):
    msg = camera_info_msg(store, GROUND_SIZE[1], GROUND_SIZE[0], stamp)
    msg.k = np.asarray(k, np.float64)
    msg.header.frame_id = OPTICAL_FRAME
    return msg


def transform_msg(store, parent: str, child: str, stamp: int, translation, rotation):
    types = store.types
    return types['geometry_msgs/msg/TransformStamped'](
        header=header(store, stamp, parent), child_frame_id=child,
        transform=types['geometry_msgs/msg/Transform'](
            translation=types['geometry_msgs/msg/Vector3'](*map(float, translation)),
            rotation=types['geometry_msgs/msg/Quaternion'](*map(float, rotation))))


def tf_msg(store, transforms):
    return store.types['tf2_msgs/msg/TFMessage'](transforms=list(transforms))


def mount_transforms(store, stamp: int):
    """base_footprint -> cam_front_link (height, pitch) -> cam_front_optical (ROS optical)."""
    half = CAMERA_PITCH / 2
    return [transform_msg(store, 'base_footprint', 'cam_front_link', stamp,
                          (0, 0, CAMERA_HEIGHT), (0, np.sin(half), 0, np.cos(half))),
            transform_msg(store, 'cam_front_link', OPTICAL_FRAME, stamp, (0, 0, 0),
                          (-0.5, 0.5, -0.5, 0.5))]


def ground_scene_messages(count: int = 3, camera_info: bool = True, tf: bool = True,
                          k=GROUND_K):
    """cam_front seeing ROAD from CAMERA_HEIGHT, with its CameraInfo, /tf_static (the
    mount) and /tf (odom -> base_footprint, standing still at VEHICLE_IN_ODOM)."""
    store = typestore()
    messages = []
    if tf:
        messages.append(('/tf_static', tf_msg(store, mount_transforms(store, START_NS)),
                         START_NS))
    picture = road_frame()
    for index in range(count):
        stamp = START_NS + index * PERIOD_NS
        if tf:
            odom = transform_msg(store, 'odom', 'base_footprint', stamp,
                                 VEHICLE_IN_ODOM + (0.0,), (0, 0, 0, 1))
            messages.append(('/tf', tf_msg(store, [odom]), stamp))
        if camera_info:
            messages.append(('/cam_front/camera_info',
                             calibrated_camera_info_msg(store, stamp, k), stamp))
        messages.append(('/cam_front/image_raw',
                         image_msg(store, picture, stamp, frame_id=OPTICAL_FRAME), stamp + 1))
    return messages


def labelled_bag(path, count: int, wrong=(), topic: str = '/cam/image_raw'):
    """A one-camera bag with a class label topic; the frames in ``wrong`` are labelled all
    'road' (so the confusion matrix is not a diagonal)."""
    store = typestore()
    messages = []
    for index in range(count):
        stamp = START_NS + index * PERIOD_NS
        picture = frame(index)
        truth = rm.expected_labels(picture)
        if index in wrong:
            truth = np.zeros_like(truth)
        messages += [('/cam/ground_truth/labels', image_msg(store, truth, stamp, 'mono8'), stamp),
                     (topic, image_msg(store, picture, stamp), stamp + 1)]
    return write_rosbag2(path, messages)
