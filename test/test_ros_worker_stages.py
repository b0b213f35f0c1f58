"""The worker's two stages: decoding the next batch while the network runs the current one,
at most one decoded batch waiting, and every camera served when the node cannot keep up.

A fake pipeline that blocks until the test lets it go stands in for a slow network, so the
overlap is shown by what happens while it blocks, not by timings.
"""
import collections
import threading
import time

from test_ros_node_logic import FakePipeline, Harness, frame

from seg_perception.ros import conversions, frame_slots, worker

WAIT_S = 5.0


class BlockingPipeline(FakePipeline):
    """process() announces each batch and waits until the test releases it."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def process(self, frames, encodings=None):
        self.entered.release()
        assert self.release.acquire(timeout=WAIT_S), 'never released'
        return super().process(frames, encodings)


class CountingDecode:
    """conversions.decode, counting the calls and announcing each one."""

    def __init__(self):
        self.calls = 0
        self.called = threading.Semaphore(0)

    def __call__(self, msg, **kwargs):
        self.calls += 1
        self.called.release()
        return conversions.decode(msg, **kwargs)


def staged(harness, decode=None):
    if decode is not None:
        harness.processor.decode = decode
    slots = frame_slots.FrameSlots(list(harness.stats))
    runner = worker.InferenceWorker(slots, harness.processor, on_error=errors_fail, poll_s=0.01)
    runner.start()
    return slots, runner


def errors_fail(exc):
    raise AssertionError(f'worker error: {exc!r}')


def test_the_next_batch_is_decoded_while_the_network_runs_and_only_one_waits():
    pipeline, decode = BlockingPipeline(), CountingDecode()
    harness = Harness(cameras=('front',), pipeline=pipeline, max_age_ms=0)
    slots, runner = staged(harness, decode)
    try:
        slots.put(frame(stamp_ns=1))
        assert pipeline.entered.acquire(timeout=WAIT_S)         # batch 1 is in the network
        slots.put(frame(stamp_ns=2))
        assert decode.called.acquire(timeout=WAIT_S)            # batch 1's decode
        assert decode.called.acquire(timeout=WAIT_S)            # batch 2's, meanwhile
        deadline = time.monotonic() + WAIT_S
        while runner.handover.waiting != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert runner.handover.waiting == 1
        # With a batch waiting the decode stage takes nothing more: newer frames replace
        # each other in the slot instead of queueing or being decoded for nothing.
        assert slots.put(frame(stamp_ns=3)) is None
        time.sleep(0.1)
        assert slots.put(frame(stamp_ns=4)).stamp_ns == 3
        assert decode.calls == 2 and runner.handover.waiting == 1
        pipeline.release.release()                              # batch 1 done
        assert pipeline.entered.acquire(timeout=WAIT_S)         # batch 2 runs...
        assert decode.called.acquire(timeout=WAIT_S)            # ...while 4 is decoded
        pipeline.release.release()
        assert pipeline.entered.acquire(timeout=WAIT_S)
        pipeline.release.release()
        deadline = time.monotonic() + WAIT_S
        while len(harness.published) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [f.stamp_ns for f, _ in harness.published] == [1, 2, 4]
        assert decode.calls == 3
    finally:
        for _ in range(3):
            pipeline.release.release()
        runner.stop()
    assert not runner.alive


def test_six_cameras_flooding_a_slow_pipeline_are_all_served():
    cameras = tuple(f'cam{i}' for i in range(6))
    harness = Harness(cameras=cameras, pipeline=FakePipeline(delay_s=0.01), max_age_ms=0)
    slots, runner = staged(harness)
    stop = threading.Event()
    sent = collections.Counter()

    def feed(camera, period_s):
        while not stop.is_set():
            slots.put(frame(camera))
            sent[camera] += 1
            time.sleep(period_s)

    # One camera sends ten times as fast as the others, all faster than the pipeline.
    feeders = [threading.Thread(target=feed, args=(c, 0.0005 if c == 'cam0' else 0.005))
               for c in cameras]
    for thread in feeders:
        thread.start()
    try:
        deadline = time.monotonic() + 2 * WAIT_S
        while len(harness.pipeline.calls) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in feeders:
            thread.join()
        runner.stop()
    published = collections.Counter(f.camera for f, _ in harness.published)
    assert len(harness.pipeline.calls) >= 30
    assert all(sent[c] > len(harness.pipeline.calls) for c in cameras)     # overloaded
    # Every camera is in (nearly) every batch: none starves, however fast the others send.
    assert max(published.values()) - min(published[c] for c in cameras) <= 2, published
    assert min(published[c] for c in cameras) >= len(harness.pipeline.calls) - 2


def test_the_longest_waiting_camera_comes_first_in_a_batch():
    slots = frame_slots.FrameSlots(['a', 'b', 'c'])
    for camera, arrived in (('b', 3.0), ('c', 1.0), ('a', 2.0)):
        slots.put(frame_slots.Frame(camera, None, 0, arrived))
    assert [f.camera for f in slots.take(timeout=0)] == ['c', 'a', 'b']


def test_a_failing_decode_stage_is_reported_and_the_worker_keeps_serving():
    errors = []
    harness = Harness(cameras=('front',), max_age_ms=0)
    calls = []

    def decode(msg, **kwargs):
        calls.append(msg)
        if len(calls) == 1:
            raise RuntimeError('decoder crashed')
        return conversions.decode(msg, **kwargs)

    harness.processor.decode = decode
    slots = frame_slots.FrameSlots(['front'])
    runner = worker.InferenceWorker(slots, harness.processor, errors.append, poll_s=0.01)
    runner.start()
    try:
        slots.put(frame(stamp_ns=1))
        deadline = time.monotonic() + WAIT_S
        while not errors and time.monotonic() < deadline:
            time.sleep(0.005)
        slots.put(frame(stamp_ns=2))
        while not harness.published and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        runner.stop()
    assert len(errors) == 1 and 'decoder crashed' in str(errors[0])
    assert [f.stamp_ns for f, _ in harness.published] == [2]
    assert not runner.alive


def test_a_decoded_frame_that_grew_too_old_waiting_for_the_network_is_dropped():
    harness = Harness(cameras=('front', 'back'), max_age_ms=100.0)
    ready = harness.processor.prepare([frame('front', stamp_ns=harness.now - 50_000_000),
                                       frame('back', stamp_ns=harness.now)])
    assert len(ready) == 2                          # both young enough when decoded
    harness.now += 60_000_000                       # the network was busy for 60 ms
    assert harness.processor.finish(ready) == 1
    assert [f.camera for f, _ in harness.published] == ['back']
    assert harness.stats['front'].snapshot()['dropped'] == {worker.TOO_OLD: 1}
    assert '110 ms old' in harness.warnings[0]


def test_a_batch_limit_serves_the_cameras_in_turn_and_keeps_the_others_frames():
    cameras = ['a', 'b', 'c', 'd', 'e', 'f']
    slots = frame_slots.FrameSlots(cameras, max_batch=2)
    served = {name: 0 for name in cameras}
    clock = 0.0
    for _ in range(30):
        # Every camera always has a frame waiting; 'f' sends the newest ones, 'a' the oldest.
        for index, name in enumerate(cameras):
            clock += 0.001
            slots.put(frame_slots.Frame(name, None, 0, clock + index))
        taken = slots.take(timeout=0)
        assert len(taken) == 2
        for item in taken:
            served[item.camera] += 1
    # Round-robin: ten turns each, whatever the arrival order.
    assert served == {name: 10 for name in cameras}
    # What the limit left behind stays in its slot for the next take.
    slots = frame_slots.FrameSlots(['a', 'b', 'c'], max_batch=1)
    for name, arrived in (('a', 1.0), ('b', 2.0), ('c', 3.0)):
        slots.put(frame_slots.Frame(name, None, 0, arrived))
    assert [[f.camera for f in slots.take(timeout=0)] for _ in range(3)] == [['a'], ['b'], ['c']]
    assert slots.take(timeout=0) == []
