"""The ground plane in bag replay: the fused drivable grid and the ground points of a bag.

When a camera has a calibrated CameraInfo (focal lengths > 0) and the bag's tf
(/tf_static, /tf: read first, see :mod:`.tf_buffer`) connects its optical frame to
``base_footprint``, every frame of it updates one :class:`~seg_perception.ground.grid.
DrivableGrid` (all cameras fused, log-odds, as the node does; 40 m at 0.1 m) and the grid
is written after the update to ``/segmentation/drivable_grid`` (nav_msgs/OccupancyGrid,
frame ``odom`` when the tf has it, else ``base_footprint``; the frame's stamp). With
``ground_points``, ``<camera>/segmentation/ground_points`` (sensor_msgs/PointCloud2,
organised like the labels, x y z float32 in ``base_footprint``, NaN off the ground).
A camera that cannot be placed (no CameraInfo, an uncalibrated one, no transform) gets
no grid evidence and a note saying why; the other outputs are not affected.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.ground.camera import CameraModel
from seg_perception.ground.grid import BLOCKED, FREE, CameraView, DrivableGrid, GridGeometry
from seg_perception.ground.projection import GroundProjector
from seg_perception.ground.transforms import planar_pose
from seg_perception.replay.bag_io import BagError, output_topic, stamp_ns
from seg_perception.replay.tf_buffer import (TF_MESSAGE, TF_STATIC_TOPIC, TransformBuffer,
                                             TransformLookupError)

LOG = logging.getLogger(__name__)
GRID_TOPIC = '/segmentation/drivable_grid'
POINTS_KIND = 'ground_points'
GROUND_FRAME, ODOM_FRAME = 'base_footprint', 'odom'
GRID_GEOMETRY = GridGeometry(size_m=40.0, resolution_m=0.1)
# bird's-eye picture colours, RGB
PICTURE_COLOURS = {FREE: (40, 170, 60), BLOCKED: (200, 50, 40)}
UNKNOWN_COLOUR = (150, 150, 150)


def tf_topics(source) -> List[str]:
    """The bag's /tf_static and /tf topics holding TFMessages."""
    return [name for name, summary in source.topics.items()
            if summary.msgtype == TF_MESSAGE and name.strip('/') in ('tf', 'tf_static')]


def read_transforms(source, topics: List[str]) -> TransformBuffer:
    """Every transform of ``topics`` of the bag. A message that does not deserialize is
    left out (tf2 would never have received it); in a damaged bag, those before the damage
    are kept (the run itself reports the damage)."""
    buffer = TransformBuffer()
    if not topics:
        return buffer
    try:
        for topic, msgtype, _, raw in source.messages(topics):
            try:
                msg = source.deserialize(raw, msgtype)
            except BagError as exc:
                LOG.warning('%s: message skipped: %s', topic, exc)
                continue
            buffer.add_message(msg, static='/' + topic.strip('/') == TF_STATIC_TOPIC)
    except BagError as exc:
        LOG.warning('tf read up to the damage: %s', exc)
    return buffer


