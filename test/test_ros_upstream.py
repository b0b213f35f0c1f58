"""Frames lost before the node: the receive-buffer ceiling check and the stamp-gap estimate.

No rclpy needed. Stamps are synthetic; clocks are injected.
"""
import os
from xml.etree import ElementTree

import numpy as np
import pytest

from seg_perception.ros.diagnostics import CameraStats, key_values
from seg_perception.ros.upstream import (CAMERA_PROFILE, ReceiveBufferCheck, StampGaps,
                                         receive_buffer_ceiling)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2 ** 20
FRAME_1080P_RGB8 = 1920 * 1080 * 3


@pytest.mark.parametrize('content,ceiling', [
    ('4194304\n', 4 * MIB), ('2147483647', 2147483647), ('', None), ('lots\n', None)])
def test_the_ceiling_is_read_from_the_kernel_file(tmp_path, content, ceiling):
    path = tmp_path / 'rmem_max'
    path.write_text(content)
    assert receive_buffer_ceiling(str(path)) == ceiling


def test_an_unreadable_ceiling_is_unknown(tmp_path):
    assert receive_buffer_ceiling(str(tmp_path / 'missing')) is None


def test_a_frame_over_the_ceiling_warns_once_per_camera(tmp_path):
    path = tmp_path / 'rmem_max'
    path.write_text(f'{4 * MIB}\n')
    check = ReceiveBufferCheck(receive_buffer_ceiling(str(path)))
    assert check.check('front', 640 * 480 * 3) is None           # fits: nothing to say
    warning = check.check('front', FRAME_1080P_RGB8)
    assert warning.startswith('front: raw frames of 5.9 MiB are larger than the kernel\'s '
                              'socket receive-buffer ceiling (net.core.rmem_max = 4.0 MiB)')
    assert 'sysctl -w net.core.rmem_max=' in warning
    assert 'config/cyclonedds_cameras.xml' in warning
    assert check.check('front', FRAME_1080P_RGB8) is None         # once per camera
    assert check.check('back', FRAME_1080P_RGB8).startswith('back: raw frames')


def test_no_warning_when_the_ceiling_is_unknown_or_high_enough():
    assert ReceiveBufferCheck(None).check('front', FRAME_1080P_RGB8) is None
    assert ReceiveBufferCheck(2147483647).check('front', FRAME_1080P_RGB8) is None


def stamps(rate_hz, count, lost=(), jitter=0.0, start_s=100.0, seed=0):
    """Header stamps (ns) of ``count`` frames at ``rate_hz``, without the indices ``lost``."""
    rng = np.random.default_rng(seed)
    period = 1e9 / rate_hz
    lost = set(lost)
    return [int(start_s * 1e9 + i * period + rng.uniform(-jitter, jitter) * period)
            for i in range(count) if i not in lost]


def total_lost(sequence, max_gap_s=5.0):
    gaps = StampGaps(max_gap_s)
    return sum(gaps.add(stamp) for stamp in sequence)


def test_gaps_of_k_periods_count_k_minus_1_lost_frames():
    assert total_lost(stamps(30, 100)) == 0
    assert total_lost(stamps(30, 100, lost={20, 40, 41, 60, 61, 62})) == 6
    assert total_lost(stamps(10, 100, lost={50, 51, 52}, jitter=0.1)) == 3


def test_the_period_is_found_even_when_most_frames_are_lost():
    rng = np.random.default_rng(1)
    lost = {i for i in range(20, 499) if rng.random() < 0.7}      # 15 of 50 arrive
    assert total_lost(stamps(10, 500, lost=lost, jitter=0.05)) == len(lost)


def test_loops_repeats_and_outages_are_not_counted_as_lost():
    looped = stamps(10, 50) + stamps(10, 50)                 # a bag played twice
    assert total_lost(looped) == 0
    repeated = [s for s in stamps(10, 50) for _ in range(2)]
    assert total_lost(repeated) == 0
    outage = stamps(10, 50) + stamps(10, 50, start_s=120.0)  # 15 s without frames
    assert total_lost(outage, max_gap_s=5.0) == 0


def test_nothing_is_counted_before_the_period_is_known():
    assert total_lost(stamps(10, 8, lost={2, 3})) == 0


def test_camera_stats_report_upstream_losses_in_the_window():
    now = [0.0]
    stats = CameraStats(window_s=5.0, clock=lambda: now[0])
    sequence = stamps(10, 100, lost=set(range(60, 100, 2)))  # half lost in the last 4 s
    for stamp in sequence:
        now[0] = (stamp - sequence[0]) / 1e9
        stats.record_input(stamp)
    snap = stats.snapshot()
    assert snap['lost_upstream'] == 20
    assert snap['lost_upstream_rate_hz'] == pytest.approx(4.0)      # 20 in the 5 s window
    assert snap['lost_upstream_pct'] == pytest.approx(100 * 20 / (20 + 31))
    pairs = dict(key_values(snap))
    assert pairs['lost_upstream'] == '20' and pairs['lost_upstream_rate_hz'] == '4.0'
    now[0] += 10                                              # the window passes
    snap = stats.snapshot()
    assert snap['lost_upstream'] == 20 and snap['lost_upstream_pct'] is None
    stats.record_input()                                      # unstamped: no estimate
    assert stats.snapshot()['lost_upstream'] == 20


def test_the_camera_profile_parses_and_asks_for_a_10_mb_receive_buffer():
    path = os.path.join(REPO, CAMERA_PROFILE)
    root = ElementTree.parse(path).getroot()
    assert root.tag == '{https://cdds.io/config}CycloneDDS'
    (setting,) = root.iter('{https://cdds.io/config}SocketReceiveBufferSize')
    assert setting.get('min') == '10MB'
    assert not list(root.iter('{https://cdds.io/config}NetworkInterface'))   # combinable
