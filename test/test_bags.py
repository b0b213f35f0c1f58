"""bag-eval: reading bags of every kind, the output bag, ground truth, damaged input."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

import bag_helpers as bh
import runtime_models as rm
from seg_perception import cli
from seg_perception.errors import InvalidValueError
from seg_perception.replay.bag_io import (IMAGE, BagError, OutputError, camera_namespace,
                                          open_bag, output_topic)
from seg_perception.replay.bag_eval import evaluate_bag
from seg_perception.replay.cameras import Camera


def evaluate(bag, out, **kwargs):
    kwargs.setdefault('progress', False)
    kwargs.setdefault('overlays', 1)
    return evaluate_bag(str(bag), bh.model_path(), str(out), **kwargs)


def stamp_of(msg):
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


# -- camera names -----------------------------------------------------------------------------

@pytest.mark.parametrize('topic, namespace', [
    ('/cam_front/image_raw', 'cam_front'),
    ('/camera/front/image_raw/compressed', 'camera/front'),
    ('cam/image_rect_color', 'cam'),                 # relative ROS 1 name
    ('/front_cam/rgb', 'front_cam/rgb'),             # no image token: the whole topic
    ('/image_raw', 'camera'),
])
def test_camera_namespace_strips_transport_and_image_tokens(topic, namespace):
    assert camera_namespace(topic) == namespace
    assert Camera(topic, IMAGE, camera_namespace(topic), 0).name == namespace.replace('/', '_')
    assert output_topic(namespace, 'labels') == f'/{namespace}/segmentation/labels'


# -- round trip ---------------------------------------------------------------------------------

@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_one_labels_and_drivable_message_per_frame_with_the_input_header(
        tmp_path, storage):
    messages = bh.two_camera_messages(count=4)
    bag = bh.write_rosbag2(tmp_path / 'in', messages, storage=storage)
    summary = evaluate(bag, tmp_path / 'out', storage=storage)
    assert summary['status'] == 'complete' and summary['frames'] == 8
    out_bag = tmp_path / 'out' / 'in_segmentation'
    assert bh.storage_file(out_bag).suffix == ('.mcap' if storage == 'mcap' else '.db3')
    written = bh.read_bag(out_bag)
    for camera, topic in (('cam_front', '/cam_front/image_raw'),
                          ('cam_rear', '/cam_rear/image_raw/compressed')):
        inputs = [(log, msg) for t, msg, log in messages if t == topic]
        for kind, encoding in (('labels', 'mono8'), ('drivable_mask', 'mono8'),
                               ('color', 'rgb8')):
            outputs = written[f'/{camera}/segmentation/{kind}']
            assert len(outputs) == len(inputs)
            for (in_log, in_msg), (out_log, out_msg) in zip(inputs, outputs):
                assert out_log == in_log
                assert stamp_of(out_msg) == stamp_of(in_msg)
                assert out_msg.header.frame_id == in_msg.header.frame_id
                assert out_msg.encoding == encoding
        # the labels are the model's answer for the frame that was sent
        for index, (_, labels) in enumerate(written[f'/{camera}/segmentation/labels']):
            pixels = np.asarray(labels.data).reshape(labels.height, labels.width)
            np.testing.assert_array_equal(pixels, rm.expected_labels(bh.frame(index)))
            drivable = written[f'/{camera}/segmentation/drivable_mask'][index][1]
            mask = np.asarray(drivable.data).reshape(drivable.height, drivable.width)
            np.testing.assert_array_equal(mask == 255, pixels == 0)    # 'road' is drivable
    assert '/cam_front/image_raw' not in written          # inputs only with copy_inputs


def test_ros1_bag_with_relative_topics_and_camera_info(tmp_path):
    store = bh.typestore(ros1=True)
    messages = []
    for index in range(3):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        picture = bh.frame(index)
        messages.append(('cam/image_raw', bh.image_msg(store, picture[:, :, ::-1].copy(),
                                                       stamp, encoding='bgr8'), stamp))
        messages.append(('cam/camera_info', bh.camera_info_msg(store, 64, 48, stamp), stamp))
    bag = bh.write_ros1(tmp_path / 'drive.bag', messages)
    summary = evaluate(bag, tmp_path / 'out', copy_inputs=True)
    assert summary['cameras']['cam']['frames'] == 3
    assert summary['cameras']['cam']['camera_info_topic'] == 'cam/camera_info'
    assert summary['bag_format'] == 'ROS 1 bag'
    written = bh.read_bag(tmp_path / 'out' / 'drive_segmentation')
    assert [stamp_of(m) for _, m in written['/cam/segmentation/labels']] == \
        [stamp_of(m) for t, m, _ in messages if t == 'cam/image_raw']
    labels = written['/cam/segmentation/labels'][1][1]
    np.testing.assert_array_equal(np.asarray(labels.data).reshape(48, 64),
                                  rm.expected_labels(bh.frame(1)))
    # copied through, as ROS 2 messages (no Header.seq)
    infos = written['/cam/camera_info']
    assert len(infos) == 3 and list(infos[0][1].k) == list(range(9))
    assert not hasattr(infos[0][1].header, 'seq')
    assert len(written['/cam/image_raw']) == 3


def test_rosbag2_quirks_folder_named_bag_old_metadata_no_metadata_lone_file(tmp_path):
    bag = bh.write_rosbag2(tmp_path / 'rec.bag', bh.two_camera_messages(count=2))
    with open_bag(bag) as source:           # a rosbag2 folder named *.bag
        assert source.description == 'rosbag2 folder'
        assert source.topics['/cam_front/image_raw'].count == 2
    # metadata version 4 (Foxy era): no files / custom_data / ros_distro / type hashes
    old = tmp_path / 'old'
    shutil.copytree(bag, old)
    meta = yaml.safe_load((old / 'metadata.yaml').read_text())
    info = meta['rosbag2_bagfile_information']
    info['version'] = 4
    for key in ('files', 'custom_data', 'ros_distro'):
        info.pop(key)
    for topic in info['topics_with_message_count']:
        topic['topic_metadata'].pop('type_description_hash')
    (old / 'metadata.yaml').write_text(yaml.safe_dump(meta))
    summary = evaluate(old, tmp_path / 'out_old')
    assert summary['frames'] == 4 and summary['status'] == 'complete'
    # recorder killed before writing metadata.yaml
    bare = tmp_path / 'bare'
    shutil.copytree(bag, bare)
    (bare / 'metadata.yaml').unlink()
    assert evaluate(bare, tmp_path / 'out_bare')['frames'] == 4
    # the .mcap file on its own
    lone = bh.storage_file(bag)
    assert evaluate(lone, tmp_path / 'out_lone', topics=['cam_front/image_raw'])['frames'] == 2


def test_raw_and_compressed_of_one_camera_evaluate_the_raw_topic(tmp_path):
    store = bh.typestore()
    messages = []
    for index in range(2):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        messages.append(('/cam/image_raw', bh.image_msg(store, bh.frame(index), stamp), stamp))
        messages.append(('/cam/image_raw/compressed',
                         bh.compressed_msg(store, bh.frame(index), stamp), stamp))
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    summary = evaluate(bag, tmp_path / 'out')
    assert list(summary['cameras']) == ['cam']
    assert summary['cameras']['cam']['topic'] == '/cam/image_raw'
    with pytest.raises(BagError, match='same camera'):
        evaluate(bag, tmp_path / 'out2', topics=['/cam/image_raw', '/cam/image_raw/compressed'])


def test_a_corrupt_frame_is_skipped_and_counted(tmp_path):
    messages = bh.two_camera_messages(count=3)
    broken = messages[3][1]                    # cam_rear, frame 1: cut the PNG in half
    broken.data = broken.data[:len(broken.data) // 2]
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    summary = evaluate(bag, tmp_path / 'out')
    rear = summary['cameras']['cam_rear']
    assert rear['frames'] == 2 and rear['skipped'] == 1
    assert 'PNG' in rear['skip_reasons'][0]
    assert summary['status'] == 'complete'


# -- ground truth -------------------------------------------------------------------------------

def test_label_topic_matches_by_stamp_in_either_order(tmp_path):
    store = bh.typestore()
    messages = []
    for index in range(4):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        picture = bh.frame(index)
        truth = rm.expected_labels(picture)
        if index == 3:
            truth = np.zeros_like(truth)         # one wrong label: everything 'road'
        label = ('/cam/ground_truth/labels', bh.image_msg(store, truth, stamp, 'mono8'), stamp)
        image = ('/cam/image_raw', bh.image_msg(store, picture, stamp), stamp + 1)
        # labels logged before their frame for even frames, after for odd ones
        messages += [label, image] if index % 2 == 0 else [image, label]
    messages.append(('/cam/ground_truth/labels',
                     bh.image_msg(store, np.zeros((48, 64), np.uint8), bh.START_NS + 99, 'mono8'),
                     bh.START_NS + 10 ** 9))         # a label without a frame
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    summary = evaluate(bag, tmp_path / 'out', label_topics=['/cam/ground_truth/labels'])
    truth = summary['ground_truth']
    assert truth['kind'] == 'classes' and truth['frames_scored'] == 4
    assert truth['labels_matched'] == 4 and truth['labels_unmatched'] == 1
    assert truth['not_scored'] == {'pixels': 0, 'labelled': 4 * 48 * 64, 'fraction': 0.0,
                                   'rule': 'label value 255 (the ignore id)'}   # test model's
    assert 'leaves out' not in (tmp_path / 'out' / 'report.md').read_text()
    assert list(summary['cameras']) == ['cam']      # the label topic is not a camera
    assert summary['num_images'] == 4
    assert 0.2 < summary['miou'] < 1.0              # three perfect frames, one wrong
    assert summary['per_class_iou']['sky'] < 1.0
    perfect = evaluate(bag, tmp_path / 'out3', label_topics=['cam=/cam/ground_truth/labels'],
                       topics=['/cam/image_raw'])
    assert perfect['miou'] == pytest.approx(summary['miou'])
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['miou'] == summary['miou']
    assert metrics['cameras']['cam']['metrics']['num_images'] == 4


def _drivable_labelled_bag(tmp_path):
    """Two frames whose drivable masks are exact but mark the top 5 rows 128 (a bonnet)."""
    store = bh.typestore()
    messages = []
    for index in range(2):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        picture = bh.frame(index)
        road = rm.expected_labels(picture) == 0
        mask = np.where(road, 255, 0).astype(np.uint8)
        mask[:5] = 128                                      # ignored
        messages.append(('/cam/image_raw', bh.image_msg(store, picture, stamp), stamp))
        messages.append(('/cam/ground_truth/drivable_mask', bh.image_msg(store, mask, stamp,
                                                                         'mono8'), stamp))
    return bh.write_rosbag2(tmp_path / 'in', messages)


def test_drivable_ground_truth_scores_the_drivable_mask(tmp_path):
    bag = _drivable_labelled_bag(tmp_path)
    summary = evaluate(bag, tmp_path / 'out', label_topics=['/cam/ground_truth/drivable_mask'])
    assert summary['ground_truth']['kind'] == 'drivable'    # auto, from the topic name
    assert summary['class_names'] == ['not drivable', 'drivable']
    assert summary['drivable_iou'] == pytest.approx(1.0)
    assert summary['num_pixels'] == 2 * (48 - 5) * 64


def test_pixels_the_labels_leave_out_are_said_beside_the_scores(tmp_path, capsys):
    """A score that skips pixels (a bonnet marked 128) says how many, wherever it is shown:
    metrics.json, the report and the printed line."""
    bag = _drivable_labelled_bag(tmp_path)
    assert _cli_bag_eval(bag, tmp_path / 'out', '--label-topic',
                         '/cam/ground_truth/drivable_mask') == 0
    said = '10.4% of the labelled pixels (label values other than 0 and 255)'
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith('ground truth (drivable)')]
    assert len(printed) == 1 and printed[0].endswith(f'; not scored: {said}'), printed
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['ground_truth']['not_scored'] == {
        'pixels': 2 * 5 * 64, 'labelled': 2 * 48 * 64, 'fraction': round(5 / 48, 6),
        'rule': 'label values other than 0 and 255'}
    assert f'Every score below leaves out {said}' in (tmp_path / 'out' / 'report.md').read_text()


def _labels_folder(tmp_path, count, name):
    folder = tmp_path / 'labels'
    (folder / 'cam_front').mkdir(parents=True)
    for index in range(count):
        truth = rm.expected_labels(bh.frame(index))
        cv2.imwrite(str(folder / 'cam_front' / name(index)), truth)
    return folder


def test_label_folder_matched_by_stamp_and_by_name(tmp_path):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=3))
    by_stamp = _labels_folder(tmp_path, 3, lambda i: f'{bh.START_NS + i * bh.PERIOD_NS}.png')
    summary = evaluate(bag, tmp_path / 'out', labels_dir=str(by_stamp))
    assert summary['ground_truth']['frames_scored'] == 3     # cam_front only
    assert summary['miou'] == pytest.approx(1.0)
    assert 'metrics' in summary['cameras']['cam_front']
    assert 'metrics' not in summary['cameras']['cam_rear']
    shutil.rmtree(by_stamp)
    by_name = _labels_folder(tmp_path, 2, lambda i: f'frame{i:04d}.png')
    summary = evaluate(bag, tmp_path / 'out2', labels_dir=str(by_name), labels_match='name')
    assert summary['ground_truth']['frames_scored'] == 2
    assert summary['miou'] == pytest.approx(1.0)


def test_a_label_of_the_wrong_size_stops_the_run_with_a_partial_report(tmp_path):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=3))
    folder = _labels_folder(tmp_path, 3, lambda i: f'{bh.START_NS + i * bh.PERIOD_NS}.png')
    bad = folder / 'cam_front' / f'{bh.START_NS + bh.PERIOD_NS}.png'
    cv2.imwrite(str(bad), np.zeros((10, 10), np.uint8))
    with pytest.raises(BagError, match=r'10x10.*camera resolution'):
        evaluate(bag, tmp_path / 'out', labels_dir=str(folder))
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['status'] == 'partial' and bad.name in metrics['error']
    assert metrics['ground_truth']['frames_scored'] == 1


def test_label_topic_that_is_not_mono8_is_an_error(tmp_path):
    store = bh.typestore()
    stamp = bh.START_NS
    messages = [('/cam/image_raw', bh.image_msg(store, bh.frame(0), stamp), stamp),
                ('/cam/labels', bh.image_msg(store, bh.frame(0), stamp), stamp)]
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    with pytest.raises(BagError, match='mono8'):
        evaluate(bag, tmp_path / 'out', topics=['/cam/image_raw'], label_topics=['/cam/labels'])


def test_label_topic_of_a_camera_that_is_not_evaluated_is_an_error(tmp_path):
    store = bh.typestore()
    messages = bh.two_camera_messages(count=1)
    truth = bh.image_msg(store, np.zeros((48, 64), np.uint8), bh.START_NS, 'mono8')
    messages.append(('/cam_rear/ground_truth/labels', truth, bh.START_NS + 2000))
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    with pytest.raises(BagError, match='belongs to camera cam_rear, which is not evaluated'):
        evaluate(bag, tmp_path / 'out', topics=['/cam_front/image_raw'],
                 label_topics=['/cam_rear/ground_truth/labels'])
    summary = evaluate(bag, tmp_path / 'out', label_topics=['/cam_rear/ground_truth/labels'])
    assert summary['ground_truth']['source'].endswith('-> cam_rear')


# -- damaged bags and bad requests ------------------------------------------------------------

def _big_frames_bag(tmp_path, kind):
    """12 frames of 320x240 raw rgb8 (230 kB each: several 1 MiB MCAP chunks)."""
    store = bh.typestore(ros1=kind == 'ros1')
    messages = []
    for index in range(12):
        stamp = bh.START_NS + index * bh.PERIOD_NS
        messages.append(('/cam/image_raw', bh.image_msg(store, bh.frame(index, 240, 320), stamp),
                         stamp))
    if kind == 'ros1':
        bag = bh.write_ros1(tmp_path / 'cut.bag', messages)
        return bag, bag
    bag = bh.write_rosbag2(tmp_path / 'cut', messages, storage=kind)
    return bag, bh.storage_file(bag)


@pytest.mark.parametrize('kind', ['mcap', 'sqlite3', 'ros1'])
def test_truncated_bag_keeps_the_frames_before_the_cut_and_reports_partial(tmp_path, kind):
    bag, data_file = _big_frames_bag(tmp_path, kind)
    bh.cut(data_file, 0.6)
    with pytest.raises(BagError) as raised:
        evaluate(bag, tmp_path / 'out')
    message = str(raised.value)
    assert str(data_file) in message and 'partial output' in message
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    frames = metrics['frames']
    assert metrics['status'] == 'partial' and 0 < frames < 12
    assert metrics['error']
    written = bh.read_bag(tmp_path / 'out' / 'cut_segmentation')
    assert len(written['/cam/segmentation/labels']) == frames
    assert len(written['/cam/segmentation/drivable_mask']) == frames
    assert 'PARTIAL' in (tmp_path / 'out' / 'report.md').read_text()


def test_truncated_bag_on_the_command_line_exits_non_zero_with_the_message(tmp_path, capsys):
    bag, data_file = _big_frames_bag(tmp_path, 'mcap')
    bh.cut(data_file, 0.6)
    code = cli.main(['bag-eval', '--bag', str(bag), '--model', bh.model_path(), '--output',
                     str(tmp_path / 'out'), '--no-progress'])
    assert code == 2
    error = capsys.readouterr().err
    assert 'damaged or cut short' in error and str(data_file) in error
    assert (tmp_path / 'out' / 'report.html').is_file()


def test_missing_topic_unsupported_type_and_no_images_are_clear_errors(tmp_path):
    store = bh.typestore()
    info = bh.camera_info_msg(store, 64, 48, bh.START_NS)
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=1) +
                           [('/cam_front/camera_info', info, bh.START_NS)])
    with pytest.raises(BagError, match=r'topic /nope is not in .*cam_front/image_raw'):
        evaluate(bag, tmp_path / 'o1', topics=['/nope'])
    with pytest.raises(BagError, match='holds sensor_msgs/msg/CameraInfo messages'):
        evaluate(bag, tmp_path / 'o2', topics=['/cam_front/camera_info'])
    only_info = bh.write_rosbag2(tmp_path / 'info_only', [('/cam/camera_info', info, 1)])
    with pytest.raises(BagError, match='no camera image topics'):
        evaluate(only_info, tmp_path / 'o3')
    with pytest.raises(FileNotFoundError, match='bag not found'):
        evaluate(tmp_path / 'absent', tmp_path / 'o4')
    not_a_bag = tmp_path / 'notes.txt'
    not_a_bag.write_text('hello')
    with pytest.raises(BagError, match='not a bag'):
        evaluate(not_a_bag, tmp_path / 'o5')


def test_existing_output_bag_needs_overwrite(tmp_path):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=1))
    evaluate(bag, tmp_path / 'out')
    with pytest.raises(BagError, match='exists already'):
        evaluate(bag, tmp_path / 'out')
    assert evaluate(bag, tmp_path / 'out', overwrite=True)['frames'] == 2
    code = cli.main(['bag-eval', '--bag', str(bag), '--model', str(tmp_path / 'none.onnx'),
                     '--output', str(tmp_path / 'o'), '--no-progress'])
    assert code == 2


def test_output_messages_deserialize_with_real_ros2_types(tmp_path):
    """What `ros2 bag play` would publish: the bytes must be valid Humble CDR."""
    from conftest import require_ros
    require_ros()
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image
    messages = bh.two_camera_messages(count=2)
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    evaluate(bag, tmp_path / 'out', copy_inputs=True)
    with bh.open_bag_for_test(tmp_path / 'out' / 'in_segmentation') as source:
        topics = ['/cam_rear/segmentation/labels', '/cam_rear/segmentation/color',
                  '/cam_rear/image_raw/compressed']
        seen = {}
        for topic, _, _, raw in source.messages(topics):
            kind = CompressedImage if topic.endswith('compressed') else Image
            seen.setdefault(topic, []).append(deserialize_message(raw, kind))
    labels = seen['/cam_rear/segmentation/labels'][1]
    assert (labels.header.stamp.sec, labels.header.stamp.nanosec, labels.header.frame_id) == \
        (bh.START_NS // 10 ** 9, bh.PERIOD_NS + 1000, 'rear')
    pixels = np.frombuffer(bytes(labels.data), np.uint8).reshape(labels.height, labels.width)
    np.testing.assert_array_equal(pixels, rm.expected_labels(bh.frame(1)))
    assert seen['/cam_rear/segmentation/color'][0].encoding == 'rgb8'
    assert seen['/cam_rear/image_raw/compressed'][0].format == 'png'


# -- output that cannot be written (#19.7) ----------------------------------------------------

def _cli_bag_eval(bag, out, *extra):
    return cli.main(['bag-eval', '--bag', str(bag), '--model', bh.model_path(), '--output',
                     str(out), '--no-progress', *extra])


def _one_line(error: str) -> str:
    """The CLI's error line; the test fails on a traceback or on more than one line."""
    assert 'Traceback' not in error
    lines = [line for line in error.splitlines() if line.startswith('seg-perception')]
    assert len(lines) == 1, error
    return lines[0]


