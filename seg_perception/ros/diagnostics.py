"""Per-camera counters for /diagnostics, and the rule that turns them into a level.

No rclpy here: the node copies :meth:`CameraStats.snapshot` and :func:`health`
into diagnostic_updater's status. Rates use a monotonic clock (wall time passes
even when sim time is paused); latencies are measured by the caller against the
node's clock (header stamp to publish), so they follow ``use_sim_time``.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from seg_perception.ros.upstream import StampGaps

OK, WARN, ERROR = 0, 1, 2
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR'}


class CameraStats:
    """Input/output events, drops by reason and recent latencies of one camera (thread-safe).

    Rates and latency percentiles cover the last ``window_s`` seconds only, so a
    problem clears from /diagnostics one window after its cause is gone. Frames
    lost upstream are estimated from gaps in the input stamps (see StampGaps).
    """

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = float(window_s)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        # Bounded: at most this many events per window are counted (>= 400 Hz at 5 s).
        self._inputs: collections.deque = collections.deque(maxlen=2048)
        self._outputs: collections.deque = collections.deque(maxlen=2048)
        # (time, value) pairs, so that percentiles can be taken over the window.
        self._latencies_ms: collections.deque = collections.deque(maxlen=2048)
        self._overhead_ms: collections.deque = collections.deque(maxlen=2048)
        self._ahead_ms: collections.deque = collections.deque(maxlen=2048)
        self._lost: collections.deque = collections.deque(maxlen=2048)
        self._gaps = StampGaps(max_gap_s=self.window_s)
        self.lost_upstream = 0
        self.received = 0
        self.published = 0
        self.dropped: Dict[str, int] = collections.Counter()

    def record_input(self, stamp_ns: int = 0) -> None:
        """A received frame with its header stamp (0: unstamped, no loss estimate)."""
        with self._lock:
            now = self._clock()
            self.received += 1
            self._inputs.append(now)
            lost = self._gaps.add(stamp_ns) if stamp_ns else 0
            if lost:
                self.lost_upstream += lost
                self._lost.append((now, lost))

    def record_output(self, latency_ms: Optional[float],
                      overhead_ms: Optional[float] = None) -> None:
        """A published result, ``latency_ms`` after its header stamp (None: unstamped).

        A negative latency is a stamp from the future (the camera's clock ahead of
        the node's): it is kept apart as a lead, not averaged into the latencies.
        """
        with self._lock:
            now = self._clock()
            self.published += 1
            self._outputs.append(now)
            if latency_ms is not None:
                if latency_ms < 0:
                    self._ahead_ms.append((now, -float(latency_ms)))
                else:
                    self._latencies_ms.append((now, float(latency_ms)))
            if overhead_ms is not None:
                self._overhead_ms.append((now, float(overhead_ms)))

    def record_drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def _span(self, now: float) -> float:
        """The part of the window since the start, in seconds."""
        return min(self.window_s, now - self._started)

    def _rate(self, events, now: float) -> float:
        span = self._span(now)
        if span <= 0:
            return 0.0
        return sum(1 for t in events if t >= now - self.window_s) / span

    def _recent(self, samples, now: float) -> np.ndarray:
        return np.asarray([v for t, v in samples if t >= now - self.window_s], dtype=float)

    def snapshot(self) -> dict:
        """Counters, rates (Hz), latency percentiles, the largest stamp lead (ms) and the
        share of frames lost upstream (%) in the window (None without samples)."""
        def percentile(values, q):
            return float(np.percentile(values, q)) if values.size else None

        with self._lock:
            now = self._clock()
            latencies = self._recent(self._latencies_ms, now)
            ahead = self._recent(self._ahead_ms, now)
            lost = float(self._recent(self._lost, now).sum())
            arrived = sum(1 for t in self._inputs if t >= now - self.window_s)
            span = self._span(now)
            return {
                'received': self.received,
                'published': self.published,
                'dropped': dict(self.dropped),
                'input_rate_hz': self._rate(self._inputs, now),
                'output_rate_hz': self._rate(self._outputs, now),
                'latency_p50_ms': percentile(latencies, 50),
                'latency_p95_ms': percentile(latencies, 95),
                'node_overhead_p50_ms': percentile(self._recent(self._overhead_ms, now), 50),
                'stamps_ahead_ms': float(ahead.max()) if ahead.size else None,
                'lost_upstream': self.lost_upstream,
                'lost_upstream_rate_hz': lost / span if span > 0 else 0.0,
                'lost_upstream_pct': 100.0 * lost / (lost + arrived) if lost + arrived else None,
            }


def stamps_ahead_text(lead_ms: float) -> str:
    """How far header stamps are ahead of the node clock, in words."""
    lead = f'{lead_ms / 1e3:.1f} s' if lead_ms >= 100 else f'{lead_ms:.0f} ms'
    return f'header stamps {lead} ahead of the node clock'


def health(snapshot: dict, min_rate_hz: float, latency_budget_ms: float) -> Tuple[int, str]:
    """(level, message) of one camera.

    ERROR: nothing published in the window although a minimum rate is set, or the
    median latency over budget. WARN: output rate below the minimum, the p95
    latency over budget, or header stamps from the future (latency cannot be
    judged then). Problems are listed together, worst level wins.
    """
    problems: List[Tuple[int, str]] = []
    out_rate, in_rate = snapshot['output_rate_hz'], snapshot['input_rate_hz']
    if min_rate_hz > 0:
        if out_rate == 0:
            problems.append((ERROR, 'no images received' if in_rate == 0
                             else f'nothing published (input {in_rate:.1f} Hz)'))
        elif out_rate < min_rate_hz:
            problems.append((WARN, f'output rate {out_rate:.1f} Hz below minimum '
                                   f'{min_rate_hz:g} Hz'))
    p50, p95 = snapshot['latency_p50_ms'], snapshot['latency_p95_ms']
    if p50 is not None and p50 > latency_budget_ms:
        problems.append((ERROR, f'median latency {p50:.0f} ms over budget '
                                f'{latency_budget_ms:g} ms'))
    elif p95 is not None and p95 > latency_budget_ms:
        problems.append((WARN, f'p95 latency {p95:.0f} ms over budget {latency_budget_ms:g} ms'))
    if snapshot['stamps_ahead_ms'] is not None:
        problems.append((WARN, stamps_ahead_text(snapshot['stamps_ahead_ms'])))
    if not problems:
        return OK, f'{out_rate:.1f} Hz'
    return max(level for level, _ in problems), '; '.join(text for _, text in problems)


def camera_health(problems: List[Tuple[int, str]], received: int) -> Tuple[int, str]:
    """(level, message) of one camera's images from CameraHealth.report(): the worst level,
    the problems listed together; OK once frames arrived and none persists."""
    if not problems:
        return OK, 'images look fine' if received else 'no images yet'
    return max(level for level, _ in problems), '; '.join(text for _, text in problems)


def backend_values(described: dict, model_path: str) -> Dict[str, str]:
    """Backend name, precision (and why), device and the model file that runs, from a
    pipeline's describe(), for the node's logs and its diagnostics."""
    # 'auto' may run another file than the model named (its INT8 form): say which.
    values = {'backend': str(described['name']), 'precision': str(described['precision']),
              'model': str(described.get('model') or model_path)}
    if described.get('precision_reason'):
        values['precision_reason'] = str(described['precision_reason'])
    if described['device']:
        values['device'] = str(described['device'])
    return values


def key_values(snapshot: dict, extra: Optional[Dict[str, str]] = None) -> List[Tuple[str, str]]:
    """(key, value) strings for a DiagnosticStatus, dropped frames listed per reason."""
    def fmt(value):
        return 'n/a' if value is None else f'{value:.1f}'

    pairs = [('input_rate_hz', fmt(snapshot['input_rate_hz'])),
             ('output_rate_hz', fmt(snapshot['output_rate_hz'])),
             ('received', str(snapshot['received'])),
             ('published', str(snapshot['published'])),
             ('lost_upstream', str(snapshot['lost_upstream'])),
             ('lost_upstream_rate_hz', fmt(snapshot['lost_upstream_rate_hz'])),
             ('lost_upstream_pct', fmt(snapshot['lost_upstream_pct'])),
             ('dropped', str(sum(snapshot['dropped'].values())))]
    pairs += [(f'dropped.{reason}', str(count))
              for reason, count in sorted(snapshot['dropped'].items())]
    pairs += [('latency_p50_ms', fmt(snapshot['latency_p50_ms'])),
              ('latency_p95_ms', fmt(snapshot['latency_p95_ms'])),
              ('node_overhead_p50_ms', fmt(snapshot['node_overhead_p50_ms'])),
              ('stamps_ahead_ms', fmt(snapshot['stamps_ahead_ms']))]
    pairs += sorted((extra or {}).items())
    return pairs
