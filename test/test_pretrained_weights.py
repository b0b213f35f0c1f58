"""Pretrained backbone weights from local files: the Lite0 key map, loading, and bad files."""
from collections import OrderedDict

import pytest
import torch
import torchvision

from seg_perception.models.backbones import create_backbone
from seg_perception.models.deeplab import deeplabv3plus
from seg_perception.models.pretrained import (LITE0_TENSOR_COUNT, PretrainedWeightsError,
                                              lite0_package_weights_path,
                                              load_lite0_imagenet_weights,
                                              map_lite0_state_dict, read_state_dict)

timm = pytest.importorskip('timm')
torch.set_num_threads(2)

IMAGENET_CATS = range(281, 286)   # tabby, tiger cat, Persian, Siamese, Egyptian cat
EGYPTIAN_CAT = 285


@pytest.fixture(scope='module')
def package_state():
    return read_state_dict(lite0_package_weights_path())


@pytest.fixture(scope='module')
def classifier():
    model = timm.create_model('tf_efficientnet_lite0', pretrained=False)
    return load_lite0_imagenet_weights(model).eval()


def _without_counters(state):
    return OrderedDict((k, v) for k, v in state.items() if not k.endswith('num_batches_tracked'))


def test_package_tensors_map_in_order_onto_timm_names(package_state):
    target = timm.create_model('tf_efficientnet_lite0', pretrained=False).state_dict()
    mapped = map_lite0_state_dict(package_state, target)
    assert len(mapped) == LITE0_TENSOR_COUNT == len(_without_counters(package_state))
    assert list(mapped) == list(_without_counters(target))
    sources = list(_without_counters(package_state))
    pairs = dict(zip(sources, mapped))
    # Spot checks of the correspondence, from the two networks' definitions.
    assert pairs['_conv_stem.weight'] == 'conv_stem.weight'
    assert pairs['_bn0.running_var'] == 'bn1.running_var'
    assert pairs['_blocks.0._depthwise_conv.weight'] == 'blocks.0.0.conv_dw.weight'
    assert pairs['_blocks.1._expand_conv.weight'] == 'blocks.1.0.conv_pw.weight'
    assert pairs['_blocks.15._project_conv.weight'] == 'blocks.6.0.conv_pwl.weight'
    assert pairs['_conv_head.weight'] == 'conv_head.weight'
    assert pairs['_bn1.bias'] == 'bn2.bias'
    assert pairs['_fc.weight'] == 'classifier.weight'
    for source_key, target_key in pairs.items():
        assert mapped[target_key] is package_state[source_key]


def test_mapping_names_the_first_mismatch(package_state):
    target = timm.create_model('tf_efficientnet_lite0', pretrained=False).state_dict()
    swapped = OrderedDict(package_state)
    keys = list(swapped)
    # Exchange the order of a BatchNorm weight and bias: same shapes, wrong kinds.
    weight, bias = '_bn0.weight', '_bn0.bias'
    order = [bias if k == weight else weight if k == bias else k for k in keys]
    swapped = OrderedDict((k, package_state[k]) for k in order)
    with pytest.raises(PretrainedWeightsError, match=r"tensor #1 '_bn0.bias'.*'bn1.weight'"):
        map_lite0_state_dict(swapped, target)
    shorter = OrderedDict(list(package_state.items())[:-1])
    with pytest.raises(PretrainedWeightsError, match='246 tensors, but an EfficientNet-Lite0'):
        map_lite0_state_dict(shorter, target)
    resized = OrderedDict(package_state)
    resized['_conv_head.weight'] = torch.zeros(1280, 321, 1, 1)
    with pytest.raises(PretrainedWeightsError,
                       match=r"'_conv_head.weight' \(1280, 321, 1, 1\) does not match"):
        map_lite0_state_dict(resized, target)


def _chelsea(size_transform):
    from PIL import Image
    from skimage import data
    return size_transform(Image.fromarray(data.chelsea())).unsqueeze(0)


