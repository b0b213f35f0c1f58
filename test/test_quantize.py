"""INT8 post-training quantisation (seg_perception.deploy.quantize) on a small real export.

A small U-Net (random weights, classifier made zero-mean so that its labels vary
over the image instead of one class winning everywhere) is exported with
export_onnx, calibrated on a handful of synthetic road scenes and quantised for
both targets; the QDQ graphs are then checked in ONNX Runtime.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from seg_perception import cli
from seg_perception.model_info import LITE0_MEAN, LITE0_STD, ModelInfo, load_model_info
from seg_perception.model_info import read_onnx_metadata
from seg_perception.labels import CAMVID
from seg_perception.deploy import quant_graph, quantize

NETWORK_SIZE = (48, 64)
AGREEMENT_FLOOR = 0.90


def road_scene(rng, height=96, width=128):
    """A synthetic camera frame: sky, buildings, road, a few cars, smooth with some noise."""
    import cv2
    rows = np.linspace(0, 1, height)[:, None, None]
    frame = np.empty((height, width, 3))
    frame[:] = (90 + 120 * rows) * np.array([0.6, 0.8, 1.0])             # sky gradient
    horizon = int(height * rng.uniform(0.35, 0.5))
    frame[horizon:] = rng.uniform(70, 110)                                 # road
    for _ in range(rng.integers(2, 5)):                                    # buildings
        x0 = int(rng.integers(0, width - 10))
        frame[int(rng.integers(5, horizon)):horizon, x0:x0 + int(rng.integers(10, 40))] = \
            rng.uniform(40, 220, 3)
    for _ in range(rng.integers(1, 4)):                                    # cars
        y0, x0 = int(rng.integers(horizon, height - 8)), int(rng.integers(0, width - 16))
        frame[y0:y0 + 8, x0:x0 + 16] = rng.uniform(0, 255, 3)
    frame += rng.normal(0, 6, frame.shape)
    return cv2.GaussianBlur(np.clip(frame, 0, 255).astype(np.uint8), (3, 3), 0)


def write_scenes(folder, count, seed):
    import cv2
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        cv2.imwrite(os.path.join(folder, f'frame_{index:03d}.png'), road_scene(rng))


def export_small_unet(path):
    import torch
    from seg_perception import models
    from seg_perception.deploy.export import export_onnx
    torch.manual_seed(0)
    config = {'base_width': 8, 'depth': 2}
    model = models.build_model('unet', CAMVID.num_classes, **config).eval()
    with torch.no_grad():
        # Without a shared component the argmax follows the features, not one bias.
        model.classifier.weight.sub_(model.classifier.weight.mean(dim=0, keepdim=True))
        model.classifier.bias.zero_()
    info = ModelInfo.from_label_space('unet', CAMVID, NETWORK_SIZE, arch_config=config,
                                      mean=LITE0_MEAN, std=LITE0_STD, dataset='synthetic')
    export_onnx(model, info, str(path))
    return str(path)


@pytest.fixture(scope='module')
def quantized(tmp_path_factory):
    """fp32 export, calibration frames, and the model quantised for both targets."""
    folder = tmp_path_factory.mktemp('quantize')
    fp32 = export_small_unet(folder / 'unet.onnx')
    calibration = folder / 'calibration'
    write_scenes(str(calibration), 4, seed=1)
    write_scenes(str(calibration / 'more'), 2, seed=2)           # found recursively
    cpu = str(folder / 'unet.cpu.int8.onnx')
    assert cli.main(['quantize', '--model', fp32, '--images', str(calibration),
                     '--count', '6', '--target', 'cpu', '--output', cpu]) == 0
    tensorrt = str(folder / 'unet.trt.int8.onnx')
    result = quantize.quantize_model(
        fp32, tensorrt, quantize.find_images(str(calibration)), target='tensorrt',
        calibration='entropy', exclude=['ConvTranspose'])
    return {'fp32': fp32, 'cpu': cpu, 'tensorrt': tensorrt, 'trt_result': result,
            'folder': folder, 'calibration': str(calibration)}


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def nodes_by_type(model, *op_types):
    return [n for n in model.graph.node if n.op_type in op_types]


def initializer(model, name):
    found = [t for t in model.graph.initializer if t.name == name]
    return onnx.numpy_helper.to_array(found[0]) if found else None


# -- structure ------------------------------------------------------------------------

@pytest.mark.slow
def test_split_finds_pre_network_and_post_in_the_export(quantized):
    model = onnx.load(quantized['fp32'])
    split = quant_graph.split_graph(model.graph)
    ops = split.op_types
    assert {'Cast', 'Resize', 'Mul', 'Add'} <= {ops[n] for n in split.pre}
    assert {'ArgMax', 'Resize', 'Cast'} <= {ops[n] for n in split.post}
    assert [ops[c] for c in split.classifiers] == ['Conv']
    assert split.classifiers[0] in split.network
    assert not set(split.pre) & set(split.network) and not set(split.post) & set(split.network)
    convs = [n.name for n in nodes_by_type(model, 'Conv', 'ConvTranspose')]
    assert set(convs) <= set(split.network)


@pytest.mark.slow
@pytest.mark.parametrize('target', ['cpu', 'tensorrt'])
def test_quantized_model_loads_and_holds_qdq_nodes(quantized, target):
    model = onnx.load(quantized[target])
    session(quantized[target])
    assert nodes_by_type(model, 'QuantizeLinear') and nodes_by_type(model, 'DequantizeLinear')
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = nodes_by_type(model, 'Conv')
    int8_weights = [c for c in convs if c.input[1] in producers
                    and producers[c.input[1]].op_type == 'DequantizeLinear']
    assert len(int8_weights) == len(convs) - 1              # all but the classifier


@pytest.mark.slow
@pytest.mark.parametrize('target', ['cpu', 'tensorrt'])
def test_pre_and_post_processing_stay_float(quantized, target):
    model = onnx.load(quantized[target])
    guarded = [n.name for n in model.graph.node
               if n.op_type in ('ArgMax', 'Cast', 'Resize', 'Transpose', 'Mul')]
    assert len(guarded) >= 6
    assert quant_graph.qdq_neighbours(model.graph, guarded) == {}
    argmax = nodes_by_type(model, 'ArgMax')[0]
    producers = {o: n for n in model.graph.node for o in n.output}
    chain = producers[argmax.input[0]]                     # Resize <- classifier, all float
    assert chain.op_type == 'Resize' and producers[chain.input[0]].op_type == 'Conv'


@pytest.mark.slow
def test_metadata_is_carried_over_with_the_precision(quantized):
    original = load_model_info(quantized['fp32'])
    for target, activations in (('cpu', 'uint8'), ('tensorrt', 'int8')):
        carried = load_model_info(quantized[target])
        assert carried.precision == 'int8' and original.precision == 'fp32'
        assert dict(carried.to_dict(), precision='fp32') == original.to_dict()
        props = read_onnx_metadata(quantized[target])
        assert props['seg_perception.precision'] == '"int8"'
        record = quantize.quantization_record(quantized[target])
        assert record['target'] == target and record['activation_type'] == activations
        assert record['weight_type'] == 'int8' and record['images'] == 6
    assert quantize.quantization_record(quantized['fp32']) is None


@pytest.mark.slow
def test_cpu_target_has_uint8_activations_and_int8_weights(quantized):
    model = onnx.load(quantized['cpu'])
    zero_points = [initializer(model, q.input[2]) for q in nodes_by_type(model, 'QuantizeLinear')]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    assert any(z != 128 for z in zero_points)              # asymmetric ranges
    weights = [initializer(model, d.input[0]) for d in nodes_by_type(model, 'DequantizeLinear')]
    conv_weights = [w for w in weights if w is not None and w.ndim == 4]
    assert conv_weights and all(w.dtype == np.int8 for w in conv_weights)


@pytest.mark.slow
def test_tensorrt_target_is_symmetric_int8_on_layer_inputs_only(quantized):
    model = onnx.load(quantized['tensorrt'])
    for q in nodes_by_type(model, 'QuantizeLinear'):
        zero = initializer(model, q.input[2])
        assert zero.dtype == np.int8 and np.all(zero == 0)
    consumers = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    for dq in nodes_by_type(model, 'DequantizeLinear'):
        data = initializer(model, dq.input[0])
        assert data is None or data.dtype == np.int8        # no int32 bias: TensorRT's float bias
        assert {c.op_type for c in consumers[dq.output[0]]} <= set(quantize.TENSORRT_OPS)
    excluded = quantized['trt_result'].float_nodes
    transposed = [n for n in nodes_by_type(model, 'ConvTranspose')]
    assert transposed and all(n.name in excluded for n in transposed)
    assert quant_graph.qdq_neighbours(model.graph, [n.name for n in transposed]) == {}


@pytest.mark.slow
@pytest.mark.parametrize('target', ['cpu', 'tensorrt'])
def test_int8_labels_agree_with_fp32(quantized, target, tmp_path):
    import cv2
    write_scenes(str(tmp_path), 6, seed=99)                 # frames unseen in calibration
    reference, quantised = session(quantized['fp32']), session(quantized[target])
    agreement, classes = [], set()
    for name in sorted(os.listdir(tmp_path)):
        frame = cv2.cvtColor(cv2.imread(str(tmp_path / name)), cv2.COLOR_BGR2RGB)[None]
        expected = reference.run(None, {'images': frame})[0]
        got = quantised.run(None, {'images': frame})[0]
        assert got.shape == expected.shape and got.dtype == np.uint8
        agreement.append(float((got == expected).mean()))
        shares = np.bincount(expected.ravel(), minlength=11) / expected.size
        classes |= set(np.flatnonzero(shares > 0.02))
    assert len(classes) >= 3, 'the fp32 labels are too uniform for a meaningful comparison'
    print(f'{target}: INT8 labels equal fp32 on {np.mean(agreement):.2%} of pixels '
          f'(worst frame {min(agreement):.2%})')
    assert np.mean(agreement) >= AGREEMENT_FLOOR


# -- bad input --------------------------------------------------------------------------

def quantize_cli(model, images, *extra):
    return cli.main(['quantize', '--model', model, '--images', images, '--target', 'cpu',
                     '--output', os.path.join(os.path.dirname(model) or '.', 'out.onnx'),
                     *extra])


@pytest.fixture
def plain_onnx(tmp_path):
    """A valid ONNX file without seg_perception metadata."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('Relu', ['x'], ['y'])], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])
    path = tmp_path / 'plain.onnx'
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


