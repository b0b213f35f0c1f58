"""The arithmetic and the report of node_bench.py's multi-camera mode (no ROS, no timing).

node_bench.py collects, per camera, the header stamps the publisher sent and the
(stamp, arrival) of every output received; this module turns them into rates, drops,
latency percentiles, the fairness between cameras and the markdown of benchmarks/NODE.md.
"""
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

SECTION_BEGIN = '<!-- node_bench --cameras: begin (rewritten by the benchmark) -->'
SECTION_END = '<!-- node_bench --cameras: end -->'
# Issue #23's targets for six 1080p JPEG cameras at 10 Hz each.
TARGET_RATIO = 1.5          # total output frames/s over `seg-perception bench` fp32 frames/s
TARGET_P95_MS = 250.0
TARGET_FAIRNESS = 0.8       # slowest camera's rate over the fastest's
TARGET_DECODE_MS = 4.0


def camera_runs(items: Sequence[str], encodings: Sequence[str]) -> List[Tuple[str, int]]:
    """(encoding, count) pairs from --cameras items: 'jpeg=1,2,4,6' or '1,6' (each encoding)."""
    runs = []
    for item in items:
        named, _, counts = item.rpartition('=')
        for encoding in [named] if named else encodings:
            runs += [(encoding, int(count)) for count in counts.split(',')]
    return runs


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of ``values`` (NaN when there are none)."""
    return float(np.percentile(values, q)) if len(values) else float('nan')


def fairness(rates: Sequence[float]) -> float:
    """Slowest over fastest camera rate: 1.0 is fair, 0.8 is 'within 20 %'."""
    if not rates or max(rates) <= 0:
        return float('nan')
    return min(rates) / max(rates)


def window(sent: Dict[str, Sequence[int]], warmup_s: float,
           duration_s: float) -> Tuple[int, int]:
    """The measured stamps [start, end) in ns: ``warmup_s`` after the first frame sent."""
    first = min(min(stamps) for stamps in sent.values() if stamps)
    start = first + int(warmup_s * 1e9)
    return start, start + int(duration_s * 1e9)


def camera_summary(sent: Sequence[int], outputs: Sequence[Tuple[int, int]],
                   span: Tuple[int, int]) -> dict:
    """One camera's figures for the frames stamped inside ``span``.

    ``sent``: stamps published (ns); ``outputs``: (stamp, arrival) of each result
    received (ns). A frame is dropped when no result with its stamp arrived.
    """
    start, end = span
    inside = {s for s in sent if start <= s < end}
    latencies = [(arrival - stamp) / 1e6 for stamp, arrival in outputs if stamp in inside]
    published = len({stamp for stamp, _ in outputs if stamp in inside})
    span_s = (end - start) / 1e9
    return {'seconds': span_s, 'sent': len(inside), 'published': published,
            'dropped': len(inside) - published, 'fps': published / span_s,
            'latency_p50_ms': percentile(latencies, 50),
            'latency_p95_ms': percentile(latencies, 95)}


def seconds(cameras: Dict[str, dict]) -> float:
    """The measured window's length (every camera's summary has the same)."""
    return next(iter(cameras.values()))['seconds']


def run_summary(cameras: Dict[str, dict], all_latencies_ms: Sequence[float]) -> dict:
    """Totals of one run from its per-camera summaries."""
    rates = [c['fps'] for c in cameras.values()]
    sent = sum(c['sent'] for c in cameras.values())
    dropped = sum(c['dropped'] for c in cameras.values())
    return {'cameras': len(cameras), 'total_fps': sum(rates),
            'per_camera_fps': rates, 'fairness': fairness(rates),
            'drop_rate': dropped / sent if sent else float('nan'),
            'dropped': [c['dropped'] for c in cameras.values()],
            'sent_fps': sent / len(cameras) / seconds(cameras),
            'latency_p50_ms': percentile(all_latencies_ms, 50),
            'latency_p95_ms': percentile(all_latencies_ms, 95)}


def _num(value: float, digits: int = 1) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{value:.{digits}f}'


def results_table(rows: List[dict]) -> str:
    """Markdown: one row per run (encoding, cameras)."""
    lines = ['| input | cameras × Hz | sent per camera /s | total frames/s | per camera frames/s '
             '| slowest / fastest | dropped per camera | latency p50 / p95 ms | node CPU (cores) '
             '| node RSS MB | publisher CPU | decode ms |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        per_camera = ', '.join(_num(v) for v in r['per_camera_fps'])
        dropped = ', '.join(str(d) for d in r['dropped'])
        lines.append(
            f"| {r['encoding']} | {r['cameras']} × {r['rate']:g} | {_num(r['sent_fps'])} "
            f"| {_num(r['total_fps'])} "
            f"| {per_camera} | {_num(r['fairness'], 2)} | {dropped} "
            f"({_num(100 * r['drop_rate'], 0)} %) "
            f"| {_num(r['latency_p50_ms'], 0)} / {_num(r['latency_p95_ms'], 0)} "
            f"| {_num(r['node_cpu'], 2)} | {_num(r['node_rss_mb'], 0)} "
            f"| {_num(r['publisher_cpu'], 2)} | {_num(r['decode_ms'], 1)} |")
    return '\n'.join(lines)


def target_lines(rows: List[dict], bench_fps: float) -> List[str]:
    """Issue #23's targets, judged on the six-camera JPEG run, one line each."""
    six = next((r for r in rows if r['encoding'] == 'jpeg' and r['cameras'] == 6), None)
    if six is None:
        return ['- targets: no six-camera JPEG run, nothing to judge']
    ratio = six['total_fps'] / bench_fps if bench_fps > 0 else float('nan')

    def verdict(ok: bool) -> str:
        return 'met' if ok else 'MISSED'
    return [
        f"- total output {_num(six['total_fps'])} frames/s = {_num(ratio, 2)}× the "
        f"{_num(bench_fps)} frames/s of `seg-perception bench` (one raw 1080p stream, fp32): "
        f"target ≥ {TARGET_RATIO:g}×, {verdict(ratio >= TARGET_RATIO)}",
        f"- latency p95 {_num(six['latency_p95_ms'], 0)} ms: target ≤ {TARGET_P95_MS:g} ms, "
        f"{verdict(six['latency_p95_ms'] <= TARGET_P95_MS)}",
        f"- slowest camera {_num(100 * six['fairness'], 0)} % of the fastest: target ≥ "
        f"{100 * TARGET_FAIRNESS:g} %, {verdict(six['fairness'] >= TARGET_FAIRNESS)}",
        f"- JPEG decode {_num(six['decode_ms'])} ms a frame: target ≤ {TARGET_DECODE_MS:g} ms, "
        f"{verdict(six['decode_ms'] <= TARGET_DECODE_MS)}"]


def replace_section(text: str, section: str) -> str:
    """``text`` with the benchmark's section replaced (or appended when it has none)."""
    block = f'{SECTION_BEGIN}\n{section.strip()}\n{SECTION_END}'
    if SECTION_BEGIN in text and SECTION_END in text:
        before = text[:text.index(SECTION_BEGIN)]
        after = text[text.index(SECTION_END) + len(SECTION_END):]
        return before + block + after
    return text.rstrip() + '\n\n' + block + '\n'
