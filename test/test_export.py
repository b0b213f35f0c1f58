"""The deployable ONNX graph: ONNX Runtime against PyTorch eager, dynamic shapes, metadata."""
import dataclasses
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from tiny_seg_model import seeded_tiny, tiny_info

from seg_perception.deploy import export as export_module
from seg_perception.deploy.export import ExportError, export_onnx
from seg_perception.model_info import load_model_info
from seg_perception.models import build_model, list_models

# Small settings per architecture family so that export and inference stay quick.
FAMILY_CONFIGS = {
    'deeplabv3plus': {'backbone': 'efficientnet_lite0', 'decoder': 'light'},
    'deeplabv3': {'backbone': 'efficientnet_lite0', 'decoder': 'light'},
    'fcn8s': {'backbone': 'resnet18'},
    'unet': {'base_width': 8, 'depth': 3},
    'resunet': {'base_width': 8, 'depth': 3},
    'fcdensenet56': {},
    'dilated_context': {},
}
FAMILY_INPUT_SIZE = (64, 96)
CAMERA_SIZES = [(1, 75, 110), (2, 50, 64)]


def smooth_frames(batch, height, width, seed=0):
    """Camera-like frames: random colours at low resolution, bilinearly enlarged.

    Noise would put many pixels on near-ties between classes, where float rounding
    decides the argmax; real frames are mostly smooth.
    """
    rng = np.random.RandomState(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (batch, 3, 6, 8)).astype(np.float32))
    frames = F.interpolate(coarse, size=(height, width), mode='bilinear', align_corners=False)
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def torch_reference(model, info, frames, output_resolution='camera'):
    """The preprocessing spelled out in torch: (labels, confidence) as uint8 arrays."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=tuple(info.input_size), mode='bilinear', align_corners=False)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.eval()((x - mean) / std)
    if output_resolution == 'camera':
        logits = F.interpolate(logits, size=frames.shape[1:3], mode='bilinear',
                               align_corners=False)
    probability, labels = torch.softmax(logits, dim=1).max(dim=1)
    confidence = torch.round(probability * 255)
    return labels.numpy().astype(np.uint8), confidence.numpy().astype(np.uint8)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1      # small inputs: threads only add waiting
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny():
    return seeded_tiny(width=6), tiny_info(input_size=(24, 32), width=6)


@pytest.mark.parametrize('exporter', ['dynamo', 'legacy'])
def test_labels_match_pytorch_across_sizes_and_batches(tmp_path, tiny, exporter):
    model, info = tiny
    path = tmp_path / 'tiny.onnx'
    export_onnx(model, info, str(path), exporter=exporter)
    runner = session(path)
    for batch, height, width in CAMERA_SIZES:
        frames = smooth_frames(batch, height, width, seed=height)
        (labels,) = runner.run(None, {'images': frames})
        assert labels.dtype == np.uint8 and labels.shape == (batch, height, width)
        expected, _ = torch_reference(model, info, frames)
        assert (labels == expected).mean() >= 0.999
        assert len(np.unique(expected)) > 1      # a constant map would prove little


def test_graph_interface(tmp_path, tiny):
    model, info = tiny
    path = tmp_path / 'tiny.onnx'
    export_onnx(model, info, str(path), with_confidence=True)
    graph = onnx.load(str(path)).graph
    (images,) = graph.input
    assert images.name == 'images'
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = images.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, True, True, False]
    assert dims[3].dim_value == 3
    assert [o.name for o in graph.output] == ['labels', 'confidence']
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for o in graph.output)
    # preprocessing lives in the graph
    ops = {node.op_type for node in graph.node}
    assert {'Resize', 'Transpose', 'Cast', 'ArgMax'} <= ops


def _normalisation_constant_shapes(path):
    """Shapes of the constants of the graph's first Mul and Add (the normalisation)."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: list(init.dims) for init in graph.initializer}
    shapes = {}
    for node in graph.node:
        if node.op_type in ('Mul', 'Add') and node.op_type not in shapes:
            shapes[node.op_type] = next(constants[name] for name in node.input
                                        if name in constants)
    return shapes


