"""Camera health (ros/camera_health.py) on the sample bag's real frames, unaltered and altered.

Unaltered frames (day, dusk, the two night frames, the glare frame) must raise nothing even
with no persistence; darkened, saturated, covered, repeated frames and stamps sent backwards
must be reported once they persist, and clear when they are gone.
"""
import functools

import numpy as np
import pytest

from seg_perception.replay.bag_io import open_bag
from seg_perception.ros import frame_slots, params
from seg_perception.ros.camera_health import NETWORK_SIZE, CameraHealth, HealthThresholds
from seg_perception.ros.conversions import decode
from seg_perception.ros.diagnostics import ERROR, OK, WARN, camera_health

BAG = 'seg_perception/assets/sample_bag'
TOPICS = {'front': '/camera/front/image_raw/compressed',
          'dash': '/camera/dash/image_raw/compressed'}
SECOND = 1_000_000_000


@functools.lru_cache(maxsize=None)
def sample_frames(camera):
    """(stamp_ns, pixels, encoding) of one camera's frames in the sample bag."""
    frames = []
    with open_bag(BAG) as source:
        for _, msgtype, _, raw in source.messages([TOPICS[camera]]):
            msg = source.deserialize(raw, msgtype)
            decoded = decode(msg)
            stamp = msg.header.stamp.sec * SECOND + msg.header.stamp.nanosec
            frames.append((stamp, decoded.pixels, decoded.encoding))
    return frames


def feed(health, frames, start=0.0, period=0.1, stamps=None):
    """Feed frames at ``period`` s; return the time of the last one."""
    now = start
    for index, (stamp, pixels, encoding) in enumerate(frames):
        now = start + index * period
        health.check_stamp(stamps[index] if stamps is not None else stamp, now)
        health.check_image(pixels, encoding, now)
    return now