def test_an_output_folder_that_cannot_be_created_is_one_line_naming_it(tmp_path, capsys):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=1))
    regular = tmp_path / 'notes.txt'
    regular.write_text('not a folder')
    assert _cli_bag_eval(bag, regular / 'out') == 2          # root can't create it either
    assert _one_line(capsys.readouterr().err) == (
        f'seg-perception bag-eval: error: cannot create the output folder {regular / "out"}: '
        'Not a directory')
    assert _cli_bag_eval(bag, regular) == 2
    assert _one_line(capsys.readouterr().err) == (
        f'seg-perception bag-eval: error: the output folder {regular} is a file, not a folder')
    # rosbags' own error (not an OSError) for an output bag path taken by a dangling link
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'in_segmentation').symlink_to(tmp_path / 'nowhere')
    assert _cli_bag_eval(bag, tmp_path / 'out') == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith('seg-perception bag-eval: error: cannot create the output bag '
                           f'{tmp_path / "out" / "in_segmentation"}: ')


def _full_disk_after(monkeypatch, writes: int, close_too: bool = False):
    """The output bag's writer runs out of space after ``writes`` messages."""
    from rosbags.rosbag2 import Writer
    write, close = Writer.write, Writer.close
    count = [0]

    def full_write(self, *args):
        count[0] += 1
        if count[0] > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(self, *args)

    def full_close(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Writer, 'write', full_write)
    if close_too:
        monkeypatch.setattr(Writer, 'close', full_close)
    return close


