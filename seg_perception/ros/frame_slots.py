"""Where received frames wait: the newest-frame slot of each camera, and the one-batch
hand-over between the worker's decode and inference stages (no rclpy, no threads of its own).

Subscription callbacks only :meth:`FrameSlots.put` the message (replacing an unprocessed
older one: a slot, not a queue); the worker (worker.py) takes what the slots hold.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence


@dataclass
class Frame:
    """One received message waiting for inference."""

    camera: str
    msg: Any
    stamp_ns: int            # header stamp; 0 = the driver did not stamp it
    arrived: float           # time.perf_counter() when the callback ran


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) in nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class FrameSlots:
    """The newest unprocessed frame of each camera.

    ``max_batch`` (0 = no limit) bounds how many cameras one take() serves: the cameras
    served longest ago come first, so a limit turns into round-robin and no camera
    starves; the others keep their (newest) frame for the next take.
    """

    def __init__(self, cameras: Sequence[str], max_batch: int = 0):
        self._slots: Dict[str, Optional[Frame]] = {name: None for name in cameras}
        self._served: Dict[str, int] = {name: 0 for name in cameras}    # take() count
        self._takes = 0
        self.max_batch = int(max_batch)
        self._ready = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> Optional[Frame]:
        """Store ``frame``; return the older frame it replaced (to be counted as dropped)."""
        with self._ready:
            replaced = self._slots[frame.camera]
            self._slots[frame.camera] = frame
            self._ready.notify()
        return replaced

    def take(self, timeout: Optional[float] = None) -> List[Frame]:
        """Remove and return the waiting frames (up to max_batch), those of the cameras
        served longest ago first, then the longest-waiting; wait up to ``timeout`` s for one."""
        with self._ready:
            self._ready.wait_for(
                lambda: self._closed or any(f is not None for f in self._slots.values()),
                timeout)
            frames = sorted((f for f in self._slots.values() if f is not None),
                            key=lambda f: (self._served[f.camera], f.arrived))
            if self.max_batch:
                frames = frames[:self.max_batch]
            self._takes += 1
            for frame in frames:
                self._slots[frame.camera] = None
                self._served[frame.camera] = self._takes
        # A backend with a batch limit runs the first frames first: those waited longest.
        return frames

    def close(self) -> None:
        """Wake up a waiting take() for good (shutdown)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class Handover:
    """At most one decoded batch on its way from the decode stage to the inference stage."""

    def __init__(self):
        self._batch: Optional[list] = None
        self._changed = threading.Condition()
        self._closed = False

    def wait_empty(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` s until no batch waits; whether none does (False: closed)."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._batch is None, timeout)
            return self._batch is None and not self._closed

    def put(self, batch: list) -> None:
        """Hand ``batch`` over; the decode stage calls it only after wait_empty()."""
        with self._changed:
            if self._batch is not None:
                raise RuntimeError('a decoded batch is already waiting')
            self._batch = batch
            self._changed.notify_all()

    def take(self, timeout: Optional[float] = None) -> Optional[list]:
        """Remove and return the waiting batch; wait up to ``timeout`` s for one."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._batch is not None, timeout)
            batch, self._batch = self._batch, None
            self._changed.notify_all()
        return batch

    @property
    def waiting(self) -> int:
        """How many decoded batches wait (0 or 1)."""
        with self._changed:
            return int(self._batch is not None)

    def close(self) -> None:
        """Wake both stages for good (shutdown)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
