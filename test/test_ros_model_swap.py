"""The ROS-free parts of the node's model outputs and model swap: mask and probability
images, publish_probabilities, the swap's parameter checks, loading and the hand-over of a
new pipeline to the worker between two batches. The live behaviour is in
test_ros_model_swap_live.py."""
import threading
import time
import types

import numpy as np
import pytest

from seg_perception.errors import InvalidValueError
from seg_perception.ros import frame_slots, outputs, params, worker
from seg_perception.ros.diagnostics import CameraStats
from seg_perception.ros.model_swap import PipelineHandover, SwapRefused, load_pipeline
from test_ros_node_logic import frame


def result_with_heads():
    labels = np.zeros((4, 6), np.uint8)
    return types.SimpleNamespace(
        labels=labels, drivable_mask=np.full((4, 6), 255, np.uint8), confidence=None,
        color=None, masks={'lane_lines': np.full((4, 6), 255, np.uint8)},
        probabilities={'car': np.full((4, 6), 51, np.uint8),
                       'road': np.full((4, 6), 204, np.uint8)})


def test_names_that_are_not_ros_name_tokens_become_valid_topic_kinds():
    # Cityscapes' 'traffic light' and a contract's 'lane lines' must still make topics.
    assert outputs.probability_kind('traffic light') == 'probability/traffic_light'
    assert outputs.mask_kind('lane lines') == 'lane_lines'
    assert outputs.output_kinds(outputs.OutputOptions(drivable=False,
                                                      probabilities=('traffic light',)),
                                ['lane-lines']) == ['labels', 'lane_lines',
                                                    'probability/traffic_light']
    with pytest.raises(InvalidValueError, match='rename the mask'):
        outputs.output_kinds(outputs.OutputOptions(), ['drivable mask'])


def test_result_images_give_every_mask_and_the_probabilities_asked_for():
    options = outputs.OutputOptions(drivable=False, probabilities=('car',))
    images = outputs.result_images(result_with_heads(), options)
    assert [(kind, encoding) for kind, _, encoding in images] == [
        ('labels', 'mono8'), ('lane_lines', 'mono8'), ('probability/car', 'mono8')]
    assert images[2][1][0, 0] == 51
    assert outputs.output_topic('front', outputs.probability_kind('car')) == \
        'front/segmentation/probability/car'
    # A result without extra heads (a plain model, a stand-in) gives the usual images.
    plain = types.SimpleNamespace(labels=np.zeros((2, 2), np.uint8), drivable_mask=None)
    assert [k for k, _, _ in outputs.result_images(plain, outputs.OutputOptions(
        drivable=False, probabilities=('car',)))] == ['labels']


def test_output_kinds_name_the_publishers_and_refuse_a_mask_named_like_an_output():
    options = outputs.OutputOptions(color=True, probabilities=('car', 'road'))
    assert outputs.output_kinds(options, ['lane_lines']) == [
        'labels', 'drivable_mask', 'color', 'lane_lines', 'probability/car',
        'probability/road']
    with pytest.raises(InvalidValueError, match=r'model mask labels: the name of another'):
        outputs.output_kinds(options, ['lane_lines', 'labels'])


@pytest.mark.parametrize('value,expected', [
    (None, ()), ([], ()), (['car', 'road'], ('car', 'road')), ('car, road', ('car', 'road'))])
def test_publish_probabilities_takes_a_list_or_a_comma_separated_string(value, expected):
    values = {} if value is None else {'publish_probabilities': value}
    config = params.build_config(values, check_model_file=False)
    assert config.publish_probabilities == expected


def test_publish_probabilities_of_another_type_is_a_one_line_error():
    with pytest.raises(params.ParameterError, match=r"'publish_probabilities': expected class"):
        params.build_config({'publish_probabilities': [1, 2]}, check_model_file=False)


def test_a_probability_the_model_lacks_names_it_and_what_the_model_has():
    params.check_probabilities(['car'], ['car', 'road'])
    with pytest.raises(params.ParameterError) as raised:
        params.check_probabilities(['car', 'bus'], ['car', 'road'])
    message = str(raised.value)
    assert message.startswith("parameter 'publish_probabilities': bus not among the model's "
                              'probability outputs (it has: car, road)')
    assert 'export --probabilities' in message and 'probabilities:' in message
    assert '\n' not in message
    with pytest.raises(params.ParameterError, match=r'\(it has: none\)'):
        params.check_probabilities(['car'], [])


