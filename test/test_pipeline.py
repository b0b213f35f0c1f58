"""The onboard pipeline: frames of any size and encoding in, labels + drivable mask out."""
import cv2
import numpy as np
import pytest

import runtime_models as rm
from seg_perception.runtime.backends import create_backend
from seg_perception.runtime.pipeline import InputError, SegmentationPipeline

STAGES = {'convert', 'infer', 'upsample', 'drivable', 'overlay', 'postprocess', 'total'}


def pipeline(resolution='network', **options):
    return SegmentationPipeline(rm.exported(resolution, with_confidence=True),
                                backend='onnxruntime', **options)


def agreement(a, b):
    return float((a == b).mean())


def interior_agreement(labels, expected, margin=9):
    """Agreement away from class boundaries, where the resizes cannot move them."""
    kernel = np.ones((margin, margin), np.uint8)
    interior = cv2.erode(expected, kernel) == cv2.dilate(expected, kernel)
    return float((labels[interior] == expected[interior]).mean())


@pytest.mark.parametrize('resolution', ['network', 'camera'])
def test_painted_frame_gives_the_painted_classes_at_camera_resolution(resolution):
    frame = rm.painted_frame(96, 160)
    result = pipeline(resolution).process([frame])[0]
    assert result.labels.shape == (96, 160) and result.labels.dtype == np.uint8
    # Class boundaries may move by the resize; away from them the class is exact.
    assert interior_agreement(result.labels, rm.expected_labels(frame)) == 1.0
    assert agreement(result.labels, rm.expected_labels(frame)) > 0.9
    assert result.labels[90, 80] == rm.CLASS_NAMES.index('road')
    assert result.labels[5, 80] == rm.CLASS_NAMES.index('sky')
    np.testing.assert_array_equal(result.drivable_mask,
                                  np.where(result.labels == 0, 255, 0))
    assert set(result.timings) == STAGES
    assert all(value >= 0 for value in result.timings.values())
    assert result.confidence is None and result.color is None


def test_graph_form_is_read_from_the_metadata_and_camera_graphs_keep_exact_boundaries():
    frame = rm.painted_frame(96, 160)
    camera = pipeline('camera')
    assert camera.resize == 'graph' and pipeline('network').resize == 'pipeline'
    direct = create_backend(rm.exported('camera', True), 'onnxruntime').run(frame[None])
    np.testing.assert_array_equal(camera.process([frame])[0].labels, direct['labels'][0])
    forced = pipeline('camera', resize='pipeline').process([frame])[0].labels
    assert agreement(forced, direct['labels'][0]) > 0.97


@pytest.mark.parametrize('resolution', ['network', 'camera'])
def test_network_resolution_results(resolution):
    result = pipeline(resolution, output_resolution='network').process(
        [rm.painted_frame(96, 160)])[0]
    assert result.labels.shape == rm.INPUT_SIZE == result.drivable_mask.shape


@pytest.mark.parametrize('resolution', ['network', 'camera'])
def test_mixed_resolution_cameras_equal_one_at_a_time(resolution):
    rng = np.random.default_rng(0)
    sizes = [(96, 160), (60, 100), (96, 160), (rm.INPUT_SIZE[0], rm.INPUT_SIZE[1])]
    frames = []
    for height, width in sizes:
        noisy = rm.painted_frame(height, width).astype(np.int16)
        noisy += rng.integers(-50, 50, noisy.shape, dtype=np.int16)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    encodings = ['rgb8', 'bgr8', 'rgb8', 'mono8']
    frames[1] = frames[1][:, :, ::-1].copy()
    frames[3] = cv2.cvtColor(frames[3], cv2.COLOR_RGB2GRAY)
    seg = pipeline(resolution, want_confidence=True, want_color=True)
    together = seg.process(frames, encodings)
    for frame, encoding, joint in zip(frames, encodings, together):
        alone = seg.process([frame], encoding)[0]
        assert joint.labels.shape == frame.shape[:2]
        np.testing.assert_array_equal(joint.labels, alone.labels)
        np.testing.assert_array_equal(joint.drivable_mask, alone.drivable_mask)
        np.testing.assert_array_equal(joint.confidence, alone.confidence)
        np.testing.assert_array_equal(joint.color, alone.color)


def test_bgr8_and_mono8_are_converted_to_rgb():
    frame = rm.painted_frame(80, 120)
    seg = pipeline()
    rgb = seg.process([frame], 'rgb8')[0].labels
    np.testing.assert_array_equal(seg.process([np.ascontiguousarray(frame[:, :, ::-1])],
                                              'bgr8')[0].labels, rgb)
    # The same frame declared as bgr8 swaps red (road) and blue (sky).
    swapped = seg.process([frame], 'bgr8')[0].labels
    assert swapped[70, 60] == rm.CLASS_NAMES.index('sky')
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    as_rgb = seg.process([cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)])[0].labels
    np.testing.assert_array_equal(seg.process([grey], 'mono8')[0].labels, as_rgb)
    np.testing.assert_array_equal(seg.process([grey[:, :, None]], ['mono8'])[0].labels, as_rgb)
    rgba = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
    np.testing.assert_array_equal(seg.process([rgba], 'rgba8')[0].labels, rgb)
    bgra = cv2.cvtColor(frame, cv2.COLOR_RGB2BGRA)
    np.testing.assert_array_equal(seg.process([bgra], 'bgra8')[0].labels, rgb)


