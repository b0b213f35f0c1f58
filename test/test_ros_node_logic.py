"""The ROS-free parts of the segmentation node: frame slots, the worker, output messages.

No rclpy needed: a fake pipeline stands in for the model (labels = red channel > 127).
"""
import threading
import time
import types

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from seg_perception.ros import conversions, frame_slots, outputs, worker
from seg_perception.ros.diagnostics import CameraStats

SECOND = 1_000_000_000


class FakePipeline:
    """Labels 1 where the red channel is bright; optional delay and failures."""

    def __init__(self, delay_s=0.0, fail_on=None):
        self.info = types.SimpleNamespace(class_names=['road', 'car'],
                                          palette=[[10, 20, 30], [200, 0, 0]], drivable_ids=[0])
        self.delay_s = delay_s
        self.fail_on = fail_on          # a width that makes process() raise ValueError
        self.calls = []

    def process(self, frames, encodings=None):
        self.calls.append(len(frames))
        time.sleep(self.delay_s)
        results = []
        for pixels, encoding in zip(frames, encodings):
            if pixels.shape[1] == self.fail_on:
                raise ValueError(f'frame of width {self.fail_on} rejected')
            red = conversions.to_rgb(pixels, encoding)[..., 0]
            labels = (red > 127).astype(np.uint8)
            results.append(types.SimpleNamespace(
                labels=labels, drivable_mask=np.where(labels == 0, 255, 0).astype(np.uint8),
                confidence=None, color=None, timings={'inference_ms': 1.0}))
        return results


def image_msg(value=200, height=4, width=6, encoding='rgb8', stamp_ns=0):
    pixels = np.full((height, width, 3), value, np.uint8)
    fields = conversions.image_fields(pixels, 'rgb8', types.SimpleNamespace(stamp_ns=stamp_ns))
    fields['encoding'] = encoding
    return types.SimpleNamespace(**fields)


def frame(camera='front', msg=None, stamp_ns=10 * SECOND, **kwargs):
    return frame_slots.Frame(camera, msg if msg is not None else image_msg(**kwargs), stamp_ns,
                             time.perf_counter())


class Harness:
    """A FrameProcessor with a fake clock, collected publications and warnings."""

    def __init__(self, cameras=('front', 'back'), pipeline=None, max_age_ms=100.0, now_ns=None):
        self.now = now_ns if now_ns is not None else 10 * SECOND
        self.published, self.warnings = [], []
        self.stats = {c: CameraStats() for c in cameras}
        self.pipeline = pipeline or FakePipeline()
        self.processor = worker.FrameProcessor(
            self.pipeline, self.stats, lambda f, r: self.published.append((f, r)),
            lambda: self.now, max_frame_age_ms=max_age_ms, warn=self.warnings.append,
            adopt_resolution_after=3)


# -- slots and the worker ----------------------------------------------------------
def test_slot_keeps_only_the_newest_frame_per_camera():
    slots = frame_slots.FrameSlots(['front', 'back'])
    first, second, other = frame(stamp_ns=1), frame(stamp_ns=2), frame('back', stamp_ns=3)
    assert slots.put(first) is None
    assert slots.put(second) is first          # the caller counts it as superseded
    assert slots.put(other) is None
    taken = slots.take(timeout=0)
    assert sorted(f.stamp_ns for f in taken) == [2, 3]
    assert slots.take(timeout=0.01) == []      # emptied


def test_slot_take_waits_for_a_frame_and_close_wakes_it():
    slots = frame_slots.FrameSlots(['front'])
    threading.Timer(0.05, slots.put, [frame()]).start()
    started = time.monotonic()
    assert len(slots.take(timeout=2.0)) == 1
    assert time.monotonic() - started < 1.0
    threading.Timer(0.05, slots.close).start()
    started = time.monotonic()
    assert slots.take(timeout=2.0) == []
    assert time.monotonic() - started < 1.0


def test_slow_worker_drops_old_frames_instead_of_queueing():
    harness = Harness(cameras=('front',), pipeline=FakePipeline(delay_s=0.05), max_age_ms=0)
    slots = frame_slots.FrameSlots(['front'])
    runner = worker.InferenceWorker(slots, harness.processor, on_error=pytest.fail, poll_s=0.02)
    runner.start()
    superseded = 0
    for index in range(1, 61):                   # 60 frames at ~200 Hz, inference 20 Hz
        superseded += slots.put(frame(stamp_ns=index)) is not None
        time.sleep(0.005)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and \
            (not harness.published or harness.published[-1][0].stamp_ns != 60):
        time.sleep(0.01)
    runner.stop()
    stamps = [f.stamp_ns for f, _ in harness.published]
    assert stamps[-1] == 60                      # the newest frame is always served
    assert stamps == sorted(stamps)
    assert superseded >= 30 and len(stamps) + superseded == 60
    assert not runner.alive