class GroundReplay:
    """The grid and ground points of one bag-eval run."""

    def __init__(self, transforms: TransformBuffer, tf_found: List[str], ground_points: bool):
        self.transforms, self.ground_points = transforms, ground_points
        self.tf_found = sorted('/' + t.strip('/') for t in tf_found)
        self.grid_frame = ODOM_FRAME if transforms.has_frame(ODOM_FRAME) else GROUND_FRAME
        self.grid = DrivableGrid(GRID_GEOMETRY)
        self.projector = GroundProjector()
        self.models: Dict[str, CameraModel] = {}
        self.notes: Dict[str, str] = {}         # camera name -> why it gives no grid
        self.used: Dict[str, int] = {}          # camera name -> frames in the grid
        self.grids_written = 0
        self.points_written = 0
        self.vehicle = (0.0, 0.0, 0.0)          # x, y, yaw in the grid frame

    def camera_info(self, camera, msg) -> None:
        """A CameraInfo of ``camera``: the model its next frames are placed with."""
        def field(name):        # ROS 1 CameraInfo spells them K, D
            return getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper())
        k = np.asarray(field('k'), np.float64)
        if not k.any():
            self._note(camera, f'{camera.info_topic} is uncalibrated (K all zero)')
            self.models.pop(camera.name, None)
            return
        try:
            self.models[camera.name] = CameraModel(
                int(msg.width), int(msg.height), tuple(k), tuple(field('d')),
                msg.distortion_model or 'plumb_bob')
        except InvalidValueError as exc:
            self._note(camera, f'{camera.info_topic}: {exc}')
            self.models.pop(camera.name, None)

    def frame(self, camera, header, result, ego: Optional[np.ndarray], out,
              log_time: int) -> bool:
        """Add one segmented frame to the grid and write the grid (and its ground points);
        False (and a note) when this camera cannot be placed."""
        model = self.models.get(camera.name)
        if model is None:
            if camera.info_topic is None:
                self._note(camera, f'no camera_info topic for {camera.topic}')
            elif camera.name not in self.notes:
                self._note(camera, f'no CameraInfo on {camera.info_topic} before this frame')
            return False
        stamp = stamp_ns(header)
        try:
            to_vehicle = self.transforms.lookup(GROUND_FRAME, header.frame_id, stamp)
            pose = None if self.grid_frame == GROUND_FRAME else \
                self.transforms.lookup(self.grid_frame, GROUND_FRAME, stamp)
            view = CameraView(model, to_vehicle, result.drivable_mask, result.confidence, ego)
            # Cameras' stamps interleave a little; one a hair older must not clear the grid.
            seconds = max(stamp / 1e9, self.grid.stamp or 0.0)
            self.grid.update([view], pose, seconds)
        except (TransformLookupError, InvalidValueError) as exc:
            self._note(camera, str(exc))
            return False
        self.notes.pop(camera.name, None)
        self.used[camera.name] = self.used.get(camera.name, 0) + 1
        self.vehicle = planar_pose(np.eye(4) if pose is None else pose)
        out.write(GRID_TOPIC, self._grid_message(out.typestore, header), log_time)
        self.grids_written += 1
        if self.ground_points:
            points = self.projector.points(model, to_vehicle, result.drivable_mask.shape)
            out.write(output_topic(camera.namespace, POINTS_KIND),
                      points_message(out.typestore, header, points), log_time)
            self.points_written += 1
        return True

    def _note(self, camera, note: str) -> None:
        if self.notes.get(camera.name) != note:
            LOG.warning('%s: no drivable grid from this camera: %s', camera.name, note)
        self.notes[camera.name] = note

    def _grid_message(self, typestore, header):
        types = typestore.types
        stamp = types['builtin_interfaces/msg/Time'](sec=int(header.stamp.sec),
                                                     nanosec=int(header.stamp.nanosec))
        geometry = types['geometry_msgs/msg/Pose'](
            position=types['geometry_msgs/msg/Point'](x=self.grid.origin[0],
                                                      y=self.grid.origin[1], z=0.0),
            orientation=types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
        info = types['nav_msgs/msg/MapMetaData'](
            map_load_time=stamp, resolution=self.grid.resolution, width=self.grid.cells,
            height=self.grid.cells, origin=geometry)
        return types['nav_msgs/msg/OccupancyGrid'](
            header=types['std_msgs/msg/Header'](stamp=stamp, frame_id=self.grid_frame),
            info=info, data=self.grid.occupancy().reshape(-1))

    # -- the report --------------------------------------------------------------------
    def picture(self) -> np.ndarray:
        """The grid as an RGB bird's-eye picture, one pixel a cell: the grid frame's x up,
        y left; free, occupied and unknown in three colours; the vehicle as an arrow."""
        occupancy = self.grid.occupancy()
        picture = np.empty(occupancy.shape + (3,), np.uint8)
        picture[:] = UNKNOWN_COLOUR
        for value, colour in PICTURE_COLOURS.items():
            picture[occupancy == value] = colour
        picture = np.ascontiguousarray(picture.transpose(1, 0, 2)[::-1, ::-1])
        x, y, yaw = self.vehicle
        origin, cells = self.grid.origin, self.grid.cells
        column = cells - 1 - (y - origin[1]) / self.grid.resolution
        row = cells - 1 - (x - origin[0]) / self.grid.resolution
        length = max(4.0, cells / 25.0)
        tip = (column - length * np.sin(yaw), row - length * np.cos(yaw))
        cv2.arrowedLine(picture, (int(round(column)), int(round(row))),
                        (int(round(tip[0])), int(round(tip[1]))), (255, 255, 255),
                        max(1, cells // 200), tipLength=0.5)
        return picture

    def summary(self, cameras) -> Dict:
        """metrics.json's ``ground``: what was written, and why a camera gave no grid."""
        reason = None
        if not self.grids_written:
            reason = self.reason(cameras)
        return {
            'grid_topic': GRID_TOPIC if self.grids_written else None,
            'grid_frame': self.grid_frame, 'grid_size_m': GRID_GEOMETRY.size_m,
            'grid_resolution_m': GRID_GEOMETRY.resolution_m,
            'grids_written': self.grids_written, 'ground_points_written': self.points_written,
            'tf_topics': self.tf_found,
            'cameras': {c.name: {'frames_in_grid': self.used.get(c.name, 0),
                                 'note': self.notes.get(c.name)} for c in cameras},
            'no_grid_reason': reason,
        }

    def reason(self, cameras) -> str:
        """One line: why no grid was written."""
        notes = [f'{c.name}: {self.notes[c.name]}' for c in cameras if c.name in self.notes]
        if not self.tf_found:       # the lookups' own notes only repeat it
            notes = ['the bag has no /tf_static or /tf'] + [
                note for note in notes if 'no transform from' not in note]
        return '; '.join(notes) or 'no frame was segmented'


def no_ground_summary(reason: str) -> Dict:
    """metrics.json's ``ground`` when no grid was attempted."""
    return {'grid_topic': None, 'grids_written': 0, 'ground_points_written': 0,
            'no_grid_reason': reason}


def points_message(typestore, header, points: np.ndarray):
    """An organised sensor_msgs/PointCloud2 of H×W×3 float32 points (x, y, z), in the
    ground frame, with ``header``'s stamp."""
    types = typestore.types
    field_type = types['sensor_msgs/msg/PointField']
    fields = [field_type(name=name, offset=4 * index, datatype=field_type.FLOAT32, count=1)
              for index, name in enumerate('xyz')]
    height, width = points.shape[:2]
    stamp = types['builtin_interfaces/msg/Time'](sec=int(header.stamp.sec),
                                                 nanosec=int(header.stamp.nanosec))
    data = np.ascontiguousarray(points, '<f4').reshape(-1).view(np.uint8)
    return types['sensor_msgs/msg/PointCloud2'](
        header=types['std_msgs/msg/Header'](stamp=stamp, frame_id=GROUND_FRAME),
        height=height, width=width, fields=fields, is_bigendian=False, point_step=12,
        row_step=12 * width, data=data, is_dense=False)