def test_confidence_and_colour_overlay():
    frame = rm.painted_frame(80, 120)
    opaque = pipeline(want_confidence=True, want_color=True, color_alpha=1.0)
    result = opaque.process([frame])[0]
    assert result.confidence.shape == (80, 120) and result.confidence.dtype == np.uint8
    assert result.confidence[70, 60] > 200                   # inside a flat road patch
    palette = np.asarray(rm.PALETTE, np.uint8)
    np.testing.assert_array_equal(result.color, palette[result.labels])
    clear = pipeline(want_color=True, color_alpha=0.0).process([frame])[0]
    np.testing.assert_array_equal(clear.color, frame)
    half = pipeline(want_color=True, color_alpha=0.5).process(
        [np.ascontiguousarray(frame[:, :, ::-1])], 'bgr8')[0]
    blend = (frame.astype(float) + palette[half.labels]) / 2
    assert np.abs(half.color - blend).max() <= 1


def test_no_confidence_output_is_a_clear_error():
    with pytest.raises(ValueError, match='no confidence output'):
        SegmentationPipeline(rm.exported('network', False), backend='onnxruntime',
                             want_confidence=True)


def test_drivable_classes_override_and_ego_region():
    frame = rm.painted_frame(80, 120)
    frame[10:20, 10:30] = rm.COLOURS['road']                  # road not reachable
    grass = pipeline(drivable_classes=['grass']).process([frame])[0]
    np.testing.assert_array_equal(grass.drivable_mask, np.where(grass.labels == 1, 255, 0))
    ego = pipeline(keep_ego_region=True).process([frame])[0]
    assert ego.labels[15, 20] == 0 and ego.drivable_mask[15, 20] == 0
    assert ego.drivable_mask[75, 60] == 255
    with pytest.raises(ValueError, match='unknown drivable class'):
        pipeline(drivable_classes=['runway'])


def test_buffers_are_allocated_once_per_resolution_and_reused():
    seg = pipeline(want_color=True)
    frames = [rm.painted_frame(96, 160), rm.painted_frame(60, 100)]
    seg.process(frames, ['bgr8', 'rgb8'])
    buffers = dict(seg._buffers)
    assert any(key[0] == 'batch' for key in buffers)
    first = seg.process(frames, ['bgr8', 'rgb8'])
    kept = first[0].labels.copy()
    second = seg.process([f[::-1].copy() for f in frames], ['bgr8', 'rgb8'])
    assert seg._buffers.keys() == buffers.keys()
    assert all(seg._buffers[key] is buffers[key] for key in buffers)
    # Results are the caller's: a later call does not overwrite them.
    assert second[0].labels is not first[0].labels
    np.testing.assert_array_equal(first[0].labels, kept)
    reusing = pipeline(reuse_outputs=True)
    a = reusing.process(frames)
    b = reusing.process(frames)
    assert a[0].labels is b[0].labels and a[1].drivable_mask is b[1].drivable_mask


@pytest.mark.parametrize('bad, encoding, words', [
    (np.zeros((40, 60, 3), np.float32), 'rgb8', 'frame 0: dtype float32'),
    (np.zeros((40, 60, 4), np.uint8), 'rgb8', r'shape \(40, 60, 4\) does not fit rgb8'),
    (np.zeros((40, 60), np.uint8), 'bgr8', 'does not fit bgr8'),
    (np.zeros((40, 60, 3), np.uint8), 'mono8', 'does not fit mono8'),
    (np.zeros((0, 60, 3), np.uint8), 'rgb8', 'zero-size'),
    (np.zeros((40, 60, 3), np.uint8), 'yuv422', "unknown encoding 'yuv422'"),
    ([[1, 2, 3]], 'rgb8', 'expected a numpy array'),
])
def test_bad_frames_raise_input_error_and_the_pipeline_stays_usable(bad, encoding, words):
    seg = pipeline()
    good = rm.painted_frame(40, 60)
    with pytest.raises(InputError, match=words):
        seg.process([bad], encoding)
    with pytest.raises(InputError):
        seg.process([good, bad], ['rgb8', encoding])
    result = seg.process([good])[0]
    assert result.labels.shape == (40, 60) and result.labels[35, 30] == 0


def test_bad_calls_raise_input_error():
    seg = pipeline()
    frame = rm.painted_frame(40, 60)
    with pytest.raises(InputError, match='list of numpy arrays'):
        seg.process(frame)
    with pytest.raises(InputError, match='1 encodings for 2 frames'):
        seg.process([frame, frame], ['rgb8'])
    assert seg.process([]) == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='output_resolution'):
        pipeline(output_resolution='4k')
    with pytest.raises(ValueError, match='color_alpha'):
        pipeline(color_alpha=2)
    with pytest.raises(ValueError, match='resize'):
        pipeline(resize='gpu')


@pytest.mark.usefixtures('colour_net_name')
def test_pytorch_backend_runs_the_same_pipeline(tmp_path):
    checkpoint = rm.save_colour_checkpoint(str(tmp_path / 'colour.pt'), texture=0.3)
    frame = rm.painted_frame(96, 160)
    torch_seg = SegmentationPipeline(checkpoint, backend='pytorch')
    onnx_seg = SegmentationPipeline(rm.exported('camera'), backend='onnxruntime')
    assert torch_seg.resize == onnx_seg.resize == 'graph'
    ours, theirs = onnx_seg.process([frame])[0], torch_seg.process([frame])[0]
    assert agreement(ours.labels, theirs.labels) >= 0.999


def test_batches_larger_than_the_backend_takes_are_split():
    seg = pipeline()
    frames = [rm.painted_frame(60 + 4 * i, 100) for i in range(5)]
    whole = seg.process(frames)
    calls = []
    run = seg.backend.run
    seg.backend.run = lambda batch: calls.append(len(batch)) or run(batch)
    seg.backend.max_batch = 2
    split = seg.process(frames)
    assert calls == [2, 2, 1]
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(a.labels, b.labels)
