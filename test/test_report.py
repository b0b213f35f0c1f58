"""The bag-eval report: files, the numbers in them, real-time verdict, plots."""
import json
import os
import re
import sys

import numpy as np
import pytest

import bag_helpers as bh
import runtime_models as rm
from seg_perception.replay import report
from seg_perception.replay.bag_eval import evaluate_bag
from seg_perception.errors import InvalidValueError
from seg_perception.evaluation.tables import REQUIRED_KEYS


@pytest.fixture(scope='module')
def labelled_run(tmp_path_factory):
    """Two cameras, cam_front with class-id ground truth on a label topic."""
    tmp = tmp_path_factory.mktemp('report')
    store = bh.typestore()
    messages = bh.two_camera_messages(count=5)
    for index in range(5):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        truth = rm.expected_labels(bh.frame(index))
        messages.append(('/cam_front/ground_truth/labels',
                         bh.image_msg(store, truth, stamp, 'mono8'), stamp + 5))
    bag = bh.write_rosbag2(tmp / 'drive', sorted(messages, key=lambda m: m[2]))
    summary = evaluate_bag(str(bag), bh.model_path(), str(tmp / 'out'), progress=False,
                           label_topics=['/cam_front/ground_truth/labels'], overlays=2)
    return tmp / 'out', summary


def test_report_files_exist_and_metrics_json_has_the_evaluate_keys(labelled_run):
    out, summary = labelled_run
    for name in ('report.md', 'report.html', 'metrics.json', 'metrics.md', 'latency.png',
                 'confusion_matrix.png'):
        assert (out / name).is_file(), name
    assert len(list((out / 'overlays').glob('*.png'))) == 4          # 2 per camera
    metrics = json.loads((out / 'metrics.json').read_text())
    assert set(REQUIRED_KEYS) <= set(metrics)
    assert metrics['miou'] == pytest.approx(1.0)                      # exact labels
    assert metrics['num_images'] == 5
    assert metrics['cameras']['cam_front']['frames'] == 5
    assert metrics['cameras']['cam_rear']['frames'] == 5
    assert metrics['cameras']['cam_front']['metrics']['miou'] == pytest.approx(1.0)
    assert metrics['status'] == 'complete' and metrics['error'] is None
    latency = metrics['latency_ms']['node']
    assert latency['count'] == 10
    assert 0 < latency['median'] <= latency['p95'] <= latency['max']
    for camera in metrics['cameras'].values():
        assert camera['recorded_fps'] == pytest.approx(10.0)
        assert camera['processing_fps'] > 0
        assert set(camera['latency_ms']) == set(report.STAGES)


def _shown(value):
    return f'{value:.1f}'


def test_report_md_and_html_show_the_numbers_of_metrics_json(labelled_run):
    out, _ = labelled_run
    metrics = json.loads((out / 'metrics.json').read_text())
    markdown = (out / 'report.md').read_text()
    page = (out / 'report.html').read_text()
    node = metrics['latency_ms']['node']
    row = f'| node | {_shown(node["median"])} | {_shown(node["p95"])} | {_shown(node["max"])} |'
    assert row in markdown
    assert f'<td>{_shown(node["p95"])}</td>' in page
    assert metrics['realtime']['verdict'] in markdown
    assert metrics['realtime']['verdict'] in page
    for name, camera in metrics['cameras'].items():
        assert f'| {name} | {camera["topic"]} |' in markdown
    assert f'| mIoU | {100 * metrics["miou"]:.2f} |' in markdown
    assert '](latency.png)' in markdown and '](overlays/' in markdown


def test_report_html_is_self_contained(labelled_run):
    out, _ = labelled_run
    page = (out / 'report.html').read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 1 + 4 + 1              # latency, overlays, confusion matrix
    assert all(s.startswith('data:image/png;base64,') for s in sources)
    assert 'href=' not in page and '<link' not in page


def _labelled_bag(folder, count=2):
    store = bh.typestore()
    messages = bh.two_camera_messages(count=count)
    for index in range(count):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        messages.append(('/cam_front/ground_truth/labels',
                         bh.image_msg(store, rm.expected_labels(bh.frame(index)), stamp, 'mono8'),
                         stamp + 5))
    return bh.write_rosbag2(folder, sorted(messages, key=lambda m: m[2]))


