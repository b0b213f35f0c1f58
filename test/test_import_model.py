"""seg-perception import-model: contracts, the wrapped graph, the check, the pipeline."""
import numpy as np
import onnxruntime as ort
import pytest
import yaml

from import_helpers import TwoHeads, blocky_frame, export
from seg_perception.cli import main
from seg_perception.deploy.contract import ContractError, load_contract, parse_contract
from seg_perception.deploy.foreign import reference_run
from seg_perception.deploy.import_model import ImportError_, import_model
from seg_perception.model_info import load_model_info
from seg_perception.runtime.pipeline import SegmentationPipeline

NAMES = ['road', 'sidewalk', 'car', 'pedestrian', 'sky']


def contract(**changes):
    data = {'input': {'size': [64, 96], 'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.3, 0.25]},
            'classes': {'output': 'seg', 'names': list(NAMES), 'drivable': ['road']},
            'masks': {'lane_lines': {'output': 'll', 'positive': 1}}}
    for key, value in changes.items():
        section, _, field = key.partition('__')
        if field:
            data[section][field] = value
        elif value is None:
            data.pop(section)
        else:
            data[section] = value
    return data


@pytest.fixture(scope='module')
def two_heads(tmp_path_factory):
    return export(TwoHeads(), tmp_path_factory.mktemp('foreign') / 'two.onnx')


def run_wrapped(path, frame):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {'images': frame[np.newaxis]})))


@pytest.mark.parametrize('change, message', [
    ({'input__colour': 'bgr'}, "input.colour: unknown key; did you mean 'color'?"),
    ({'masks': {'lane_lines': {'output': 'll', 'postive': 1}}},
     "masks.lane_lines.postive: unknown key; did you mean 'positive'?"),
    ({'input__layout': 'CHW'}, 'input.layout:'),
    ({'input__std': [0.2, 0.0, 0.3]}, 'input.std:'),
    ({'classes__drivable': ['runway']}, "classes.drivable: no class 'runway'"),
    ({'classes__label_space': 'kitti'}, 'classes.names: give either'),
    ({'classes': None}, 'classes: give a class head'),
    ({'probabilities': ['truck']}, "probabilities: no class 'truck'"),
    ({'probabilities': ['car', 'road', 'car']}, 'probabilities: car listed twice'),
    ({'mask': {}}, "mask: unknown key; did you mean 'masks'?"),
    ({'input__scale': 0}, 'input.scale: must be > 0'),
    ({'classes__palette': [[0, 0, 0]] * 4 + [[0, 300, 0]]},
     'classes.palette: colour values are 0 to 255'),
    ({'classes__palette': 7}, 'classes.palette: expected 5 colours'),
])
def test_contract_mistakes_name_the_field(change, message):
    with pytest.raises(ContractError, match=message.replace('.', r'\.').replace('?', r'\?')
                       .replace('(', r'\(')):
        parse_contract(contract(**change))


def test_label_space_names_come_from_labels_py():
    data = contract(classes={'output': 'seg', 'label_space': 'bdd100k_sem_seg'})
    assert parse_contract(data).classes.space.num_classes == 19
    data['classes']['label_space'] = 'cityscapes19'
    assert parse_contract(data).classes.space.class_names[0] == 'road'


@pytest.mark.parametrize('change, message', [
    ({'input__layout': 'NHWC'}, 'input.layout: NHWC puts the 3 colour channels at axis 3, '
                                'but graph input input is ?x3x64x96'),
    ({'input__size': [64, 128]}, 'input.size: [64, 128], but graph input input is fixed at '
                                 '64x96'),
    ({'input__dtype': 'float16'}, 'input.dtype: float16, but graph input input is float32'),
    ({'input__name': 'image'}, "input.name: the graph has no input 'image'; its inputs: input"),
    ({'classes__output': 'logits'}, "classes.output: the graph has no output 'logits'; its "
                                    'outputs: seg, da, ll'),
    ({'classes__names': NAMES[:4]}, 'classes.names: 4 classes named, but output seg has 5 '
                                    'channels'),
    ({'drivable': {'output': 'da', 'positive': 2}},
     'drivable.positive: channel 2 does not exist; output da has 2 channels'),
])
def test_contract_checked_against_the_graph(two_heads, tmp_path, change, message):
    with pytest.raises(ContractError) as caught:
        import_model(two_heads, parse_contract(contract(**change)), str(tmp_path / 'm.onnx'),
                     blocky_frame())
    assert message in str(caught.value)
    assert '\n' not in str(caught.value)
    assert not (tmp_path / 'm.onnx').exists()


@pytest.mark.parametrize('resize', ['stretch', 'letterbox'])
@pytest.mark.parametrize('color', ['rgb', 'bgr'])
def test_wrapped_graph_matches_the_contract_by_hand(two_heads, tmp_path, resize, color):
    data = contract(input__resize=resize, input__color=color,
                    drivable={'output': 'da'}, probabilities=['car', 'road'])
    frame = blocky_frame(120, 200)
    result = import_model(two_heads, parse_contract(data), str(tmp_path / 'm.onnx'), frame)
    assert result.worst >= 0.995
    info = load_model_info(str(tmp_path / 'm.onnx'))
    assert info.outputs == ['labels', 'masks', 'probabilities']
    assert info.masks == ['lane_lines', 'drivable'] and info.probabilities == ['car', 'road']
    assert info.class_names == NAMES and info.drivable_ids == [0]
    got = run_wrapped(tmp_path / 'm.onnx', frame)
    assert got['labels'].shape == (1, 120, 200) and got['masks'].shape == (1, 2, 120, 200)
    assert set(np.unique(got['masks'])) <= {0, 255}
    assert got['probabilities'].shape == (1, 2, 120, 200)
    # The contract done by hand, on a frame of another size and aspect.
    other = blocky_frame(90, 60, seed=1)
    expected = reference_run(two_heads, other, parse_contract(data), _plan(two_heads, data))
    got = run_wrapped(tmp_path / 'm.onnx', other)
    assert (got['labels'][0] == expected['labels']).mean() >= 0.995
    assert (got['masks'][0, 0] == expected['mask:lane_lines']).mean() >= 0.995


