"""The fused bird's-eye drivable grid: every camera's drivable mask in one OccupancyGrid.

The grid is square, ``size_m`` wide at ``resolution_m``, axis-aligned with the grid frame
(e.g. odom), and follows the vehicle: its origin moves by whole cells so that the vehicle
stays at the centre, and what it holds stays where it was on the ground. Values, as in
nav_msgs/OccupancyGrid: 0 = seen and drivable, 100 = seen ground that is not drivable,
-1 = unknown (nobody sees it, above the horizon, past range, ego vehicle, or not seen
for a while).

Each update, per camera: the cells of a vehicle-centred grid (same resolution) that the
camera sees are looked up in a precomputed cell → pixel table (lookup.py, one per camera
model, mount transform and label size), and each gives evidence: drivable or not, weighed
by the model's confidence when there is one. Ego pixels give none. The cameras' evidence
is summed, turned into the grid frame with the vehicle's pose (one nearest-neighbour
warp: the same resolution, so no cell is blended with its neighbours) and added to the
cells' log-odds of "not drivable", which decay towards unknown with a time constant
(``fusion='log_odds'``), or replaces them (``fusion='none'``).

The vehicle's pose in the grid frame is taken as planar (x, y, yaw): the ground plane is
the vehicle frame's z = plane.height, and cameras are mounted on the vehicle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.ground.cache import LruCache
from seg_perception.ground.camera import CameraModel
from seg_perception.ground.lookup import CellLookup, build_cell_lookup
from seg_perception.ground.projection import GroundGeometryError, GroundPlane
from seg_perception.ground.transforms import planar_pose, rigid_transform, transform_key

FUSION_MODES = ('log_odds', 'none')
UNKNOWN, FREE, BLOCKED = -1, 0, 100
_MAX_CELLS = 4096       # per side: 16 M cells, beyond any costmap a camera can fill


class GridInputError(InvalidValueError):
    """A camera view the grid cannot take: masks of different shapes, a wrong dtype."""


@dataclass(frozen=True)
class GridGeometry:
    """A square grid of ``size_m`` metres a side at ``resolution_m`` metres a cell."""

    size_m: float = 40.0
    resolution_m: float = 0.1

    def __post_init__(self):
        if not (math.isfinite(self.resolution_m) and self.resolution_m > 0):
            raise GroundGeometryError(f'grid resolution_m must be > 0, got {self.resolution_m}')
        if not (math.isfinite(self.size_m) and self.size_m >= self.resolution_m):
            raise GroundGeometryError(f'grid size_m must be at least one cell '
                                      f'({self.resolution_m} m), got {self.size_m}')
        if self.cells > _MAX_CELLS:
            raise GroundGeometryError(f'grid of {self.cells}×{self.cells} cells '
                                      f'({self.size_m} m at {self.resolution_m} m) is too '
                                      f'large; at most {_MAX_CELLS} a side')

    @property
    def cells(self) -> int:
        """Cells per side."""
        return max(1, int(round(self.size_m / self.resolution_m)))


@dataclass
class CameraView:
    """One camera's segmentation, for a grid update.

    ``camera_to_vehicle``: 4×4, maps the camera's optical frame into the vehicle frame
    (the ground frame, e.g. base_footprint). ``drivable``: H×W, non-zero = drivable (the
    pipeline's drivable_mask). ``confidence``: H×W uint8, 0..255, or None (full weight).
    ``ego``: H×W, non-zero = the ego vehicle, or None; pass the same array every update
    (its table is cached by identity: a changed mask must be a new array).
    """

    camera: CameraModel
    camera_to_vehicle: np.ndarray
    drivable: np.ndarray
    confidence: Optional[np.ndarray] = None
    ego: Optional[np.ndarray] = None


class DrivableGrid:
    """Fuses camera views into a vehicle-centred drivable OccupancyGrid in the grid frame."""

    def __init__(self, geometry: GridGeometry = GridGeometry(),
                 plane: GroundPlane = GroundPlane(), fusion: str = 'log_odds',
                 decay_s: float = 2.0, hit_probability: float = 0.7,
                 max_log_odds: float = 3.5, known_log_odds: float = 0.2, cache_size: int = 16):
        """``decay_s``: time constant of the log-odds' decay towards unknown.
        ``hit_probability``: how sure one full-confidence pixel makes a cell.
        ``max_log_odds``: clamp, so a cell that changes is followed within a few updates.
        ``known_log_odds``: |log-odds| below this is published as unknown."""
        if fusion not in FUSION_MODES:
            raise InvalidValueError(f'grid fusion must be one of {", ".join(FUSION_MODES)}; '
                                    f'unknown fusion {fusion!r}')
        if not (math.isfinite(decay_s) and decay_s > 0):
            raise InvalidValueError(f'grid decay_s must be > 0, got {decay_s}')
        if not 0.5 < hit_probability < 1:
            raise InvalidValueError(f'grid hit_probability must be in (0.5, 1), got '
                                    f'{hit_probability}')
        hit = math.log(hit_probability / (1 - hit_probability))
        if not 0 < known_log_odds <= hit <= max_log_odds:
            raise InvalidValueError('grid log-odds must satisfy 0 < known_log_odds <= '
                                    f'log-odds of hit_probability ({hit:.3f}) <= max_log_odds')
        self.geometry, self.plane, self.fusion = geometry, plane, fusion
        self.decay_s, self.max_log_odds = float(decay_s), float(max_log_odds)
        self.known_log_odds = float(known_log_odds)
        n = geometry.cells
        # The vehicle-frame grid covers the grid frame's whatever the heading.
        self._side = int(math.ceil(n * math.sqrt(2))) + 2
        self._log_odds = np.zeros((n, n), np.float32)
        self._evidence = np.zeros((self._side, self._side), np.float32)
        self._warped = np.zeros((n, n), np.float32)
        # drivable value -> evidence for "not drivable"; confidence -> weight
        self._hit_lut = np.full(256, hit, np.float32)
        self._hit_lut[1:] = -hit
        self._weight_lut = (np.arange(256) / 255.0).astype(np.float32)
        self._tables = LruCache(cache_size)
        self._ego_tables = LruCache(cache_size)
        self._corner: Optional[Tuple[int, int]] = None      # cell index of cell (0, 0)
        self.stamp: Optional[float] = None

    # -- what the grid says ----------------------------------------------------
    @property
    def resolution(self) -> float:
        return self.geometry.resolution_m

    @property
    def cells(self) -> int:
        return self.geometry.cells

    @property
    def origin(self) -> Tuple[float, float]:
        """(x, y) of the corner of cell (0, 0) in the grid frame (OccupancyGrid's origin)."""
        corner = self._corner or (-(self.cells // 2), -(self.cells // 2))
        return corner[0] * self.resolution, corner[1] * self.resolution

    def occupancy(self) -> np.ndarray:
        """cells × cells int8, row-major from the origin (rows along y): 0, 100 or -1."""
        values = np.full(self._log_odds.shape, UNKNOWN, np.int8)
        values[self._log_odds <= -self.known_log_odds] = FREE
        values[self._log_odds >= self.known_log_odds] = BLOCKED
        return values

    def clear(self) -> None:
        """Forget everything seen (the grid keeps following the vehicle)."""
        self._log_odds.fill(0)

    # -- updates ---------------------------------------------------------------
    def update(self, views: Sequence[CameraView], vehicle_pose=None,
               stamp: Optional[float] = None) -> None:
        """Add the views of one moment.

        ``vehicle_pose``: 4×4, maps the vehicle frame into the grid frame (tf2's
        ``lookup_transform(grid_frame, vehicle_frame)``); None: identity (the grid frame
        is the vehicle frame). ``stamp``: seconds, needed to decay with fusion='log_odds';
        a stamp earlier than the last one (a replay restarted) clears the grid.
        """
        pose = np.eye(4) if vehicle_pose is None else \
            rigid_transform(vehicle_pose, 'vehicle pose in the grid frame')
        if self.fusion == 'log_odds' and stamp is None:
            raise InvalidValueError('grid update: a stamp is needed to decay log-odds fusion')
        x, y, yaw = planar_pose(pose)
        self._evidence.fill(0)
        for index, view in enumerate(views):
            self._add_evidence(view, f'camera view {index}', first=index == 0)
        self._age(stamp)
        self._follow(x, y)
        self._warp(x, y, yaw)
        if self.fusion == 'none':
            np.copyto(self._log_odds, self._warped)
        else:
            self._log_odds += self._warped
            np.clip(self._log_odds, -self.max_log_odds, self.max_log_odds, out=self._log_odds)

    def _add_evidence(self, view: CameraView, what: str, first: bool) -> None:
        drivable = _image(view.drivable, f'{what}: drivable')
        size = drivable.shape
        table = self._table(view, size, what)
        values = np.take(drivable.reshape(-1), table.pixels)
        evidence = np.take(self._hit_lut, values)
        if view.confidence is not None:
            confidence = _confidence(view.confidence, f'{what}: confidence', size)
            evidence *= np.take(self._weight_lut, np.take(confidence.reshape(-1), table.pixels))
        # Each cell appears once per table, so the buffered += adds every camera's share;
        # the first camera's only has zeros to add to, and a plain store is half the work.
        if first:
            self._evidence.reshape(-1)[table.cells] = evidence
        else:
            self._evidence.reshape(-1)[table.cells] += evidence

    def _table(self, view: CameraView, size, what: str) -> CellLookup:
        key = (view.camera, transform_key(view.camera_to_vehicle), size)
        table = self._tables.get(key, lambda: build_cell_lookup(
            view.camera, rigid_transform(view.camera_to_vehicle,
                                         f'{what}: camera → vehicle transform'),
            size, self._side, self.resolution, self.plane))
        if view.ego is None:
            return table
        ego = view.ego
        # The entry keeps the ego array alive, so its id is not reused while cached.
        _, filtered = self._ego_tables.get(
            key + (id(ego),), lambda: (ego, table.without(_image(ego, f'{what}: ego', size))))
        return filtered

    def _age(self, stamp: Optional[float]) -> None:
        if self.fusion == 'log_odds' and self.stamp is not None:
            elapsed = stamp - self.stamp
            if elapsed < 0:
                self.clear()
            elif elapsed > 0:
                self._log_odds *= math.exp(-elapsed / self.decay_s)
        if stamp is not None:
            self.stamp = float(stamp)

    def _follow(self, x: float, y: float) -> None:
        """Move the grid by whole cells so the vehicle at (x, y) is in its centre cell."""
        half = self.cells // 2
        corner = (int(math.floor(x / self.resolution)) - half,
                  int(math.floor(y / self.resolution)) - half)
        if self._corner is not None and corner != self._corner:
            _shift(self._log_odds, corner[0] - self._corner[0], corner[1] - self._corner[1])
        self._corner = corner

    def _warp(self, x: float, y: float, yaw: float) -> None:
        """The vehicle-frame evidence into the grid frame's cells (nearest neighbour)."""
        cos, sin = math.cos(yaw), math.sin(yaw)
        # Grid cell (I, J) has its centre at ((corner + J + 0.5) · res, …); rotated into the
        # vehicle frame, that is vehicle-grid cell j = cos (J + a) + sin (I + b) + c - 0.5.
        a = self._corner[0] + 0.5 - x / self.resolution
        b = self._corner[1] + 0.5 - y / self.resolution
        c = self._side // 2 - 0.5
        matrix = np.array([[cos, sin, cos * a + sin * b + c],
                           [-sin, cos, -sin * a + cos * b + c]])
        cv2.warpAffine(self._evidence, matrix, (self.cells, self.cells), dst=self._warped,
                       flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _image(array, what: str, size=None) -> np.ndarray:
    """A 2-D mask as C-contiguous uint8 (non-zero = set), of ``size`` if given."""
    _check_shape(array, what, size)
    if array.dtype == bool:
        array = array.view(np.uint8)
    elif array.dtype != np.uint8:
        array = (array != 0).view(np.uint8)
    return np.ascontiguousarray(array)


def _confidence(array, what: str, size) -> np.ndarray:
    _check_shape(array, what, size)
    if array.dtype != np.uint8:
        raise GridInputError(f'{what}: expected uint8 (0..255), got {array.dtype}')
    return np.ascontiguousarray(array)


def _check_shape(array, what: str, size) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise GridInputError(f'{what}: expected an H×W numpy array, got '
                             f'{getattr(array, "shape", type(array).__name__)}')
    if size is not None and array.shape != tuple(size):
        raise GridInputError(f'{what}: shape {array.shape}, the drivable mask is {tuple(size)}')


def _shift(values: np.ndarray, dx: int, dy: int) -> None:
    """values[i, j] = values[i + dy, j + dx], in place; cells from outside become 0."""
    rows, cols = values.shape
    if abs(dx) >= cols or abs(dy) >= rows:
        values.fill(0)
        return
    source = values[max(dy, 0):rows + min(dy, 0), max(dx, 0):cols + min(dx, 0)].copy()
    values.fill(0)
    values[max(-dy, 0):rows + min(-dy, 0), max(-dx, 0):cols + min(-dx, 0)] = source