def test_bad_inputs_are_clear_errors(tmp_path, plain_onnx, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no images here')
    assert quantize_cli(plain_onnx, str(empty)) == 2
    assert 'no seg_perception metadata' in capsys.readouterr().err
    assert quantize_cli(str(tmp_path / 'missing.onnx'), str(empty)) == 2
    assert 'model file not found' in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='no images .* found under .*empty'):
        quantize.find_images(str(empty))
    with pytest.raises(FileNotFoundError, match='folder not found'):
        quantize.find_images(str(tmp_path / 'nowhere'))
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png')
    with pytest.raises(quantize.QuantizeError, match='broken.png'):
        quantize.read_rgb(str(broken))
    with pytest.raises(quantize.QuantizeError, match='--count'):
        quantize.spread_pick(['a.png'], 0)


@pytest.mark.slow
def test_bad_inputs_with_a_real_export(quantized, capsys, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    fp32, images = quantized['fp32'], quantized['calibration']
    cases = [
        ((fp32, str(empty)), 'no images'),
        ((quantized['cpu'], images), 'already quantised'),
        ((fp32, images, '--exclude', 'NoSuchNode'), 'NoSuchNode: no such node'),
        ((fp32, images, '--count', '0'), '--count must be at least 1'),
    ]
    for args, message in cases:
        assert quantize_cli(*args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert cli.main(['quantize', '--model', fp32, '--dataset', 'camvid', '--target', 'cpu',
                     '--output', str(tmp_path / 'x.onnx')]) == 2
    assert '--dataset needs --root' in capsys.readouterr().err
    assert not os.path.exists(os.path.join(os.path.dirname(fp32), 'out.onnx'))


def test_calibration_frames_are_spread_over_the_sequence():
    frames = [f'{i:04d}.png' for i in range(100)]
    assert quantize.spread_pick(frames, 4) == ['0000.png', '0025.png', '0050.png', '0075.png']
    assert quantize.spread_pick(frames[:3], 10) == frames[:3]


def test_dataset_source_lists_the_split_images(tmp_path):
    import cv2
    for folder in ('train', 'trainannot'):
        (tmp_path / folder).mkdir()
        for index in range(3):
            cv2.imwrite(str(tmp_path / folder / f'f{index}.png'), np.zeros((4, 4), np.uint8))
    paths = quantize.dataset_images('camvid', str(tmp_path), 'train')
    assert [os.path.basename(p) for p in paths] == ['f0.png', 'f1.png', 'f2.png']
    assert all('/train/' in p for p in paths)
    with pytest.raises(FileNotFoundError, match='val'):
        quantize.dataset_images('camvid', str(tmp_path), 'val')