def test_normalisation_is_per_channel_or_scalar_as_the_model_needs(tmp_path, tiny):
    """ImageNet statistics need a constant per channel; equal ones (EfficientNet-Lite's 0.5)
    become scalars, which ONNX Runtime's NHWC int8 kernels broadcast quickly; the labels
    follow the torch preprocessing either way."""
    model, info = tiny
    uniform = dataclasses.replace(info, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    for description, expected_shape in ((info, [1, 3, 1, 1]), (uniform, [])):
        path = tmp_path / f'tiny_{len(expected_shape)}.onnx'
        export_onnx(model, description, str(path))
        shapes = _normalisation_constant_shapes(path)
        assert shapes == {'Mul': expected_shape, 'Add': expected_shape}
        frames = smooth_frames(1, 50, 70, seed=3)
        (labels,) = session(path).run(None, {'images': frames})
        expected, _ = torch_reference(model, description, frames)
        assert (labels == expected).mean() >= 0.999


def test_confidence_is_the_rounded_max_softmax(tmp_path, tiny):
    model, info = tiny
    path = tmp_path / 'confidence.onnx'
    export_onnx(model, info, str(path), with_confidence=True)
    frames = smooth_frames(2, 41, 57, seed=3)
    labels, confidence = session(path).run(None, {'images': frames})
    expected_labels, expected_confidence = torch_reference(model, info, frames)
    assert confidence.dtype == np.uint8 and confidence.shape == labels.shape
    # max softmax of C classes is at least 1/C
    assert confidence.min() >= int(255 / info.num_classes)
    difference = np.abs(confidence.astype(int) - expected_confidence.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() >= 0.99
    assert (labels == expected_labels).mean() >= 0.999


def test_probabilities_of_the_classes_asked_for(tmp_path, tiny):
    """#21: the softmax probability of chosen classes, p x 255, beside labels and confidence,
    only when asked, and passed through the pipeline by class name."""
    from seg_perception.runtime.pipeline import SegmentationPipeline
    model, info = tiny
    chosen = [info.class_names[2], info.class_names[0]]
    path = tmp_path / 'probabilities.onnx'
    written = export_onnx(model, info, str(path), with_confidence=True, probabilities=chosen)
    assert written.outputs == ['labels', 'confidence', 'probabilities']
    assert load_model_info(str(path)).probabilities == chosen
    frames = smooth_frames(2, 41, 57, seed=4)
    labels, confidence, probabilities = session(path).run(None, {'images': frames})
    assert probabilities.dtype == np.uint8 and probabilities.shape == (2, 2, 41, 57)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=tuple(info.input_size), mode='bilinear', align_corners=False)
    x = (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = F.interpolate(model.eval()(x), size=(41, 57), mode='bilinear',
                               align_corners=False)
    expected = torch.round(torch.softmax(logits, dim=1)[:, [2, 0]] * 255).numpy()
    difference = np.abs(probabilities.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() >= 0.99
    (result,) = SegmentationPipeline(str(path), backend='onnxruntime').process([frames[0]])
    assert sorted(result.probabilities) == sorted(chosen)
    np.testing.assert_array_equal(result.probabilities[chosen[0]], probabilities[0, 0])
    # Without the option the graph has no such output; an unknown class is one clear error.
    plain = export_onnx(model, info, str(tmp_path / 'plain.onnx'))
    assert plain.outputs == ['labels'] and plain.probabilities == []
    with pytest.raises(ValueError, match='not among the classes'):
        export_onnx(model, info, str(tmp_path / 'bad.onnx'), probabilities=['unicorn'])


def test_network_resolution_output(tmp_path, tiny):
    model, info = tiny
    path = tmp_path / 'network.onnx'
    written = export_onnx(model, info, str(path), output_resolution='network',
                          input_size=(32, 48), with_confidence=True)
    assert written.input_size == (32, 48) and info.input_size == (24, 32)
    frames = smooth_frames(2, 70, 90, seed=5)
    labels, confidence = session(path).run(None, {'images': frames})
    assert labels.shape == confidence.shape == (2, 32, 48)
    expected, _ = torch_reference(model, written, frames, output_resolution='network')
    assert (labels == expected).mean() >= 0.999


def test_metadata_round_trips_through_load_model_info(tmp_path, tiny):
    model, info = tiny
    path = tmp_path / 'meta.onnx'
    written = export_onnx(model, info, str(path), with_confidence=True,
                          output_resolution='network')
    loaded = load_model_info(str(path))
    assert loaded == written
    assert loaded.outputs == ['labels', 'confidence']
    assert loaded.output_resolution == 'network'
    assert loaded.class_names == info.class_names and loaded.palette == info.palette
    assert loaded.arch_config == {'width': 6}
    # the caller's description is left alone
    assert info.outputs == ['labels'] and info.output_resolution == 'camera'


def test_export_restores_training_mode(tmp_path, tiny):
    model, info = tiny
    model.train()
    try:
        export_onnx(model, info, str(tmp_path / 'mode.onnx'), exporter='legacy')
        assert model.training
    finally:
        model.eval()


def test_failed_export_leaves_no_file(tmp_path, tiny, monkeypatch):
    model, info = tiny
    path = tmp_path / 'out.onnx'

    def refuse(path, output_names):
        raise ExportError('runtime check failed on purpose')

    monkeypatch.setattr(export_module, '_check_runtime', refuse)
    with pytest.raises(ExportError, match='on purpose'):
        export_onnx(model, info, str(path), exporter='legacy')
    assert os.listdir(tmp_path) == []


def test_opset_17_for_older_tensorrt(tmp_path, tiny):
    model, info = tiny
    path = tmp_path / 'opset17.onnx'
    export_onnx(model, info, str(path), opset=17)       # auto: the legacy exporter
    proto = onnx.load(str(path))
    assert {o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')} == {17}
    frames = smooth_frames(1, 40, 50, seed=7)
    (labels,) = session(path).run(None, {'images': frames})
    assert (labels == torch_reference(model, info, frames)[0]).mean() >= 0.999


def test_exporter_failure_is_an_export_error(tmp_path, tiny, monkeypatch):
    model, info = tiny

    def broken(*args, **kwargs):
        raise RuntimeError('unsupported operator aten::frobnicate')

    monkeypatch.setattr(export_module, '_export_dynamo', broken)
    with pytest.raises(ExportError, match='dynamo export failed: unsupported operator'):
        export_onnx(model, info, str(tmp_path / 'a.onnx'), exporter='dynamo')
    # auto falls back to the legacy exporter
    export_onnx(model, info, str(tmp_path / 'b.onnx'), exporter='auto')
    assert load_model_info(str(tmp_path / 'b.onnx')).architecture == info.architecture
    monkeypatch.setattr(export_module, '_export_legacy', broken)
    with pytest.raises(ExportError, match=r'dynamo: unsupported.*; legacy: unsupported'):
        export_onnx(model, info, str(tmp_path / 'c.onnx'))
    assert sorted(os.listdir(tmp_path)) == ['b.onnx']


def test_bad_arguments(tmp_path, tiny):
    model, info = tiny
    path = str(tmp_path / 'bad.onnx')
    with pytest.raises(ValueError, match="output_resolution must be one of.*'full'"):
        export_onnx(model, info, path, output_resolution='full')
    with pytest.raises(ValueError, match='exporter must be one of'):
        export_onnx(model, info, path, exporter='tracing')
    with pytest.raises(ValueError, match=r'input_size must be \(height, width\)'):
        export_onnx(model, info, path, input_size=(0, 32))
    with pytest.raises(ValueError, match='is a folder'):
        export_onnx(model, info, str(tmp_path))
    assert not os.path.exists(path)


@pytest.mark.slow
@pytest.mark.parametrize('architecture', sorted(FAMILY_CONFIGS))
def test_each_family_matches_pytorch(tmp_path, architecture):
    if architecture not in list_models():
        pytest.skip(f'{architecture} is not registered')
    from seg_perception.labels import CAMVID
    from seg_perception.model_info import ModelInfo
    torch.manual_seed(0)
    config = FAMILY_CONFIGS[architecture]
    model = build_model(architecture, CAMVID.num_classes, **config).eval()
    info = ModelInfo.from_label_space(architecture, CAMVID, FAMILY_INPUT_SIZE,
                                      arch_config=config)
    path = tmp_path / f'{architecture}.onnx'
    export_onnx(model, info, str(path), with_confidence=True)
    runner = session(path)
    for batch, height, width in CAMERA_SIZES:
        frames = smooth_frames(batch, height, width, seed=width)
        labels, confidence = runner.run(None, {'images': frames})
        expected_labels, expected_confidence = torch_reference(model, info, frames)
        assert labels.shape == (batch, height, width)
        agreement = (labels == expected_labels).mean()
        assert agreement >= 0.999, f'{architecture}: labels agree on {agreement:.4%}'
        assert np.abs(confidence.astype(int) - expected_confidence.astype(int)).max() <= 1
