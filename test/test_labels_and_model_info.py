"""Label spaces and the model description that travels into checkpoints and ONNX files."""
import json

import numpy as np
import pytest

from seg_perception.labels import CAMVID, CITYSCAPES, LabelSpace, get_label_space
from seg_perception.model_info import ModelInfo, ModelInfoError, load_model_info


def test_label_spaces_are_consistent():
    assert CITYSCAPES.num_classes == 19 and CITYSCAPES.class_id('road') == 0
    assert CAMVID.num_classes == 11 and CAMVID.ignore_index == 11
    assert CAMVID.class_names[CAMVID.drivable_ids[0]] == 'road'
    assert get_label_space('CamVid') is CAMVID


def test_unknown_label_space_lists_known_ones():
    with pytest.raises(KeyError, match='camvid'):
        get_label_space('kitti')


def test_label_space_rejects_inconsistent_definitions():
    with pytest.raises(ValueError, match='at least 2'):
        LabelSpace('x', ('a',), ((0, 0, 0),), ())
    with pytest.raises(ValueError, match='colours'):
        LabelSpace('x', ('a', 'b'), ((0, 0, 0),), ())
    with pytest.raises(ValueError, match='out of range'):
        LabelSpace('x', ('a', 'b'), ((0, 0, 0), (1, 1, 1)), (5,))
    with pytest.raises(ValueError, match='ignore'):
        LabelSpace('x', ('a', 'b'), ((0, 0, 0), (1, 1, 1)), (), ignore_index=1)


def test_drivable_override_by_name_and_colorize():
    space = CAMVID.with_drivable(['road', 'Pavement'])
    assert space.drivable_ids == (3, 4)
    labels = np.array([[3, 0], [11, 8]], np.uint8)
    rgb = space.colorize(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == CAMVID.palette[3]
    assert tuple(rgb[1, 0]) == (0, 0, 0)          # ignore id has no colour
    with pytest.raises(KeyError, match='no class'):
        CAMVID.with_drivable(['runway'])


def test_label_space_dict_round_trip():
    assert LabelSpace.from_dict(json.loads(json.dumps(CITYSCAPES.to_dict()))) == CITYSCAPES


def _info(**kw):
    return ModelInfo.from_label_space('deeplabv3plus', CAMVID, (360, 480), dataset='camvid',
                                      arch_config={'backbone': 'efficientnet_lite0'}, **kw)


def test_model_info_metadata_round_trip():
    info = _info(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    props = info.to_metadata()
    assert all(isinstance(v, str) for v in props.values())
    back = ModelInfo.from_metadata(props)
    assert back == info
    assert back.label_space_obj().class_names == CAMVID.class_names


@pytest.mark.parametrize('change, message', [
    ({'num_classes': 1, 'class_names': ['a'], 'palette': [[0, 0, 0]]}, 'at least 2'),
    ({'class_names': ['a', 'b']}, 'class names'),
    ({'drivable_ids': [40]}, 'out of range'),
    ({'input_size': (0, 10)}, 'input_size'),
    ({'std': (0.0, 1.0, 1.0)}, 'std'),
    ({'output_resolution': 'retina'}, 'output_resolution'),
])
def test_model_info_rejects_inconsistent_fields(change, message):
    d = _info().to_dict()
    d.update(change)
    with pytest.raises(ModelInfoError, match=message):
        ModelInfo.from_dict(d)


def test_metadata_without_description_is_a_clear_error():
    with pytest.raises(ModelInfoError, match='no seg_perception metadata'):
        ModelInfo.from_metadata({'producer': 'someone'}, source='x.onnx')
    with pytest.raises(ModelInfoError, match='lacks'):
        ModelInfo.from_dict({'architecture': 'unet'})


def test_loader_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        load_model_info(str(tmp_path / 'missing.onnx'))
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'\x00not a protobuf\xff' * 10)
    with pytest.raises(ModelInfoError, match='bad.onnx'):
        load_model_info(str(bad))


def _argmax_graph(path, channels, info):
    """uint8 N×H×W×C frames in, the argmax over their C channels out, ``info`` in metadata."""
    import onnx
    from onnx import TensorProto, helper
    nodes = [helper.make_node('Cast', ['images'], ['x'], to=TensorProto.FLOAT),
             helper.make_node('ArgMax', ['x'], ['am'], axis=3, keepdims=0),
             helper.make_node('Cast', ['am'], ['labels'], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, 'g',
        [helper.make_tensor_value_info('images', TensorProto.UINT8, ['n', 'h', 'w', channels])],
        [helper.make_tensor_value_info('labels', TensorProto.UINT8, ['n', 'h', 'w'])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return str(path)


def _two_classes():
    return ModelInfo('x', 2, ['road', 'rest'], [[1, 1, 1], [2, 2, 2]], [0], (8, 8))


def test_a_graph_scoring_more_classes_than_its_class_map_is_refused(tmp_path, capsys):
    from seg_perception import cli
    fits = _argmax_graph(tmp_path / 'fits.onnx', 2, _two_classes())
    assert load_model_info(fits).num_classes == 2
    # Three channels reach class id 2, which the two-class map does not name.
    bad = _argmax_graph(tmp_path / 'bad.onnx', 3, _two_classes())
    with pytest.raises(ModelInfoError, match='scores 3 classes but its metadata names 2'):
        load_model_info(bad)
    # Every consumer loads through that loader: the replay command says it in one line.
    code = cli.main(['demo', '--model', bad, '--output', str(tmp_path / 'out'),
                     '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and 'scores 3 classes' in err and len(err.strip().splitlines()) == 1


def test_the_loader_reads_the_precision_from_the_graph(tmp_path):
    import onnx
    path = _argmax_graph(tmp_path / 'fp32.onnx', 2, _two_classes())
    assert load_model_info(path).precision == 'fp32'
    model = onnx.load(path)
    scale = onnx.helper.make_tensor('s', onnx.TensorProto.FLOAT, [], [1.0])
    zero = onnx.helper.make_tensor('z', onnx.TensorProto.UINT8, [], [0])
    model.graph.initializer.extend([scale, zero])
    model.graph.node[0].output[0] = 'f'
    model.graph.node.insert(1, onnx.helper.make_node('QuantizeLinear', ['f', 's', 'z'], ['q']))
    model.graph.node.insert(2, onnx.helper.make_node('DequantizeLinear', ['q', 's', 'z'], ['x']))
    onnx.save(model, str(tmp_path / 'int8.onnx'))
    # The metadata still says fp32 (a foreign quantiser copied it): the graph decides.
    assert load_model_info(str(tmp_path / 'int8.onnx')).precision == 'int8'


def test_one_model_resolver_for_every_consumer(tmp_path, monkeypatch):
    from seg_perception import model_info
    from seg_perception.model_info import ModelNotFoundError, resolve_model_path
    assert resolve_model_path('') == model_info.default_model_path()
    assert resolve_model_path(None) == model_info.default_model_path()
    with pytest.raises(ModelNotFoundError, match='model file not found') as missing:
        resolve_model_path(str(tmp_path / 'gone.onnx'))
    assert missing.value.path == str(tmp_path / 'gone.onnx')
    assert isinstance(missing.value, FileNotFoundError)
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'm.onnx').write_bytes(b'x')
    assert resolve_model_path('~/m.onnx') == str(tmp_path / 'm.onnx')
    monkeypatch.setattr(model_info, 'default_model_path', lambda: None)
    with pytest.raises(ModelNotFoundError, match='no default model is installed') as none:
        resolve_model_path('')
    assert none.value.path is None