def test_a_full_disk_closes_the_bag_writes_the_partial_report_and_says_one_line(
        tmp_path, monkeypatch, capsys):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=3))
    _full_disk_after(monkeypatch, writes=2 * 3)        # 3 output messages per frame
    assert _cli_bag_eval(bag, tmp_path / 'out') == 2
    out_bag = tmp_path / 'out' / 'in_segmentation'
    line = _one_line(capsys.readouterr().err)
    assert line == (f'seg-perception bag-eval: error: cannot write the output bag '
                    f'{out_bag / "in_segmentation.mcap"}: No space left on device (partial '
                    f'output: 2 frames in {out_bag}; report in {tmp_path / "out"})')
    assert (out_bag / 'metadata.yaml').is_file()             # closed: a bag ros2 can play
    assert len(bh.read_bag(out_bag)['/cam_front/segmentation/labels']) == 1
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['status'] == 'partial' and metrics['frames'] == 2
    assert metrics['output_bag_closed'] is True
    assert 'No space left on device' in metrics['error']
    assert 'PARTIAL' in (tmp_path / 'out' / 'report.md').read_text()


def test_a_bag_that_cannot_be_closed_still_gets_its_partial_report(tmp_path, monkeypatch):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=3))
    _full_disk_after(monkeypatch, writes=3, close_too=True)
    out_bag = tmp_path / 'out' / 'in_segmentation'
    with pytest.raises(OutputError) as raised:
        evaluate(bag, tmp_path / 'out')
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value) == (
        f'cannot write the output bag {out_bag / "in_segmentation.mcap"}: No space left on '
        f'device (partial output: 1 frames in {out_bag}; cannot close the output bag '
        f'{out_bag}: No space left on device; report in {tmp_path / "out"})')
    assert not (out_bag / 'metadata.yaml').exists()
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['status'] == 'partial' and metrics['output_bag_closed'] is False
    assert 'not closed: no metadata.yaml' in (tmp_path / 'out' / 'report.md').read_text()