def test_swapped_config_changes_only_the_model_parameters(tmp_path):
    old = params.build_config({'cameras': ['front'], 'drivable_classes': ['road']},
                              check_model_file=False)
    model = tmp_path / 'other.onnx'
    model.write_bytes(b'onnx')
    new = params.swapped_config(old, {'model': str(model), 'precision': 'fp16'})
    assert (new.model_path, new.precision, new.backend) == (str(model), 'fp16', old.backend)
    assert (new.cameras, new.drivable_classes) == (old.cameras, old.drivable_classes)
    with pytest.raises(params.ParameterError, match=r"'model': file not found: .*missing"):
        params.swapped_config(old, {'model': str(tmp_path / 'missing.onnx')})
    with pytest.raises(params.ParameterError, match=r"'backend': 'cuda' is not one of"):
        params.swapped_config(old, {'backend': 'cuda'})
    with pytest.raises(params.ParameterError, match=r"'threads' is read-only"):
        params.swapped_config(old, {'threads': 2})


# -- loading and the hand-over ---------------------------------------------------------
class TaggedPipeline:
    """Labels every pixel ``tag``; ``gate`` (an Event) holds process() until set."""

    def __init__(self, tag, gate=None):
        self.tag, self.gate = tag, gate
        self.started = threading.Event()

    def describe(self):
        return {'name': f'fake{self.tag}', 'precision': 'fp32'}

    def process(self, frames, encodings=None):
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        return [types.SimpleNamespace(labels=np.full(f.shape[:2], self.tag, np.uint8))
                for f in frames]


def test_load_pipeline_logs_progress_and_refuses_with_the_reason():
    lines = []
    config = types.SimpleNamespace(model_path='/m.onnx', backend='auto', precision='fp32')
    loaded = load_pipeline(config, lambda c: TaggedPipeline(1), lines.append)
    assert loaded.tag == 1
    assert lines == ['model swap: loading /m.onnx (backend auto, precision fp32)',
                     'model swap: loaded /m.onnx (fake1, fp32)']

    def broken(config):
        raise RuntimeError('no such backend')

    with pytest.raises(SwapRefused, match=r'^cannot use model /m.onnx: no such backend$'):
        load_pipeline(config, broken, lines.append)

    def lacks_car(pipeline):
        raise InvalidValueError('car not among the probabilities')

    with pytest.raises(SwapRefused, match='car not among the probabilities'):
        load_pipeline(config, lambda c: TaggedPipeline(1), lines.append, check=lacks_car)


def test_handover_keeps_only_the_newest_offer_and_signals_when_taken():
    handover = PipelineHandover()
    installed = []
    assert not handover.take(installed.append)
    first = handover.offer('a')
    second = handover.offer('b', on_swap=lambda: installed.append('swapped'))
    assert handover.take(installed.append)
    assert installed == ['b', 'swapped'] and second.is_set() and not first.is_set()
    assert not handover.take(installed.append)


def test_the_worker_swaps_between_batches_never_within_one():
    old_gate = threading.Event()
    old, new = TaggedPipeline(1, old_gate), TaggedPipeline(2)
    published, swapped_at = [], []
    slots = frame_slots.FrameSlots(['front', 'back'])
    processor = worker.FrameProcessor(
        old, {c: CameraStats() for c in ('front', 'back')},
        lambda f, r: published.append((f.camera, int(r.labels[0, 0]))),
        lambda: 10 * 10 ** 9)
    runner = worker.InferenceWorker(slots, processor, pytest.fail, poll_s=0.01)
    runner.start()
    try:
        slots.put(frame('front'))
        slots.put(frame('back'))
        assert old.started.wait(5)                  # the old model is in its batch
        done = processor.replace_pipeline(new, lambda: swapped_at.append(len(published)))
        time.sleep(0.05)
        assert not done.is_set()                    # not while that batch runs
        old_gate.set()
        assert done.wait(5)
        assert swapped_at == [2]                    # after both frames of the old batch
        slots.put(frame('front'))
        for _ in range(100):
            if len(published) == 3:
                break
            time.sleep(0.01)
    finally:
        runner.stop()
    assert published[:2] == [('front', 1), ('back', 1)] or \
        published[:2] == [('back', 1), ('front', 1)]
    assert published[2] == ('front', 2) and processor.pipeline is new


def test_the_worker_completes_a_swap_while_no_frames_come():
    processor = worker.FrameProcessor(TaggedPipeline(1), {'front': CameraStats()},
                                      pytest.fail, lambda: 0)
    runner = worker.InferenceWorker(frame_slots.FrameSlots(['front']), processor, pytest.fail,
                                    poll_s=0.01)
    runner.start()
    try:
        new = TaggedPipeline(2)
        assert processor.replace_pipeline(new).wait(5)
        assert processor.pipeline is new
    finally:
        runner.stop()