def test_worker_reports_processor_errors_and_keeps_running():
    errors = []

    class Exploding:
        calls = 0

        def process(self, frames):
            self.calls += 1
            raise RuntimeError('publisher gone')

        def hand_over(self):        # no model swap waiting
            return False

    slots = frame_slots.FrameSlots(['front'])
    processor = Exploding()
    runner = worker.InferenceWorker(slots, processor, errors.append, poll_s=0.01)
    runner.start()
    slots.put(frame())
    time.sleep(0.1)
    slots.put(frame())
    time.sleep(0.1)
    runner.stop()
    assert processor.calls == 2 and len(errors) == 2 and 'publisher gone' in str(errors[0])


# -- the frame processor -------------------------------------------------------------
def test_cameras_are_segmented_in_one_batch_with_the_input_header():
    harness = Harness()
    frames = [frame('front', value=200), frame('back', value=50, encoding='bgr8')]
    assert harness.processor.process(frames) == 2
    assert harness.pipeline.calls == [2]
    (front, front_result), (back, back_result) = harness.published
    assert front is frames[0] and back is frames[1]
    assert front_result.labels.all() and not back_result.labels.any()
    assert harness.stats['front'].snapshot()['published'] == 1


def test_frames_older_than_max_age_are_dropped_and_unstamped_ones_kept():
    harness = Harness(max_age_ms=100.0, now_ns=10 * SECOND)
    stale = frame(stamp_ns=10 * SECOND - 150_000_000)
    fresh = frame('back', stamp_ns=10 * SECOND - 50_000_000)
    unstamped = frame(stamp_ns=0)
    assert harness.processor.process([stale, fresh]) == 1
    assert harness.published[0][0] is fresh
    assert harness.stats['front'].snapshot()['dropped'] == {worker.TOO_OLD: 1}
    assert '150 ms old' in harness.warnings[0]
    assert harness.processor.process([unstamped]) == 1


def test_latency_is_measured_from_the_header_stamp_with_the_node_clock():
    harness = Harness(max_age_ms=0, now_ns=10 * SECOND + 40_000_000)
    harness.processor.process([frame(stamp_ns=10 * SECOND)])
    snapshot = harness.stats['front'].snapshot()
    assert snapshot['latency_p50_ms'] == pytest.approx(40.0)
    assert snapshot['node_overhead_p50_ms'] < 50


def test_a_stamp_from_the_future_is_published_and_warned_about():
    harness = Harness(max_age_ms=100.0, now_ns=10 * SECOND)
    assert harness.processor.process([frame(stamp_ns=12 * SECOND + 300_000_000)]) == 1
    assert harness.warnings == ['front: header stamps 2.3 s ahead of the node clock']
    snapshot = harness.stats['front'].snapshot()
    assert snapshot['latency_p50_ms'] is None
    assert snapshot['stamps_ahead_ms'] == pytest.approx(2300.0)


@pytest.mark.parametrize('bad_msg,match', [
    (image_msg(encoding='32FC1'), 'unsupported image encoding'),
    (types.SimpleNamespace(**{**vars(image_msg()), 'step': 5}), 'step 5 is smaller'),
    (types.SimpleNamespace(**{**vars(image_msg()), 'data': b'\x00' * 10}), 'fewer than step'),
    (types.SimpleNamespace(**{**vars(image_msg()), 'height': 0}), 'zero-size'),
    (types.SimpleNamespace(format='jpeg', data=b'\xff\xd8garbage\xff\xd9'), 'corrupt JPEG'),
])
def test_bad_frames_are_dropped_counted_and_the_rest_published(bad_msg, match):
    harness = Harness()
    good = frame('back')
    assert harness.processor.process([frame('front', msg=bad_msg), good]) == 1
    assert harness.published[0][0] is good
    assert harness.stats['front'].snapshot()['dropped'] == {worker.BAD_FRAME: 1}
    assert len(harness.warnings) == 1 and match in harness.warnings[0]
    assert harness.warnings[0].startswith('front: dropped frame (bad_frame)')


def test_repeated_bad_frames_warn_once_per_period_but_count_all():
    harness = Harness()
    bad = image_msg(encoding='nv12')
    for _ in range(5):
        harness.processor.process([frame(msg=bad)])
    assert harness.stats['front'].snapshot()['dropped'][worker.BAD_FRAME] == 5
    assert len(harness.warnings) == 1


def test_resolution_change_is_dropped_until_it_persists():
    harness = Harness(cameras=('front',))
    harness.processor.process([frame(width=6)])
    for _ in range(2):
        assert harness.processor.process([frame(width=8)]) == 0
    assert harness.stats['front'].snapshot()['dropped'] == {worker.RESOLUTION_CHANGE: 2}
    assert '8x4 instead of the stream\'s 6x4' in harness.warnings[0]
    assert harness.processor.process([frame(width=8)]) == 1       # third time: adopted
    assert harness.processor.process([frame(width=6)]) == 0       # the old size is now wrong


