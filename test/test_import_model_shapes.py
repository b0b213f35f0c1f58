"""import-model: the shapes a foreign graph pins (batch, height and width) and the contract
mistakes against the graph that test_import_model.py does not cover."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from import_helpers import TwoHeads, blocky_frame, export
from seg_perception.deploy.contract import ContractError, parse_contract
from seg_perception.deploy.import_model import import_model
from seg_perception.model_info import load_model_info
from seg_perception.runtime.pipeline import SegmentationPipeline

NAMES = ['road', 'sidewalk', 'car', 'pedestrian', 'sky']


def contract(size=(64, 96), output='seg', **classes):
    data = {'input': {'size': list(size)} if size else {},
            'classes': dict({'output': output, 'names': list(NAMES)}, **classes)}
    return parse_contract(data)


class BatchOfOne(torch.nn.Module):
    """A network written for one frame: its global context is pooled over the whole batch
    (``reshape(1, ...)``), as graphs exported with a fixed batch of 1 often are."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.seg = torch.nn.Conv2d(8, 5, 1)

    def forward(self, x):
        features = self.body(x)
        context = features.reshape(1, 8, -1).mean(-1).reshape(1, 8, 1, 1)
        return self.seg(features + 4 * context)


def wrapped_labels(path, batch):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(['labels'], {'images': batch})[0]


def test_fixed_batch_of_one_runs_frame_by_frame(tmp_path):
    foreign = export(BatchOfOne(), tmp_path / 'one.onnx', output_names=('seg',), dynamic=())
    result = import_model(foreign, contract(), str(tmp_path / 'm.onnx'), blocky_frame())
    assert result.info.max_batch == 1
    assert load_model_info(str(tmp_path / 'm.onnx')).max_batch == 1
    frames = [blocky_frame(120, 200, seed=seed) for seed in (1, 2, 3)]
    singles = [wrapped_labels(tmp_path / 'm.onnx', frame[np.newaxis])[0] for frame in frames]
    # Fed three frames at once, the graph mixes them: what the pipeline must not do.
    together = wrapped_labels(tmp_path / 'm.onnx', np.stack(frames))
    assert any((t != s).mean() > 0.05 for t, s in zip(together, singles))
    pipeline = SegmentationPipeline(str(tmp_path / 'm.onnx'), backend='onnxruntime')
    for got, single in zip(pipeline.process(frames), singles):
        np.testing.assert_array_equal(got.labels, single)


def test_dynamic_batch_takes_any_number_of_frames(tmp_path):
    foreign = export(TwoHeads(), tmp_path / 'two.onnx')
    result = import_model(foreign, contract(), str(tmp_path / 'm.onnx'), blocky_frame())
    assert result.info.max_batch is None


def test_fixed_batch_above_one_is_refused(tmp_path):
    path = tmp_path / 'four.onnx'
    onnx.save(identity_graph([4, 3, 64, 96], [4, 5, 64, 96]), str(path))
    with pytest.raises(ContractError, match=r'^input: graph input input has a fixed batch of '
                                            r'4 \(4x3x64x96\)'):
        import_model(str(path), contract(), str(tmp_path / 'm.onnx'), blocky_frame())


def test_size_from_the_graph_or_the_contract(tmp_path):
    fixed = export(TwoHeads(), tmp_path / 'fixed.onnx')
    result = import_model(fixed, contract(size=None), str(tmp_path / 'a.onnx'), blocky_frame())
    assert result.info.input_size == (64, 96) and result.worst >= 0.995
    free = export(TwoHeads(), tmp_path / 'free.onnx', dynamic=('batch', 'height', 'width'))
    result = import_model(free, contract(size=(48, 80)), str(tmp_path / 'b.onnx'),
                          blocky_frame())
    assert result.info.input_size == (48, 80) and result.worst >= 0.995
    with pytest.raises(ContractError, match=r'^input\.size: graph input input takes any size '
                                            r'\(\?x3x\?x\?\); give the size to run it at'):
        import_model(free, contract(size=None), str(tmp_path / 'c.onnx'), blocky_frame())


def identity_graph(input_shape, output_shape, input_type=TensorProto.FLOAT, op='Identity',
                   **attributes):
    """A one-node graph 'input' -> 'seg' (shapes as declared; None: dynamic)."""
    node = helper.make_node(op, ['input'], ['seg'], **attributes)
    graph = helper.make_graph(
        [node], 'g', [helper.make_tensor_value_info('input', input_type, input_shape)],
        [helper.make_tensor_value_info('seg', TensorProto.FLOAT, output_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


@pytest.mark.parametrize('graph, message', [
    (identity_graph([3, 64, 96], [3, 64, 96]),
     'input.layout: graph input input has rank 3 (3x64x96); a contract feeds rank 4, NCHW '
     'or NHWC'),
    (identity_graph([1, 3, 64, 96], [1, 3, 64, 96], TensorProto.UINT8, 'Cast',
                    to=TensorProto.FLOAT),
     'input.dtype: graph input input is not float32 or float16'),
    (identity_graph([None, 3, 64, 96], [None, 64, 96], op='ReduceMean', axes=[1], keepdims=0),
     'classes.output: seg has shape [1, 64, 96]; logits must be N×C×H×W'),
])
def test_graph_mistakes_name_the_field(tmp_path, graph, message):
    path = tmp_path / 'foreign.onnx'
    onnx.save(graph, str(path))
    with pytest.raises(ContractError) as caught:
        import_model(str(path), contract(), str(tmp_path / 'm.onnx'), blocky_frame())
    assert str(caught.value).startswith(message) and '\n' not in str(caught.value)
    assert not (tmp_path / 'm.onnx').exists()


def test_ids_head_with_channels_names_the_kind(tmp_path):
    foreign = export(TwoHeads(), tmp_path / 'two.onnx')
    with pytest.raises(ContractError, match=r'^classes\.kind: ids, but output seg has 5 '
                                            r'channels'):
        import_model(foreign, contract(kind='ids'), str(tmp_path / 'm.onnx'), blocky_frame())


@pytest.mark.parametrize('value', [0, 2.5, True, '1'])
def test_max_batch_in_the_metadata_is_checked(value):
    from seg_perception.labels import CAMVID
    from seg_perception.model_info import ModelInfo, ModelInfoError
    props = ModelInfo.from_label_space('imported', CAMVID, (64, 96)).to_metadata()
    props['seg_perception.max_batch'] = json.dumps(value)
    with pytest.raises(ModelInfoError, match='max_batch must be a whole number >= 1'):
        ModelInfo.from_metadata(props, 'm.onnx')
