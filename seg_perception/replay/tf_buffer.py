"""A small ROS-free transform buffer for the tf messages of a bag (tf2_msgs/TFMessage).

The node uses tf2_ros; bag-eval has no ROS graph, so it reads every /tf_static and /tf
message of the bag first and looks transforms up here. Frames form a tree (each child has
one parent); a lookup chains the edges between two frames through their common ancestor.

Time: a static edge holds at every stamp. A timed edge is interpolated between its two
samples around the stamp (translation linearly, rotation by quaternion slerp), as tf2
does; before its first sample or after its last, the nearest sample is used (tf2 would
refuse to extrapolate: a bag's tf often starts a little after its first frame).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.ground.transforms import invert

TF_TOPIC, TF_STATIC_TOPIC = '/tf', '/tf_static'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'


class TransformLookupError(InvalidValueError):
    """Two frames that the buffer does not connect."""


@dataclass
class _Edge:
    """parent ← child samples: translation (x, y, z) and rotation quaternion (x, y, z, w)."""

    parent: str
    static: bool = False
    stamps: List[int] = field(default_factory=list)
    samples: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, stamp_ns: int, translation: np.ndarray, rotation: np.ndarray) -> None:
        if self.static:         # the latest static transform replaces the earlier one
            self.stamps, self.samples = [0], [(translation, rotation)]
            return
        index = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(index, stamp_ns)
        self.samples.insert(index, (translation, rotation))

    def at(self, stamp_ns: int) -> np.ndarray:
        if len(self.samples) == 1:
            return _matrix(*self.samples[0])
        index = bisect.bisect_left(self.stamps, stamp_ns)
        if index == 0:
            return _matrix(*self.samples[0])
        if index == len(self.stamps):
            return _matrix(*self.samples[-1])
        t0, t1 = self.stamps[index - 1], self.stamps[index]
        (p0, q0), (p1, q1) = self.samples[index - 1], self.samples[index]
        fraction = (stamp_ns - t0) / (t1 - t0) if t1 > t0 else 1.0
        return _matrix(p0 + (p1 - p0) * fraction, _slerp(q0, q1, fraction))


class TransformBuffer:
    """Transforms of a bag: ``add_message`` each TFMessage, then ``lookup``."""

    def __init__(self):
        self._edges: Dict[str, _Edge] = {}      # child frame -> its edge to the parent

    @property
    def frames(self) -> List[str]:
        """Every frame named by a transform, sorted."""
        names = set(self._edges) | {edge.parent for edge in self._edges.values()}
        return sorted(names)

    def has_frame(self, frame: str) -> bool:
        return _frame(frame) in self.frames

    def add_message(self, msg, static: bool) -> None:
        """Every geometry_msgs/TransformStamped of a tf2_msgs/TFMessage."""
        for stamped in msg.transforms:
            stamp = int(stamped.header.stamp.sec) * 1_000_000_000 + \
                int(stamped.header.stamp.nanosec)
            t, r = stamped.transform.translation, stamped.transform.rotation
            self.add(stamped.header.frame_id, stamped.child_frame_id, stamp,
                     (t.x, t.y, t.z), (r.x, r.y, r.z, r.w), static)

    def add(self, parent: str, child: str, stamp_ns: int, translation: Sequence[float],
            rotation: Sequence[float], static: bool = False) -> None:
        """One transform: points of ``child`` into ``parent``; rotation as x, y, z, w.
        An unusable one (NaN, a zero quaternion) is left out, as tf2 does."""
        parent, child = _frame(parent), _frame(child)
        translation = np.asarray(translation, np.float64)
        rotation = np.asarray(rotation, np.float64)
        norm = np.linalg.norm(rotation)
        if not (np.isfinite(translation).all() and np.isfinite(rotation).all() and norm > 0):
            return
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = self._edges[child] = _Edge(parent, static)
        edge.add(int(stamp_ns), translation, rotation / norm)

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """4×4 mapping points of ``source`` into ``target`` at ``stamp_ns`` (tf2's
        ``lookup_transform(target, source, stamp)``); TransformLookupError if unconnected."""
        target, source = _frame(target), _frame(source)
        up_source, up_target = self._path_to_root(source), self._path_to_root(target)
        common = next((frame for frame in up_source if frame in set(up_target)), None)
        if common is None:
            known = ', '.join(self.frames) or 'none'
            raise TransformLookupError(f'no transform from {source!r} to {target!r} in the '
                                       f"bag's tf (frames: {known})")
        source_to_common = self._chain(up_source[:up_source.index(common)], stamp_ns)
        target_to_common = self._chain(up_target[:up_target.index(common)], stamp_ns)
        return invert(target_to_common) @ source_to_common

    def _path_to_root(self, frame: str) -> List[str]:
        path = [frame]
        while path[-1] in self._edges and len(path) <= len(self._edges):
            path.append(self._edges[path[-1]].parent)
        return path

    def _chain(self, frames: List[str], stamp_ns: int) -> np.ndarray:
        """frames[0] into the parent of frames[-1]."""
        transform = np.eye(4)
        for frame in frames:
            transform = self._edges[frame].at(stamp_ns) @ transform
        return transform


def _frame(name: str) -> str:
    return str(name).lstrip('/')        # tf2 ignores a leading slash


def _matrix(translation: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    x, y, z, w = quaternion
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    matrix[:3, 3] = translation
    return matrix


def _slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0:                 # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:            # nearly equal: linear is exact enough and stable
        blended = q0 + (q1 - q0) * fraction
        return blended / np.linalg.norm(blended)
    angle = math.acos(dot)
    return (math.sin((1 - fraction) * angle) * q0 + math.sin(fraction * angle) * q1) / \
        math.sin(angle)