def test_pipeline_rejecting_one_frame_keeps_the_others():
    harness = Harness(pipeline=FakePipeline(fail_on=8))
    good = frame('back', width=6)
    assert harness.processor.process([frame('front', width=8), good]) == 1
    assert harness.published[0][0] is good
    assert harness.stats['front'].snapshot()['dropped'] == {worker.REJECTED: 1}
    assert harness.pipeline.calls == [2, 1, 1]      # batch, then frame by frame


def test_backend_failure_drops_the_batch_and_is_counted():
    class Broken(FakePipeline):
        def process(self, frames, encodings=None):
            raise RuntimeError('CUDA error: out of memory')

    harness = Harness(pipeline=Broken())
    assert harness.processor.process([frame('front'), frame('back')]) == 0
    for camera in ('front', 'back'):
        assert harness.stats[camera].snapshot()['dropped'] == {worker.INFERENCE_ERROR: 1}
    assert 'out of memory' in harness.warnings[0]


def test_warn_throttle_counts_held_back_messages():
    now = [0.0]
    throttle = worker.WarnThrottle(5.0, clock=lambda: now[0])
    assert throttle.allow('a') == (True, 0)
    assert throttle.allow('a') == (False, 0)
    assert throttle.allow('b') == (True, 0)        # keys are independent
    now[0] = 5.1
    assert throttle.allow('a') == (True, 1)


def test_stamp_to_ns():
    assert frame_slots.stamp_to_ns(types.SimpleNamespace(sec=3, nanosec=5)) == 3 * SECOND + 5


# -- output messages -------------------------------------------------------------------
def result(height=4, width=6, confidence=False, color=False):
    labels = np.zeros((height, width), np.uint8)
    labels[:, width // 2:] = 1
    return types.SimpleNamespace(
        labels=labels, drivable_mask=np.where(labels == 0, 255, 0).astype(np.uint8),
        confidence=np.full((height, width), 77, np.uint8) if confidence else None,
        color=np.full((height, width, 3), 9, np.uint8) if color else None)


def test_result_images_follow_the_publish_options():
    lut = outputs.palette_lut(['road', 'car'], [[10, 20, 30], [200, 0, 0]])
    res = result(confidence=True)
    kinds = [k for k, _, _ in outputs.result_images(res, outputs.OutputOptions(), lut)]
    assert kinds == ['labels', 'drivable_mask']
    images = outputs.result_images(res, outputs.OutputOptions(False, True, True), lut)
    assert [(k, e) for k, _, e in images] == [('labels', 'mono8'), ('color', 'rgb8'),
                                              ('confidence', 'mono8')]
    color = images[1][1]
    assert color[0, 0].tolist() == [10, 20, 30] and color[0, -1].tolist() == [200, 0, 0]
    given = outputs.result_images(result(color=True), outputs.OutputOptions(color=True), lut)
    assert given[-1][1][0, 0].tolist() == [9, 9, 9]          # the pipeline's own colours
    no_conf = outputs.result_images(result(), outputs.OutputOptions(confidence=True), lut)
    assert [k for k, _, _ in no_conf] == ['labels', 'drivable_mask']


def test_output_messages_round_trip_as_rosbags_cdr():
    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header = store.types['sensor_msgs/msg/Image'], store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    header = Header(stamp=Time(sec=7, nanosec=9), frame_id='front')
    options = outputs.OutputOptions(color=True, confidence=True)
    lut = outputs.palette_lut(['road', 'car'], [[10, 20, 30], [200, 0, 0]])
    for kind, pixels, encoding in outputs.result_images(result(confidence=True), options, lut):
        msg = conversions.build_image(Image, pixels, encoding, header)
        back = store.deserialize_cdr(store.serialize_cdr(msg, Image.__msgtype__),
                                     Image.__msgtype__)
        assert (back.header.stamp.sec, back.header.frame_id) == (7, 'front'), kind
        assert back.encoding == encoding
        assert np.array_equal(conversions.decode(back).pixels, pixels), kind


def test_camera_info_scaling_and_topic_names():
    k = [1000.0, 0, 960, 0, 1000, 540, 0, 0, 1]
    p = [1000.0, 0, 960, -50, 0, 1000, 540, 0, 0, 0, 1, 0]
    k2, p2 = outputs.scale_camera_info(1920, 1080, k, p, 960, 270)
    assert k2 == [500.0, 0, 480, 0, 250, 135, 0, 0, 1]
    assert p2 == [500.0, 0, 480, -25, 0, 250, 135, 0, 0, 0, 1, 0]
    assert outputs.output_topic('front_left', 'labels') == 'front_left/segmentation/labels'
    assert outputs.label_info_classes(['road', 'car']) == [(0, 'road'), (1, 'car')]


def test_ros_free_modules_import_neither_rclpy_nor_torch():
    import subprocess
    import sys
    code = ('import sys\n'
            'import seg_perception.ros.conversions, seg_perception.ros.params\n'
            'import seg_perception.ros.worker, seg_perception.ros.outputs\n'
            'import seg_perception.ros.diagnostics, seg_perception.ros.upstream\n'
            'print(sorted(m for m in ("rclpy", "torch", "cv_bridge") if m in sys.modules))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'
