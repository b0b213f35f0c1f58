"""An imported model taken like any exported one: quantize, build-engine's graph preparation
for TensorRT, and evaluate (issue #21, "the node, bag-eval, evaluate, quantize and
build-engine take it like any exported model")."""
import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from colour_net import ColourNet
from eval_models import NAMES4, PALETTE4, SIZE, run_cli, synthetic_folder
from import_helpers import TwoHeads, blocky_frame, export
from seg_perception import cli
from seg_perception.deploy import quant_graph
from seg_perception.deploy.contract import parse_contract
from seg_perception.deploy.import_model import import_model
from seg_perception.evaluation import metrics
from seg_perception.model_info import load_model_info
from seg_perception.runtime.pipeline import SegmentationPipeline
from seg_perception.runtime.trt import engine as trt_engine, graph as trt_graph

NAMES = ['road', 'sidewalk', 'car', 'pedestrian', 'sky']
CONTRACT = {'input': {'size': [64, 96], 'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.3, 0.25]},
            'classes': {'output': 'seg', 'names': NAMES, 'drivable': ['road']},
            'drivable': {'output': 'da'},
            'masks': {'lane_lines': {'output': 'll'}},
            'probabilities': ['car']}
AGREEMENT_FLOOR = 0.90


class OneChannelHead(torch.nn.Module):
    """Class logits and a one-channel lane head (decided by a threshold, not an argmax)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.seg = torch.nn.Conv2d(8, 5, 1)
        self.ll = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        features = torch.relu(self.body(x))
        return self.seg(features), self.ll(features)


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
    """A two-head foreign model imported with masks and probabilities, calibration frames,
    and the model quantised for both targets through the command line."""
    folder = tmp_path_factory.mktemp('imported')
    foreign = export(TwoHeads(), folder / 'two.onnx')
    model = str(folder / 'model.onnx')
    import_model(foreign, parse_contract(json.loads(json.dumps(CONTRACT))), model,
                 blocky_frame())
    calibration = folder / 'calibration'
    calibration.mkdir()
    for seed in range(4):
        cv2.imwrite(str(calibration / f'{seed}.png'), blocky_frame(120, 200, seed=10 + seed))
    paths = {'fp32': model, 'folder': folder}
    for target in ('cpu', 'tensorrt'):
        paths[target] = str(folder / f'model.{target}.int8.onnx')
        assert cli.main(['quantize', '--model', model, '--images', str(calibration),
                         '--target', target, '--output', paths[target]]) == 0
    return paths


def run(path, batch):
    session = ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                   providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {'images': batch})))


# -- quantize -----------------------------------------------------------------------------

def test_split_finds_every_head_of_an_imported_graph(imported, tmp_path):
    split = quant_graph.split_graph(onnx.load(imported['fp32']).graph)
    assert split.classifiers == ['/seg/Conv', '/da/Conv', '/ll/Conv']
    assert split.logits == ['seg', 'da', 'll']
    assert {'/body/body.0/Conv', '/body/body.2/Conv'} <= set(split.network)
    assert all(name.startswith('seg_perception/') for name in split.pre + split.post)
    # A one-channel head is decided by a threshold: its classifier is found as well.
    foreign = export(OneChannelHead(), tmp_path / 'one.onnx', output_names=('seg', 'll'))
    data = json.loads(json.dumps(CONTRACT))
    data.pop('drivable')
    import_model(foreign, parse_contract(data), str(tmp_path / 'm.onnx'), blocky_frame())
    split = quant_graph.split_graph(onnx.load(str(tmp_path / 'm.onnx')).graph)
    assert split.classifiers == ['/seg/Conv', '/ll/Conv']


@pytest.mark.parametrize('target', ['cpu', 'tensorrt'])
def test_quantized_import_loads_runs_and_agrees_with_fp32(imported, target):
    info = load_model_info(imported[target])
    assert info.precision == 'int8' and info.architecture == 'imported'
    assert info.masks == ['lane_lines', 'drivable'] and info.probabilities == ['car']
    quantized = onnx.load(imported[target])
    split = quant_graph.split_graph(onnx.load(imported['fp32']).graph)
    # Only the network is quantised: the wrapper's nodes stay float (the normalised image
    # alone feeds a QuantizeLinear), and so do the weights of every head's classifier.
    assert quant_graph.qdq_neighbours(quantized.graph, split.post) == {}
    touched = quant_graph.qdq_neighbours(quantized.graph, split.pre)
    assert {split.op_types[n] for n in touched} == {'Add'}
    assert quant_graph.qdq_neighbours(quantized.graph, ['/body/body.0/Conv'])
    floats = {t.name for t in quantized.graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT}
    heads = [n for n in quantized.graph.node if n.name in split.classifiers]
    assert len(heads) == 3 and all(n.input[1] in floats for n in heads)
    pipeline = SegmentationPipeline(imported[target], backend='onnxruntime', precision='int8')
    frames = [blocky_frame(120, 200, seed=seed) for seed in (20, 21, 22)]
    expected = SegmentationPipeline(imported['fp32'], backend='onnxruntime').process(frames)
    for got, want in zip(pipeline.process(frames), expected):
        assert sorted(got.masks) == ['drivable', 'lane_lines'] and list(got.probabilities) == \
            ['car']
        assert len(np.unique(want.labels)) >= 3      # a comparison worth making
        assert (got.labels == want.labels).mean() >= AGREEMENT_FLOOR
        assert (got.masks['lane_lines'] == want.masks['lane_lines']).mean() >= AGREEMENT_FLOOR
        assert np.abs(got.probabilities['car'].astype(int)
                      - want.probabilities['car']).mean() < 8


# -- build-engine: what TensorRT is handed ------------------------------------------------

@pytest.mark.parametrize('variant', ['fp32', 'tensorrt'])
def test_tensorrt_gets_an_imported_graph_with_uint8_only_at_its_edges(imported, variant):
    path = imported[variant]
    assert [op for _, op in trt_graph.uint8_input_readers(onnx.load(path))] == \
        ['Cast', 'Shape']                # the wrapper reads the frames' size from them
    prepared = onnx.ModelProto.FromString(trt_engine.tensorrt_onnx_bytes(path))
    assert [op for _, op in trt_graph.uint8_input_readers(prepared)] == ['Cast']
    inferred = onnx.shape_inference.infer_shapes(prepared)
    edges = {v.name for v in list(prepared.graph.input) + list(prepared.graph.output)}
    inner_uint8 = [v.name for v in inferred.graph.value_info
                   if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8
                   and v.name not in edges]
    inner_uint8 += [t.name for t in prepared.graph.initializer
                    if t.data_type == onnx.TensorProto.UINT8]
    assert inner_uint8 == []
    batch = np.stack([blocky_frame(72, 128, seed=seed) for seed in (1, 2)])
    original, rewritten = run(path, batch), run(prepared.SerializeToString(), batch)
    for name, array in original.items():
        np.testing.assert_array_equal(rewritten[name], array)
    expected = 'int8' if variant == 'tensorrt' else 'fp16'
    assert trt_engine.resolve_precision(path, expected) == expected


# -- evaluate -----------------------------------------------------------------------------

def test_evaluate_scores_an_imported_model_as_an_exported_one(tmp_path):
    expected = synthetic_folder(tmp_path / 'data')
    # The nearest-colour classifier of the evaluate tests, as a bare foreign graph.
    network = ColourNet(4, PALETTE4).classify.eval()
    foreign = export(network, tmp_path / 'colours.onnx', size=SIZE, output_names=('logits',))
    contract = parse_contract({
        'input': {'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]},
        'classes': {'output': 'logits', 'names': NAMES4, 'drivable': ['road']}})
    model = str(tmp_path / 'model.onnx')
    image = cv2.imread(str(tmp_path / 'data' / 'images' / 'val' / 'frame0.png'))
    import_model(foreign, contract, model, np.ascontiguousarray(image[:, :, ::-1]))
    out = tmp_path / 'eval'
    assert run_cli('--model', model, '--dataset', 'folder', '--root', tmp_path / 'data',
                   '--output', out, '--backend', 'onnxruntime') == 0
    result = json.loads((out / 'metrics.json').read_text())
    np.testing.assert_array_equal(result['confusion_matrix'], expected)
    assert result['miou'] == pytest.approx(metrics.mean_iou(expected))
    assert result['drivable_iou'] == pytest.approx(metrics.binary_iou(expected, [0]))
    assert result['architecture'] == 'imported' and result['inference']['kind'] == 'onnx'