def test_a_report_that_cannot_be_written_is_one_line_and_the_bag_is_complete(
        tmp_path, monkeypatch, capsys):
    from seg_perception import files
    write_text = files.write_text

    def full(path, text):
        if path.endswith('report.md'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_text(path, text)

    monkeypatch.setattr(files, 'write_text', full)
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=2))
    assert _cli_bag_eval(bag, tmp_path / 'out') == 2
    out_bag = tmp_path / 'out' / 'in_segmentation'
    assert _one_line(capsys.readouterr().err) == (
        f'seg-perception bag-eval: error: cannot write {tmp_path / "out" / "report.md"}: No '
        f'space left on device (the output bag {out_bag} holds all 4 frames)')
    assert (out_bag / 'metadata.yaml').is_file()
    assert len(bh.read_bag(out_bag)['/cam_rear/segmentation/color']) == 2


# -- doubtful cases (#19) ---------------------------------------------------------------------

def test_mcap_magic_followed_by_garbage_is_reported_as_damage(tmp_path):
    from seg_perception.replay.salvage import MCAP_MAGIC
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=1))
    data_file = bh.storage_file(bag)
    data_file.write_bytes(MCAP_MAGIC + bytes(range(256)) * 8)
    for path in (bag, data_file):
        with pytest.raises(BagError) as raised:
            evaluate(path, tmp_path / 'out')
        message = str(raised.value)
        assert 'damaged' in message and 'no message in it can be read' in message
        assert 'no camera image topics' not in message
    assert not (tmp_path / 'out').exists()        # nothing to report: no folder made