def test_metrics_json_is_written_once_with_the_per_camera_metrics(tmp_path, monkeypatch):
    from seg_perception import files
    written = []
    atomically = files.replaced_atomically

    def recording(path, **options):
        written.append(os.path.basename(path))
        return atomically(path, **options)

    monkeypatch.setattr(files, 'replaced_atomically', recording)
    bag = _labelled_bag(tmp_path / 'in')
    evaluate_bag(str(bag), bh.model_path(), str(tmp_path / 'out'), progress=False,
                 label_topics=['/cam_front/ground_truth/labels'])
    assert written.count('metrics.json') == 1
    assert written.count('report.md') == 1 and written.count('report.html') == 1
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['cameras']['cam_front']['metrics']['num_images'] == 2
    assert metrics['cameras']['cam_front']['metrics']['miou'] == pytest.approx(1.0)


def test_output_topics_are_named_by_the_node_s_output_topic(tmp_path, monkeypatch):
    """One spelling of <camera>/segmentation/<kind>: ros.outputs.output_topic."""
    from seg_perception.ros import outputs
    monkeypatch.setattr(outputs, 'output_topic', lambda camera, kind: f'{camera}/seg/{kind}')
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=1))
    summary = evaluate_bag(str(bag), bh.model_path(), str(tmp_path / 'out'), progress=False)
    expected = ['/cam_front/seg/labels', '/cam_front/seg/drivable_mask', '/cam_front/seg/color']
    assert summary['cameras']['cam_front']['output_topics'] == expected
    assert set(expected) <= set(bh.read_bag(tmp_path / 'out' / 'in_segmentation'))
    for page in ('report.md', 'report.html'):
        text = (tmp_path / 'out' / page).read_text()
        assert '/cam_front/seg/labels' in text and '/cam_front/segmentation/' not in text


def test_without_ground_truth_the_metric_keys_are_null(tmp_path):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=2))
    evaluate_bag(str(bag), bh.model_path(), str(tmp_path / 'out'), progress=False)
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert set(REQUIRED_KEYS) <= set(metrics)
    assert metrics['miou'] is None and metrics['ground_truth'] is None
    assert metrics['class_names'] == rm.CLASS_NAMES
    assert metrics['frames'] == 4
    assert not (tmp_path / 'out' / 'confusion_matrix.png').exists()
    assert 'Accuracy against ground truth' not in (tmp_path / 'out' / 'report.md').read_text()


def test_latency_summary_and_frame_rate():
    summary = report.latency_summary(list(range(1, 101)))
    assert summary['median'] == pytest.approx(50.5)
    assert summary['p95'] == pytest.approx(95.05)
    assert summary['max'] == 100 and summary['count'] == 100
    assert report.latency_summary([])['median'] is None
    stamps = [10 ** 9 + i * 50_000_000 for i in range(21)]          # 20 Hz over 1 s
    assert report.frame_rate(stamps) == pytest.approx(20.0)
    assert report.frame_rate(stamps[:1]) is None


def test_realtime_verdict_adds_the_work_of_all_cameras():
    fast = report.realtime({'a': {'recorded_fps': 10.0, 'mean_node_ms': 50.0},
                            'b': {'recorded_fps': 10.0, 'mean_node_ms': 30.0}})
    assert fast['keeps_up'] is True and fast['utilisation'] == pytest.approx(0.8)
    assert fast['verdict'].startswith('real time: yes')
    slow = report.realtime({'a': {'recorded_fps': 10.0, 'mean_node_ms': 80.0},
                            'b': {'recorded_fps': 10.0, 'mean_node_ms': 80.0}})
    assert slow['keeps_up'] is False and slow['utilisation'] == pytest.approx(1.6)
    assert 'drop about 38%' in slow['verdict']
    unknown = report.realtime({'a': {'recorded_fps': None, 'mean_node_ms': 5.0}})
    assert unknown['keeps_up'] is None


class _Camera:
    def __init__(self, name, times_ms):
        self.name = name
        self.records = [{'stamp_ns': bh.START_NS + i * bh.PERIOD_NS, 'node': ms}
                        for i, ms in enumerate(times_ms)]


