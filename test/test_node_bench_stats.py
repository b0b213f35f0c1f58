"""benchmarks/node_bench_stats.py: the multi-camera benchmark's arithmetic and report.

No ROS and no timing: per-camera stamps and arrivals are made up so that the
expected rates, drops, percentiles and verdicts are known.
"""
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                'benchmarks'))
import node_bench_stats as stats  # noqa: E402

MS = 10 ** 6
S = 10 ** 9


def stamps(count, rate_hz, start=0):
    return [start + int(i * S / rate_hz) for i in range(count)]


def test_camera_runs_per_encoding_or_for_each():
    assert stats.camera_runs(['jpeg=1,2', 'rgb8=6'], ['bgr8']) == [('jpeg', 1), ('jpeg', 2),
                                                                   ('rgb8', 6)]
    assert stats.camera_runs(['1,6'], ['jpeg', 'rgb8']) == [('jpeg', 1), ('jpeg', 6),
                                                            ('rgb8', 1), ('rgb8', 6)]


def test_window_starts_after_the_warmup_of_the_first_frame_sent():
    sent = {'cam0': [5 * S, 6 * S], 'cam1': [4 * S + 50 * MS]}
    start = 6 * S + 50 * MS
    assert stats.window(sent, warmup_s=2.0, duration_s=10.0) == (start, start + 10 * S)


def test_camera_summary_counts_drops_rate_and_latency_inside_the_window_only():
    sent = stamps(40, 10)                          # 0 .. 3.9 s at 10 Hz
    span = (1 * S, 3 * S)                          # 20 frames inside
    # every other frame inside gets a result 100 ms (even) or 300 ms (odd index) late;
    # frames outside the window are answered too, and must not count
    outputs = [(s, s + (100 if i % 4 == 0 else 300) * MS)
               for i, s in enumerate(sent) if i % 2 == 0]
    summary = stats.camera_summary(sent, outputs, span)
    assert summary['sent'] == 20 and summary['published'] == 10 and summary['dropped'] == 10
    assert summary['fps'] == pytest.approx(5.0)
    assert summary['latency_p50_ms'] == pytest.approx(200.0)
    assert summary['latency_p95_ms'] == pytest.approx(300.0)


def test_a_result_received_twice_is_one_frame():
    sent = stamps(10, 10)
    outputs = [(sent[0], sent[0] + MS), (sent[0], sent[0] + 2 * MS)]
    assert stats.camera_summary(sent, outputs, (0, S))['published'] == 1


def test_fairness_is_slowest_over_fastest():
    assert stats.fairness([8.0, 10.0, 9.0]) == pytest.approx(0.8)
    assert math.isnan(stats.fairness([])) and math.isnan(stats.fairness([0.0, 0.0]))


def summary_of(rates, drops, seconds=10.0):
    return {f'cam{i}': {'seconds': seconds, 'sent': int(10 * seconds), 'dropped': d,
                        'fps': r} for i, (r, d) in enumerate(zip(rates, drops))}


def test_run_summary_totals():
    row = stats.run_summary(summary_of([5.0, 4.0], [50, 60]), [10.0, 20.0, 30.0, 40.0])
    assert row['total_fps'] == 9.0 and row['fairness'] == pytest.approx(0.8)
    assert row['drop_rate'] == pytest.approx(110 / 200) and row['sent_fps'] == 10.0
    assert row['latency_p50_ms'] == pytest.approx(25.0)


def six_camera_row(total_fps=30.0, p95=200.0, rates=(5.0,) * 6, decode=3.0):
    row = stats.run_summary(summary_of(list(rates), [50] * 6), [100.0, p95])
    row.update(encoding='jpeg', rate=10.0, total_fps=total_fps, latency_p95_ms=p95,
               node_cpu=1.9, publisher_cpu=0.1, node_rss_mb=600.0, decode_ms=decode)
    return row


def test_targets_met_and_missed_are_named_with_the_ratio():
    met = stats.target_lines([six_camera_row(total_fps=30.0)], bench_fps=20.0)
    assert '1.50×' in met[0] and all(line.endswith('met') for line in met)
    missed = stats.target_lines([six_camera_row(total_fps=19.2, p95=434.0,
                                                rates=(4.0, 3.0, 3.0, 3.0, 3.0, 3.2),
                                                decode=9.0)], bench_fps=20.5)
    assert '0.94×' in missed[0]
    assert [line.endswith('MISSED') for line in missed] == [True, True, True, True]


def test_targets_need_a_six_camera_jpeg_run():
    row = dict(six_camera_row(), cameras=4)
    assert 'no six-camera JPEG run' in stats.target_lines([row], 20.0)[0]


def test_table_has_one_row_per_run_with_every_camera():
    raw = dict(six_camera_row(), encoding='rgb8', decode_ms=float('nan'))
    table = stats.results_table([six_camera_row(), raw]).splitlines()
    assert len(table) == 4 and table[0].count('|') == table[2].count('|')
    assert '| jpeg | 6 × 10 |' in table[2] and '5.0, 5.0, 5.0, 5.0, 5.0, 5.0' in table[2]
    assert table[3].rstrip().endswith('| - |')          # no decode figure for raw


def test_section_is_replaced_in_place_and_the_rest_kept():
    text = '# Node\n\nintro\n'
    once = stats.replace_section(text, '## Several cameras\nfirst')
    assert once.startswith(text.rstrip()) and 'first' in once
    twice = stats.replace_section(once + '\n## Later section\n', '## Several cameras\nsecond')
    assert 'first' not in twice and 'second' in twice
    assert twice.count(stats.SECTION_BEGIN) == 1 and twice.rstrip().endswith('## Later section')