def test_imagenet_weights_recognise_the_cat(classifier):
    config = timm.data.resolve_data_config({}, model=classifier)
    assert config['mean'] == config['std'] == (0.5, 0.5, 0.5)
    with torch.no_grad():
        # timm's pretrained_cfg: resize 256 bicubic, centre crop 224, mean = std = 0.5.
        # Measured: tiger cat 0.39, Egyptian cat 0.36, tabby 0.17 (cats 0.92).
        probs = classifier(_chelsea(timm.data.create_transform(**config))).softmax(1)[0]
        assert int(probs.argmax()) in IMAGENET_CATS
        assert float(probs[IMAGENET_CATS.start:IMAGENET_CATS.stop].sum()) > 0.8
        # The whole photo squashed to 224×224: Egyptian cat, 0.77 (the 0.79
        # comes from this framing).
        squash = timm.data.create_transform(**dict(config, crop_pct=1.0, crop_mode='squash'))
        probs = classifier(_chelsea(squash)).softmax(1)[0]
        assert int(probs.argmax()) == EGYPTIAN_CAT and float(probs[EGYPTIAN_CAT]) > 0.6


def test_deeplab_backbone_holds_the_classifier_tensors(classifier):
    reference = classifier.state_dict()
    for pretrained in (True, lite0_package_weights_path()):
        body = deeplabv3plus(2, pretrained=pretrained).backbone.body.state_dict()
        compared = [k for k in body if not k.endswith('num_batches_tracked')]
        assert len(compared) == LITE0_TENSOR_COUNT - 7     # no head conv, bn2, classifier
        for key in compared:
            assert torch.equal(body[key], reference[key]), key


def test_timm_named_lite0_file_is_accepted(classifier, tmp_path):
    path = tmp_path / 'lite0_timm.pth'
    torch.save(classifier.state_dict(), path)
    net = create_backbone('efficientnet_lite0', pretrained=str(path))
    assert torch.equal(net.body.state_dict()['blocks.6.0.conv_pwl.weight'],
                       classifier.state_dict()['blocks.6.0.conv_pwl.weight'])


@pytest.mark.parametrize('backbone', ['resnet18', 'mobilenet_v3_large'])
def test_torchvision_backbone_loads_a_local_classifier_file(backbone, tmp_path):
    source = getattr(torchvision.models, backbone)(weights=None)
    path = tmp_path / f'{backbone}.pth'
    torch.save({'state_dict': source.state_dict()}, path)       # wrapped, as trainers save
    net = create_backbone(backbone, pretrained=path)
    first_conv = net.stem[0] if backbone == 'resnet18' else net.low[0][0]
    source_conv = source.conv1 if backbone == 'resnet18' else source.features[0][0]
    assert torch.equal(first_conv.weight, source_conv.weight)
    fresh = create_backbone(backbone)
    fresh_conv = fresh.stem[0] if backbone == 'resnet18' else fresh.low[0][0]
    assert not torch.equal(fresh_conv.weight, source_conv.weight)


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / 'broken.pth'
    path.write_bytes(b'not a torch file at all' * 10)
    with pytest.raises(PretrainedWeightsError, match=f'cannot read pretrained weights file {path}'):
        create_backbone('efficientnet_lite0', pretrained=path)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(lite0_package_weights_path(), 'rb').read()[:100000])
    with pytest.raises(PretrainedWeightsError, match='cannot read pretrained weights file'):
        create_backbone('efficientnet_lite0', pretrained=truncated)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        create_backbone('resnet18', pretrained=tmp_path / 'nowhere.pth')


def test_file_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(3), path)
    with pytest.raises(PretrainedWeightsError, match='does not hold a state dict'):
        create_backbone('resnet18', pretrained=path)


def test_weights_of_another_network_are_refused(tmp_path):
    resnet_file = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet_file)
    with pytest.raises(PretrainedWeightsError, match='is not an EfficientNet-Lite0 state dict'):
        create_backbone('efficientnet_lite0', pretrained=resnet_file)
    with pytest.raises(PretrainedWeightsError,
                       match=r"does not fit torchvision mobilenet_v3_large: tensor "
                             r"'features.0.0.weight' is missing"):
        create_backbone('mobilenet_v3_large', pretrained=resnet_file)
    with pytest.raises(PretrainedWeightsError,
                       match=r"does not fit torchvision resnet50: 'layer1.0.conv1.weight' "
                             r"has shape \(64, 64, 3, 3\), expected \(64, 64, 1, 1\)"):
        create_backbone('resnet50', pretrained=resnet_file)


def test_pretrained_must_be_a_flag_or_a_path():
    with pytest.raises(TypeError, match='pretrained must be False, True or a file path'):
        create_backbone('resnet18', pretrained=3)
