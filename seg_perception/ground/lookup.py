"""Cell → pixel lookup tables: which pixel of a camera sees each cell of a ground grid.

Inverse mapping: each cell centre, on the ground plane, is projected into the camera
(through its distortion), so every cell the camera sees gets a pixel, at any range, and
the grid has no holes. Per-pixel splatting leaves holes far out, where a pixel row spans
several cells. A table holds only the cells the camera sees: in front of it, inside its
field of view and the image, within the plane's range.

The grid here is square, ``side`` cells of ``resolution`` metres, centred on the origin of
the frame the camera transform points into, axes along that frame's x (columns) and y
(rows); cell (row i, column j) has its centre at ((j - side // 2 + 0.5) · resolution,
(i - side // 2 + 0.5) · resolution).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from seg_perception.ground.camera import CameraModel
from seg_perception.ground.projection import GroundPlane
from seg_perception.ground.transforms import invert


@dataclass(frozen=True)
class CellLookup:
    """The cells one camera sees and the pixel that sees each; flat indices.

    numpy's own index type (intp): fancy indexing with it skips a conversion per use.
    """

    cells: np.ndarray       # into the side × side grid
    pixels: np.ndarray      # into the H×W image

    def __len__(self) -> int:
        return len(self.cells)

    def without(self, excluded_pixels: np.ndarray) -> 'CellLookup':
        """The table without the cells whose pixel is set in ``excluded_pixels`` (H×W)."""
        keep = ~np.asarray(excluded_pixels, bool).reshape(-1)[self.pixels]
        return CellLookup(self.cells[keep], self.pixels[keep])


def cell_centres(side: int, resolution: float) -> Tuple[np.ndarray, np.ndarray]:
    """x (columns) and y (rows) of the cell centres, 1-D each."""
    centres = (np.arange(side) - side // 2 + 0.5) * resolution
    return centres, centres


def build_cell_lookup(camera: CameraModel, camera_to_frame: np.ndarray, size: Tuple[int, int],
                      side: int, resolution: float, plane: GroundPlane) -> CellLookup:
    """The table of one camera for labels of ``size`` (height, width) over the grid.

    ``camera_to_frame``: the checked 4×4 transform of the optical frame into the grid's
    frame; the ground is z = plane.height there.
    """
    camera = camera.scaled(*size)
    origin = plane.camera_origin(camera_to_frame, 'camera → ground transform')
    xs, ys = cell_centres(side, resolution)
    near_x = np.abs(xs - origin[0]) <= plane.max_range_m
    near_y = np.abs(ys - origin[1]) <= plane.max_range_m
    rows, cols = np.nonzero(near_y[:, np.newaxis] & near_x[np.newaxis, :])
    x, y = xs[cols], ys[rows]
    in_range = np.hypot(x - origin[0], y - origin[1]) <= plane.max_range_m
    rows, cols, x, y = rows[in_range], cols[in_range], x[in_range], y[in_range]

    to_camera = invert(camera_to_frame)
    ground = np.stack([x, y, np.full_like(x, plane.height)], axis=1)
    pixels = camera.project(ground @ to_camera[:3, :3].T + to_camera[:3, 3])
    with np.errstate(invalid='ignore'):
        u, v = np.rint(pixels[:, 0]), np.rint(pixels[:, 1])
        inside = (u >= 0) & (u < size[1]) & (v >= 0) & (v < size[0])
    cells = (rows[inside] * side + cols[inside]).astype(np.intp)
    flat = (v[inside] * size[1] + u[inside]).astype(np.intp)
    return CellLookup(cells, flat)
