"""Frames lost before the node sees them, without rclpy.

Large raw images cross DDS as many UDP datagrams that must all fit in the
receiving socket's buffer until the sample is complete. When a frame is larger
than the kernel's ceiling on that buffer (``net.core.rmem_max``) DDS drops most
frames without telling anyone: :class:`ReceiveBufferCheck` says so once per
camera. :class:`StampGaps` estimates how many frames went missing from the gaps
in the header stamps, for /diagnostics.
"""
from __future__ import annotations

import collections
from typing import Optional, Set

RMEM_MAX_PATH = '/proc/sys/net/core/rmem_max'
CAMERA_PROFILE = 'config/cyclonedds_cameras.xml'


def receive_buffer_ceiling(path: str = RMEM_MAX_PATH) -> Optional[int]:
    """The kernel's ceiling on socket receive buffers in bytes; None where unreadable
    (not Linux, a container hiding /proc/sys)."""
    try:
        with open(path) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _mib(size: int) -> str:
    return f'{size / 2 ** 20:.1f} MiB'


class ReceiveBufferCheck:
    """Warns once per camera about the first raw frame larger than the ceiling."""

    def __init__(self, ceiling: Optional[int]):
        self.ceiling = ceiling
        self._warned: Set[str] = set()

    def check(self, camera: str, frame_bytes: int) -> Optional[str]:
        """The warning to log for this frame, or None."""
        if self.ceiling is None or frame_bytes <= self.ceiling or camera in self._warned:
            return None
        self._warned.add(camera)
        return (f'{camera}: raw frames of {_mib(frame_bytes)} are larger than the kernel\'s '
                f'socket receive-buffer ceiling (net.core.rmem_max = {_mib(self.ceiling)}): '
                'DDS drops most such frames before the node sees them. Raise it (sudo sysctl '
                '-w net.core.rmem_max=2147483647) and, with CycloneDDS, add '
                f'{CAMERA_PROFILE} to CYCLONEDDS_URI in the camera driver and this node')


class StampGaps:
    """Frames missing between consecutive header stamps of one camera.

    The camera's period is the median of the recent intervals that are no longer
    than 1.5 times the shortest one: the intervals without a lost frame, even when
    most frames are lost. A gap of k periods then means k - 1 frames lost. Not
    counted: anything before ``min_intervals`` intervals are known, gaps longer
    than ``max_gap_s`` (an outage, which the rate check reports), and stamps that
    repeat or go backwards (a bag played in a loop, a driver restart).
    """

    def __init__(self, max_gap_s: float, history: int = 64, min_intervals: int = 8):
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.min_intervals = min_intervals
        self._intervals: collections.deque = collections.deque(maxlen=history)
        self._last_ns: Optional[int] = None

    def period_ns(self) -> Optional[float]:
        """The estimated frame period, or None while too few intervals are known."""
        if len(self._intervals) < self.min_intervals:
            return None
        shortest = min(self._intervals)
        regular = sorted(i for i in self._intervals if i <= 1.5 * shortest)
        return float(regular[len(regular) // 2])

    def add(self, stamp_ns: int) -> int:
        """Record the next stamp; return how many frames are missing before it."""
        last, self._last_ns = self._last_ns, stamp_ns
        if last is None or stamp_ns <= last:
            return 0
        interval = stamp_ns - last
        period = self.period_ns()
        self._intervals.append(interval)
        if period is None or interval > self.max_gap_ns:
            return 0
        return max(round(interval / period) - 1, 0)