def test_a_message_that_does_not_deserialize_is_skipped_and_counted(tmp_path, capsys):
    messages = bh.two_camera_messages(count=4)
    topic, broken, log_ns = messages[2]                # cam_front, frame 1
    messages[2] = (topic, bh.Undeserializable(broken), log_ns)
    bag = bh.write_rosbag2(tmp_path / 'in', messages)
    assert _cli_bag_eval(bag, tmp_path / 'out') == 0
    printed = capsys.readouterr().out
    assert 'cam_front: 3 frames from /cam_front/image_raw (1 skipped)' in printed
    assert 'messages that do not deserialize, skipped: /cam_front/image_raw 1' in printed
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['status'] == 'complete' and metrics['frames'] == 7
    assert metrics['unreadable_messages'] == {'/cam_front/image_raw': 1}
    front = metrics['cameras']['cam_front']
    assert front['skipped'] == 1 and 'cannot be deserialized' in front['skip_reasons'][0]
    assert front['skip_reasons'][0].startswith('frame 1: ')
    written = bh.read_bag(tmp_path / 'out' / 'in_segmentation')
    assert [stamp_of(m) for _, m in written['/cam_front/segmentation/labels']] == \
        [bh.START_NS + i * bh.PERIOD_NS for i in (0, 2, 3)]
    assert '| /cam_front/image_raw | 1 |' in (tmp_path / 'out' / 'report.md').read_text()


