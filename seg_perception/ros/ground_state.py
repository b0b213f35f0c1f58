"""The node's ground outputs without rclpy: per-camera geometry, ground points, grid fusion.

Per published result, :meth:`GroundOutputs.on_result` turns the camera's newest CameraInfo
into a CameraModel (once per distinct CameraInfo), asks the node for the camera optical
frame → ``ground.frame`` transform at the image's stamp, and returns the organised ground
points (ground/projection.py caches them per model, transform and size) and keeps the
camera's drivable mask for the grid. :meth:`GroundOutputs.fuse`, on the node's grid timer,
adds the masks that came since the last call to the DrivableGrid (ground/grid.py) with the
vehicle's pose in ``grid.frame``.

A camera without usable CameraInfo or transform only loses its ground outputs: a warning
(throttled per camera) says why, its labels keep flowing, and :meth:`status` tells
diagnostics which cameras feed the grid.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.ground.grid import CameraView, DrivableGrid
from seg_perception.ground.projection import GroundProjector
from seg_perception.ground.transforms import rigid_transform
from seg_perception.ros.ground_outputs import camera_info_key, camera_model
from seg_perception.ros.node_config import NodeConfig
from seg_perception.ros.worker import WarnThrottle

FEEDS_GRID = 'feeds the grid'
GROUND_POINTS_ONLY = 'ground points only (grid off)'


class TransformUnavailable(SegPerceptionError):
    """No usable transform between two frames: missing or stale (the message says which)."""


# (target frame, source frame, stamp in ns; 0 = newest) -> 4×4 matrix mapping source points
# into the target frame; raises TransformUnavailable.
Lookup = Callable[[str, str, int], np.ndarray]


def check_age(transform_ns: int, image_ns: int, tolerance_s: float, what: str) -> None:
    """TransformUnavailable if a transform stamped ``transform_ns`` is stale for an image
    stamped ``image_ns`` (0: a static transform, or an unstamped image: never stale)."""
    if not transform_ns or not image_ns:
        return
    age_s = (image_ns - transform_ns) / 1e9
    if abs(age_s) > tolerance_s:
        when = 'older' if age_s > 0 else 'newer'
        raise TransformUnavailable(f'stale transform {what}: the newest is {abs(age_s):.2f} s '
                                   f'{when} than the image (ground.transform_tolerance_s is '
                                   f'{tolerance_s:g})')


class GroundOutputs:
    """Ground points per camera and the fused drivable grid, fed with segmentation results."""

    def __init__(self, config: NodeConfig, lookup: Lookup, warn: Callable[[str], None],
                 throttle: Optional[WarnThrottle] = None):
        self.ground, self.grid_config = config.ground, config.grid
        self.lookup = lookup
        self.warn = warn
        self.throttle = throttle or WarnThrottle()
        self.egos = {c.name: c.ego for c in config.cameras}
        self.projector = GroundProjector(self.ground.plane)
        self.grid = DrivableGrid(self.grid_config.geometry, self.ground.plane,
                                 self.grid_config.fusion, self.grid_config.decay_s) \
            if self.grid_config.rate_hz > 0 else None
        self._status = {c.name: 'waiting for CameraInfo' if c.camera_info_topic
                        else 'no cameras.<name>.camera_info topic: no ground outputs'
                        for c in config.cameras}
        self._models: Dict[str, Tuple[tuple, object]] = {}
        self._pending: Dict[str, Tuple[CameraView, int]] = {}
        self._lock = threading.Lock()
        self._grid_frame: Optional[str] = None
        self._said_fallback = False

    def status(self, camera: str) -> str:
        """What the camera gives the ground outputs now, or why it gives nothing."""
        return self._status[camera]

    # -- per result (the node's worker thread) ------------------------------------------
    def on_result(self, camera: str, info, frame_id: str, stamp_ns: int, result,
                  want_points: bool) -> Optional[np.ndarray]:
        """Keep the result for the grid; the H×W×3 ground points when ``want_points``.

        ``info``: the camera's newest CameraInfo (None: none yet); ``frame_id``: the image
        header's frame (the camera's optical frame). None when the camera's geometry is
        unusable (warned, and said by :meth:`status`).
        """
        if info is None:
            self._status[camera] = 'waiting for CameraInfo'
            return None
        size = result.labels.shape[:2]
        try:
            model = self._model(camera, info)
            if not frame_id:
                raise TransformUnavailable('the image header has no frame_id (the camera '
                                           'optical frame)')
            transform = self.lookup(self.ground.frame, frame_id, stamp_ns)
            # Named now, not inside a grid update that other cameras share.
            self.ground.plane.camera_origin(
                rigid_transform(transform, f'transform {frame_id} → {self.ground.frame}'),
                f'transform {frame_id} → {self.ground.frame}')
            points = self.projector.points(model, transform, size) if want_points else None
        except (InvalidValueError, TransformUnavailable) as exc:
            self._problem(camera, str(exc))
            return None
        if self.grid is not None:
            ego = self.egos[camera]
            view = CameraView(model, transform, result.drivable_mask,
                              result.confidence,
                              ego.at(size) if ego is not None else None)
            with self._lock:
                self._pending[camera] = (view, stamp_ns)
        self._status[camera] = FEEDS_GRID if self.grid is not None else GROUND_POINTS_ONLY
        return points

    def _model(self, camera: str, info):
        """The camera model of ``info``, converted once per distinct CameraInfo."""
        key = camera_info_key(info)
        cached = self._models.get(camera)
        if cached is None or cached[0] != key:
            try:
                cached = (key, camera_model(key))
            except InvalidValueError as exc:
                cached = (key, exc)
            self._models[camera] = cached
        if isinstance(cached[1], Exception):
            raise cached[1]
        return cached[1]

    def _problem(self, camera: str, text: str) -> None:
        self._status[camera] = text
        allowed, held = self.throttle.allow((camera, 'ground'))
        if allowed:
            more = f' ({held} more since the last warning)' if held else ''
            self.warn(f'{camera}: no ground outputs for this frame, labels still published: '
                      f'{text}{more}')

    # -- grid (the node's timer) ----------------------------------------------------------
    def fuse(self) -> Optional[Tuple[str, int]]:
        """Add the results that came since the last call to the grid.

        Returns (grid frame, stamp in ns of the newest evidence) when the grid changed and
        is to be published, None when nothing new came (or there is no grid).
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        if self.grid is None or not pending:
            return None
        stamp_ns = max(stamp for _, stamp in pending.values())
        frame, pose = self._vehicle_pose(stamp_ns)
        if frame != self._grid_frame:
            if self._grid_frame is not None:
                self.grid.clear()           # the grid's cells meant places in the other frame
            self._grid_frame = frame
        try:
            self.grid.update([view for view, _ in pending.values()], pose, stamp_ns / 1e9)
        except InvalidValueError as exc:
            allowed, _ = self.throttle.allow(('grid', 'update'))
            if allowed:
                self.warn(f'drivable grid not updated: {exc}')
            return None
        return frame, stamp_ns

    def _vehicle_pose(self, stamp_ns: int) -> Tuple[str, Optional[np.ndarray]]:
        """(frame the grid is in, vehicle pose there); ground.frame when grid.frame has no
        transform (said once)."""
        target, vehicle = self.grid_config.frame, self.ground.frame
        if target == vehicle:
            return vehicle, None
        try:
            return target, self.lookup(target, vehicle, stamp_ns)
        except TransformUnavailable as exc:
            if not self._said_fallback:
                self._said_fallback = True
                self.warn(f'drivable grid: {exc}; the grid is in {vehicle} (follows the '
                          f'vehicle, no motion compensation) until {target} is available')
            return vehicle, None