def test_latency_plot_without_matplotlib_is_drawn_with_opencv(tmp_path, monkeypatch):
    import cv2
    cameras = [_Camera('front', [30, 40, 35, 200]), _Camera('rear', [10, 12, 11, 9])]
    for name in [m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)      # import matplotlib fails
    path = report.plot_latency(cameras, str(tmp_path / 'latency.png'))
    picture = cv2.imread(path)
    assert picture.shape == (360, 800, 3)
    assert (picture != 255).any(axis=2).sum() > 1000            # lines and text drawn
    assert report.plot_latency([_Camera('none', [])], str(tmp_path / 'x.png')) is None


def test_overlay_panel_puts_classes_and_drivable_side_by_side():
    rgb = np.full((60, 80, 3), 100, np.uint8)
    color = np.zeros((60, 80, 3), np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[30:] = 255
    panel = report.overlay_panel(rgb, color, mask, box=(40, 40))
    assert panel.shape == (30, 40 + 4 + 40, 3)
    right = panel[:, 44:]
    assert right[25, 20, 1] > right[25, 20, 0]                   # green where drivable
    assert tuple(right[5, 20]) == (100, 100, 100)


@pytest.mark.parametrize('height, width, size', [
    (1080, 1920, (400, 225)), (1920, 1080, (225, 400)), (10, 10, (400, 400)),
    (30, 600, (400, 20)), (4000, 200, (20, 400))])
def test_an_overlay_half_is_the_frame_fitted_into_the_box(height, width, size):
    assert report.panel_size(height, width) == size


@pytest.mark.parametrize('height, width', [(40000, 1), (1, 40000), (2100, 100)])
def test_a_frame_beyond_the_aspect_limit_gets_no_panel(height, width):
    with pytest.raises(InvalidValueError, match=rf'^the frame is {width}x{height} \(W x H\), '
                                                r'an aspect ratio beyond 20:1$'):
        report.panel_size(height, width)


def test_a_40000x1_frame_is_evaluated_without_a_giant_overlay(tmp_path, monkeypatch, caplog):
    """#19.2: the 120 kB frame once asked for a 16,000,000 x 400 overlay (19 GB)."""
    import cv2
    resize = cv2.resize

    def bounded_resize(src, dsize, *args, **kwargs):
        assert dsize[0] * dsize[1] <= 1_000_000, f'resize to {dsize}'     # not the memory
        return resize(src, dsize, *args, **kwargs)

    monkeypatch.setattr(cv2, 'resize', bounded_resize)
    store = bh.typestore()
    tall = np.full((40000, 1, 3), 90, np.uint8)
    second = bh.START_NS + bh.PERIOD_NS
    bag = bh.write_rosbag2(tmp_path / 'in', [
        ('/cam/image_raw', bh.image_msg(store, tall, bh.START_NS), bh.START_NS),
        ('/cam/image_raw', bh.image_msg(store, bh.frame(1), second), second)])
    summary = evaluate_bag(str(bag), bh.model_path(), str(tmp_path / 'out'), progress=False,
                           overlays=2)
    assert summary['status'] == 'complete' and summary['frames'] == 2   # the frame is served
    note = 'frame 0: no overlay: the frame is 1x40000 (W x H), an aspect ratio beyond 20:1'
    assert summary['cameras']['cam']['overlays_left_out'] == [note]
    warnings = [r.getMessage() for r in caplog.records if 'no overlay' in r.getMessage()]
    assert warnings == [f'/cam/image_raw {note}'] and '\n' not in warnings[0]
    assert f'cam {note}' in (tmp_path / 'out' / 'report.md').read_text().splitlines()
    (overlay,) = (tmp_path / 'out' / 'overlays').glob('*.png')
    assert overlay.name == 'cam_frame_1.png'
    assert cv2.imread(str(overlay)).shape == (300, 804, 3)    # 64x48 fitted into 400x400
    labels = bh.read_bag(tmp_path / 'out' / 'in_segmentation')['/cam/segmentation/labels']
    assert (labels[0][1].height, labels[0][1].width) == (40000, 1)