def test_one_run_per_output_folder(tmp_path, capsys):
    from seg_perception.replay.bag_io import OutputBag
    from seg_perception.replay.output_folder import claimed
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=1))
    out = tmp_path / 'out'
    with claimed(str(out), str(bag)):                 # another run, half way through
        other = OutputBag(out / 'in_segmentation')
        with pytest.raises(OutputError, match=rf'^the output folder {out} is in use by another '
                                              rf'bag-eval run \(pid {os.getpid()} on .* since '):
            evaluate(bag, out, overwrite=True)
        assert _cli_bag_eval(bag, out, '--overwrite') == 2
        assert 'in use by another bag-eval run' in _one_line(capsys.readouterr().err)
        assert other.path.is_dir()                    # its half-written bag is left alone
        other.close()
    assert evaluate(bag, out, overwrite=True)['frames'] == 2      # free again


def test_one_bag_per_output_folder_and_a_rerun_replaces_its_overlays(tmp_path):
    first = bh.write_rosbag2(tmp_path / 'first', bh.two_camera_messages(count=3))
    second = bh.write_rosbag2(tmp_path / 'second', bh.two_camera_messages(count=2))
    out = tmp_path / 'out'
    evaluate(first, out, overlays=3)
    assert len(list((out / 'overlays').glob('*.png'))) == 6
    for overwrite in (False, True):
        with pytest.raises(InvalidValueError, match=f'holds the report of the bag {first}; one '
                                                    'bag per output folder'):
            evaluate(second, out, overwrite=overwrite)
    assert json.loads((out / 'metrics.json').read_text())['bag'] == str(first)
    assert not (out / 'second_segmentation').exists()
    evaluate(first, out, overlays=1, overwrite=True)          # the same bag again
    assert sorted(p.name for p in (out / 'overlays').glob('*.png')) == \
        ['cam_front_frame_0.png', 'cam_rear_frame_0.png']