def with_new_stamps(frames, altered):
    """The frames, altered by ``altered(pixels)``, stamped 0.1 s apart."""
    return [(SECOND * (1 + i // 10) + (i % 10) * SECOND // 10, altered(p.copy()), e)
            for i, (_, p, e) in enumerate(frames)]


@pytest.mark.parametrize('camera', sorted(TOPICS))
def test_no_false_alarm_on_any_sample_frame(camera):
    """Night frames, the glare frame and a static scene: nothing, on any single frame."""
    frames = sample_frames(camera)
    health = CameraHealth(camera, NETWORK_SIZE, HealthThresholds(persist_s=0.0, error_s=0.0))
    for index in range(len(frames)):
        feed(health, frames[index:index + 1], start=index * 0.1)
        assert health.report() == [], f'{camera} frame {index}'
    assert camera_health(health.report(), len(frames)) == (OK, 'images look fine')


def test_darkened_frames_are_reported_after_persisting_and_escalate_to_error():
    dark = with_new_stamps(sample_frames('dash') * 6, lambda p: (p * 0.05).astype(np.uint8))
    health = CameraHealth('dash', NETWORK_SIZE, HealthThresholds(persist_s=1.0, error_s=5.0))
    feed(health, dark[:10])                      # 0.9 s: not yet
    assert health.report() == []
    feed(health, dark[10:31], start=1.0)         # 3.0 s
    (level, message), = health.report()      # dark, not also blocked: no texture in the dark
    assert level == WARN and message.startswith('dash: image dark (brightest 1 % below')
    assert message.endswith('for 3.0 s')
    feed(health, dark[31:61], start=3.1)         # 6.0 s
    (level, message), = health.report()
    assert level == ERROR and message.endswith('for 6.0 s')


def test_saturated_frames_give_the_share_and_the_duration():
    def saturate(pixels):
        pixels[:round(0.62 * pixels.shape[0])] = 255     # the top 62 % blinded
        return pixels
    frames = with_new_stamps(sample_frames('front') * 3, saturate)
    health = CameraHealth('front', NETWORK_SIZE)
    feed(health, frames[:32])
    assert health.report() == [(WARN, 'front: 62 % of the image saturated for 3.1 s')]


def test_a_covered_region_that_stays_is_blocked_and_clears_when_uncovered():
    def cover(pixels):
        pixels[:, :pixels.shape[1] // 2] = (40, 50, 60)   # the left half under mud
        return pixels
    frames = sample_frames('dash')
    covered = with_new_stamps(frames * 2, cover)
    health = CameraHealth('dash', NETWORK_SIZE)
    end = feed(health, covered)
    (level, message), = health.report()
    assert level == WARN and message.startswith('dash: 5')
    assert '% of the image blocked (one low-texture region) for 2.1 s' in message
    feed(health, with_new_stamps(frames[:1], lambda p: p), start=end + 0.1)
    assert health.report() == []


def test_a_repeated_frame_is_frozen_and_a_new_one_clears_it():
    still = sample_frames('dash')[6]             # a night frame
    frames = [(SECOND + i * SECOND // 10, still[1], still[2]) for i in range(20)]
    health = CameraHealth('dash', NETWORK_SIZE)
    end = feed(health, frames)
    assert health.report() == [(WARN, 'dash: image frozen (identical frames) for 1.8 s')]
    feed(health, sample_frames('dash')[7:8], start=end + 0.1, stamps=[10 * SECOND])
    assert health.report() == []


def test_stamps_sent_backwards_and_frozen_stamps_are_reported():
    frames = sample_frames('front') * 2
    health = CameraHealth('front', NETWORK_SIZE)
    backwards = [(100 - i) * SECOND // 10 for i in range(len(frames))]
    feed(health, frames, stamps=backwards)
    assert health.report() == [(WARN, 'front: header stamps out of order for 2.2 s')]
    assert health.stamps_out_of_order == len(frames) - 1
    frozen = CameraHealth('front', NETWORK_SIZE)
    feed(frozen, frames, stamps=[5 * SECOND] * len(frames))
    assert frozen.report() == [(WARN, 'front: header stamps frozen for 2.2 s')]


def test_health_parameters_are_validated_and_reach_the_config():
    base = {'cameras': ['front']}
    config = params.build_config(dict(base, **{'health.saturated_fraction': 0.5}),
                                 check_model_file=False)
    assert config.health == HealthThresholds(saturated_fraction=0.5)
    with pytest.raises(params.ParameterError, match="'health.error_s'.*below health.persist_s"):
        params.build_config(dict(base, **{'health.persist_s': 3.0, 'health.error_s': 2.0}),
                            check_model_file=False)
    with pytest.raises(params.ParameterError, match="'health.blocked_fraction'.*maximum 1"):
        params.build_config(dict(base, **{'health.blocked_fraction': 40.0}),
                            check_model_file=False)
    with pytest.raises(params.ParameterError, match="'health.dark_luminance'.*minimum"):
        params.build_config(dict(base, **{'health.dark_luminance': -1.0}),
                            check_model_file=False)


def test_the_worker_feeds_health_even_for_frames_it_drops_as_too_old():
    """Frozen stamps make every frame too old: the stamps are still judged, first."""
    import types

    from seg_perception.ros import worker
    from seg_perception.ros.diagnostics import CameraStats
    health = {'front': CameraHealth('front', NETWORK_SIZE)}
    stats = {'front': CameraStats()}
    processor = worker.FrameProcessor(
        pipeline=None, stats=stats, publish=lambda f, r: None, now_ns=lambda: 60 * SECOND,
        max_frame_age_ms=500.0, warn=lambda text: None, health=health)
    for index in range(15):
        msg = types.SimpleNamespace(header=None)
        processor.process([frame_slots.Frame('front', msg, 5 * SECOND, index * 0.1)])
    assert stats['front'].dropped == {worker.TOO_OLD: 15}
    assert health['front'].report() == [(WARN, 'front: header stamps frozen for 1.3 s')]


def test_the_worker_feeds_decoded_frames_to_health():
    from seg_perception.ros import worker
    from seg_perception.ros.diagnostics import CameraStats
    health = {'dash': CameraHealth('dash', NETWORK_SIZE)}
    stamp, pixels, encoding = sample_frames('dash')[0]
    decoded = types_decoded(pixels, encoding)
    processor = worker.FrameProcessor(
        pipeline=FailingPipeline(), stats={'dash': CameraStats()}, publish=lambda f, r: None,
        now_ns=lambda: 0, warn=lambda text: None, decode=lambda msg: decoded, health=health)
    for index in range(12):
        processor.process([frame_slots.Frame('dash', None, SECOND + index, index * 0.1)])
    assert health['dash'].report() == [(WARN, 'dash: image frozen (identical frames) for 1.0 s')]


def types_decoded(pixels, encoding):
    from seg_perception.ros.conversions import DecodedImage
    return DecodedImage(pixels, encoding)


class FailingPipeline:
    """A backend that fails: health is fed before inference, whatever inference does."""

    def process(self, frames, encodings=None):
        raise RuntimeError('no backend in this test')