def _plan(path, data):
    import onnx

    from seg_perception.deploy.foreign import inspect_graph
    return inspect_graph(onnx.load(path), parse_contract(data))


def test_letterbox_crops_the_border_back(tmp_path):
    # A network that outputs class 1 exactly where its input is the padding value.
    import torch

    class PaddingFinder(torch.nn.Module):
        def forward(self, x):
            padding = (x[:, :1] < -5).float()
            return torch.cat([1 - padding, padding], dim=1)

    path = export(PaddingFinder(), tmp_path / 'pad.onnx', output_names=('seg',))
    data = contract(input={'size': [64, 96], 'resize': 'letterbox', 'pad_value': -10},
                    masks=None, classes={'output': 'seg', 'names': ['image', 'border'],
                                         'kind': 'probabilities'})
    frame = blocky_frame(120, 60)          # tall: a wide border left and right
    import_model(path, parse_contract(data), str(tmp_path / 'm.onnx'), frame)
    labels = run_wrapped(tmp_path / 'm.onnx', frame)['labels'][0]
    assert labels.shape == (120, 60)
    assert (labels == 0).mean() >= 0.995


def test_drivable_only_model_publishes_zero_and_one(two_heads, tmp_path):
    data = contract(classes=None, masks=None, drivable={'output': 'da', 'positive': 1})
    result = import_model(two_heads, parse_contract(data), str(tmp_path / 'm.onnx'),
                          blocky_frame())
    assert result.info.class_names == ['not_drivable', 'drivable']
    assert result.info.drivable_ids == [1] and result.info.masks == []
    labels = run_wrapped(tmp_path / 'm.onnx', blocky_frame())['labels']
    assert set(np.unique(labels)) == {0, 1}


def test_disagreement_is_an_error_and_writes_nothing(two_heads, tmp_path, monkeypatch):
    from seg_perception.deploy import import_model as importer
    real = importer.reference_run

    def flipped(*args, **kwargs):
        results = real(*args, **kwargs)
        results['labels'] = (results['labels'] + 1) % 5
        return results

    monkeypatch.setattr(importer, 'reference_run', flipped)
    with pytest.raises(ImportError_, match=r'on only 0\.00% of the pixels of labels'):
        import_model(two_heads, parse_contract(contract()), str(tmp_path / 'm.onnx'),
                     blocky_frame())
    assert list(tmp_path.iterdir()) == []


def test_pipeline_passes_masks_and_probabilities_through(two_heads, tmp_path):
    data = contract(drivable={'output': 'da'}, probabilities=['car'])
    import_model(two_heads, parse_contract(data), str(tmp_path / 'm.onnx'), blocky_frame())
    pipeline = SegmentationPipeline(str(tmp_path / 'm.onnx'), backend='onnxruntime')
    frames = [blocky_frame(120, 200), blocky_frame(72, 128, seed=2)]
    results = pipeline.process(frames)
    for frame, result in zip(frames, results):
        direct = run_wrapped(tmp_path / 'm.onnx', frame)
        assert sorted(result.masks) == ['drivable', 'lane_lines']
        assert result.masks['lane_lines'].shape == frame.shape[:2]
        np.testing.assert_array_equal(result.masks['lane_lines'], direct['masks'][0, 0])
        np.testing.assert_array_equal(result.probabilities['car'],
                                      direct['probabilities'][0, 0])


def test_command_prints_agreement_and_one_line_errors(two_heads, tmp_path, capsys):
    path = tmp_path / 'c.yaml'
    path.write_text(yaml.safe_dump(contract()))
    assert load_contract(str(path)).masks['lane_lines'].output == 'll'
    frame_path = tmp_path / 'frame.png'
    import cv2
    cv2.imwrite(str(frame_path), blocky_frame())
    assert main(['import-model', two_heads, '--contract', str(path), '--output',
                 str(tmp_path / 'm.onnx'), '--frame', str(frame_path)]) == 0
    assert 'labels 100.00%' in capsys.readouterr().out
    path.write_text(yaml.safe_dump(contract(input__sise=[64, 96])))
    assert main(['import-model', two_heads, '--contract', str(path), '--output',
                 str(tmp_path / 'n.onnx')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("input.sise: unknown key; did you mean 'size'?") and '\n' not in err


def test_command_checks_on_a_sample_bag_frame(two_heads, tmp_path, capsys):
    path = tmp_path / 'c.yaml'
    path.write_text(yaml.safe_dump(contract()))
    assert main(['import-model', two_heads, '--contract', str(path), '--output',
                 str(tmp_path / 'm.onnx')]) == 0
    assert 'on a 1164x874 frame' in capsys.readouterr().out