_SLOW_CLI = '''
import sys, time
from seg_perception.runtime import pipeline
process = pipeline.SegmentationPipeline.process

def slow(self, *args, **kwargs):      # a slow model: the signal comes in mid-bag
    result = process(self, *args, **kwargs)
    print('FRAME', flush=True)
    time.sleep(0.05)
    return result

pipeline.SegmentationPipeline.process = slow
from seg_perception import cli
sys.exit(cli.main(sys.argv[1:]))
'''


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_stop_signal_closes_the_bag_and_writes_the_partial_report(tmp_path, sig):
    bag = bh.write_rosbag2(tmp_path / 'in', bh.two_camera_messages(count=100))
    out = tmp_path / 'out'
    child = subprocess.Popen(
        [sys.executable, '-c', _SLOW_CLI, 'bag-eval', '--bag', str(bag), '--model',
         bh.model_path(), '--output', str(out), '--no-progress'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == 'FRAME\n'
        child.send_signal(sig)
        _, error = child.communicate(timeout=120)
    finally:
        child.kill()
    name = signal.Signals(sig).name
    assert child.returncode == 128 + sig, error
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['status'] == 'partial' and metrics['error'] == f'RunStopped: stopped by {name}'
    assert 0 < metrics['frames'] < 200
    assert _one_line(error) == (f'seg-perception bag-eval: stopped by {name} (partial output: '
                                f'{metrics["frames"]} frames in {out / "in_segmentation"}; '
                                f'report in {out})')
    assert (out / 'in_segmentation' / 'metadata.yaml').is_file()
    written = bh.read_bag(out / 'in_segmentation')
    assert sum(len(written.get(f'/{c}/segmentation/labels', ()))
               for c in ('cam_front', 'cam_rear')) == metrics['frames']
    assert 'PARTIAL' in (out / 'report.md').read_text()


def test_not_scored_names_its_rule_for_each_kind_of_label():
    from types import SimpleNamespace
    from seg_perception.replay.ground_truth import Scorer
    info = SimpleNamespace(class_names=['road', 'sky'], drivable_ids=[0], num_classes=2,
                           ignore_index=None)
    scorer = Scorer('classes', info)
    scorer.update('cam', np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), 'frame 0')
    assert scorer.not_scored() == {'pixels': 0, 'labelled': 16, 'fraction': 0.0,
                                   'rule': 'none: the model has no ignore id'}
    scorer = Scorer('classes', SimpleNamespace(**{**vars(info), 'ignore_index': 2}))
    label = np.ones((4, 4), np.uint8)
    label[0] = 2
    scorer.update('cam', np.zeros((4, 4), np.uint8), label, 'frame 0')
    assert scorer.not_scored() == {'pixels': 4, 'labelled': 16, 'fraction': 0.25,
                                   'rule': 'label value 2 (the ignore id)'}
