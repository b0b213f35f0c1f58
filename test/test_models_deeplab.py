"""DeepLabV3 / DeepLabV3+ and their dilated backbones: shapes, strides, sizes, errors, export."""
import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from seg_perception.model_info import IMAGENET_MEAN, IMAGENET_STD, LITE0_MEAN, LITE0_STD
from seg_perception.models import build_model, list_models
from seg_perception.models.backbones import create_backbone
from seg_perception.models.deeplab import deeplabv3, deeplabv3plus
from seg_perception.models.pretrained import PretrainedWeightsError

torch.set_num_threads(2)

FAST_BACKBONES = ['efficientnet_lite0', 'resnet18', 'mobilenet_v3_large']
SLOW_BACKBONES = [pytest.param(name, marks=pytest.mark.slow) for name in ('resnet50', 'resnet101')]
ODD_SIZE = (65, 97)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize('backbone', FAST_BACKBONES + SLOW_BACKBONES)
@pytest.mark.parametrize('output_stride', [8, 16])
@pytest.mark.parametrize('builder', [deeplabv3, deeplabv3plus])
def test_logits_have_input_size_for_odd_inputs(builder, backbone, output_stride):
    num_classes = 19 if output_stride == 16 else 2
    model = builder(num_classes, backbone=backbone, output_stride=output_stride, aux=True)
    assert model.size_multiple == output_stride
    model.train()
    out = model(torch.randn(2, 3, *ODD_SIZE))
    assert set(out) == {'out', 'aux'}
    assert out['out'].shape == (2, num_classes, *ODD_SIZE)
    assert out['aux'].shape == (2, num_classes, *ODD_SIZE)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 47, 33))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, num_classes, 47, 33)


def test_without_aux_training_returns_a_tensor_and_trains_with_batch_of_one():
    model = deeplabv3plus(2, backbone='resnet18').train()
    logits = model(torch.randn(1, 3, 40, 56))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 2, 40, 56)
    logits.mean().backward()   # the image-pooling branch must not need batch > 1
    assert model.aspp.branches[-1].conv.weight.grad is not None


@pytest.mark.parametrize('backbone', FAST_BACKBONES + SLOW_BACKBONES)
@pytest.mark.parametrize('output_stride', [8, 16])
def test_features_align_at_multiples_of_the_output_stride(backbone, output_stride):
    net = create_backbone(backbone, output_stride=output_stride).eval()
    height, width = 3 * output_stride, 5 * output_stride
    with torch.no_grad():
        features = net(torch.randn(1, 3, height, width))
    assert features['low'].shape == (1, net.low_channels, height // 4, width // 4)
    out_size = (height // output_stride, width // output_stride)
    assert features['out'].shape == (1, net.out_channels, *out_size)
    assert features['aux'].shape[1] == net.aux_channels
    assert features['aux'].shape[-2:] == features['out'].shape[-2:]


def _reference_copy(network_name, tmp_path):
    """An undilated torchvision network and a file with its weights."""
    reference = getattr(torchvision.models, network_name)(weights=None)
    with torch.no_grad():   # non-trivial BatchNorm statistics
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f'{network_name}.pth'
    torch.save(reference.state_dict(), path)
    return reference.eval(), path


@pytest.mark.parametrize('output_stride', [8, 16])
def test_dilated_resnet18_is_the_undilated_network_sampled_densely(output_stride, tmp_path):
    # Removing a stride and dilating what follows computes the same features on a
    # denser grid: every (32 / output_stride)-th value is the undilated network's.
    reference, path = _reference_copy('resnet18', tmp_path)
    net = create_backbone('resnet18', output_stride=output_stride, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        step = 32 // output_stride
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        dense = net(x)['out']
    torch.testing.assert_close(dense[..., ::step, ::step], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('output_stride', [8, 16])
def test_dilated_mobilenet_v3_is_the_undilated_network_sampled_densely(output_stride, tmp_path):
    reference, path = _reference_copy('mobilenet_v3_large', tmp_path)
    net = create_backbone('mobilenet_v3_large', output_stride=output_stride,
                          pretrained=path).eval()
    # Squeeze-excitation averages over the whole map, which a denser grid changes;
    # without it the sampling identity is exact and checks every stride and dilation.
    for network in (reference, net):
        for name, module in list(network.named_modules()):
            if isinstance(module, torchvision.ops.SqueezeExcitation):
                parent, _, child = name.rpartition('.')
                setattr(network.get_submodule(parent), child, torch.nn.Identity())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        step = 32 // output_stride
        expected = reference.features(x)
        dense = net(x)['out']
    torch.testing.assert_close(dense[..., ::step, ::step], expected, atol=1e-4, rtol=1e-4)


def test_lite0_static_same_padding_matches_timm_on_padded_inputs():
    import timm
    net = create_backbone('efficientnet_lite0', output_stride=16).eval()
    reference = timm.create_model('tf_efficientnet_lite0', features_only=True, output_stride=16,
                                  out_indices=(1, 3, 4)).eval()
    reference.load_state_dict(net.body.state_dict())
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        ours = list(net(x).values())
        theirs = reference(x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def _parameters(module):
    return sum(p.numel() for p in module.parameters())


def _gmac(model, height=512, width=1024):
    # On the meta device: counts without computing.
    model = model.to('meta').eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, height, width, device='meta'))
    return counter.get_total_flops() / 2e9


def test_decoder_sizes_match_the_reference_numbers():
    # Source: the measurements at 512×1024, DeepLabV3+ on Lite0, 19 classes:
    # textbook ≈ 6.96 M parameters / 55 GMAC, light ≈ 3.3 M / 9.0 GMAC (backbone 7.1).
    light = deeplabv3plus(19, decoder='light')
    textbook = deeplabv3plus(19, decoder='textbook')
    assert 2.8e6 < _parameters(light.backbone) < 3.1e6
    assert 3.1e6 < _parameters(light) < 3.5e6
    assert 6.7e6 < _parameters(textbook) < 7.2e6
    assert 6.8 < _gmac(light.backbone) < 7.4
    assert 8.5 < _gmac(light) < 9.5
    assert 52 < _gmac(textbook) < 58


def test_atrous_rates_default_double_at_stride_8_and_can_be_set():
    assert deeplabv3(2, backbone='resnet18').aspp.rates == (6, 12, 18)
    assert deeplabv3(2, backbone='resnet18', output_stride=8).aspp.rates == (12, 24, 36)
    model = deeplabv3plus(2, backbone='resnet18', atrous_rates=(3, 5))
    assert model.aspp.rates == (3, 5)
    assert len(model.aspp.branches) == 4      # 1×1, two atrous, image pooling
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 2, 33, 47)


def test_normalization_follows_the_backbone():
    assert deeplabv3plus(2).normalization == (LITE0_MEAN, LITE0_STD)
    for backbone in ('resnet18', 'mobilenet_v3_large'):
        assert deeplabv3(2, backbone=backbone).normalization == (IMAGENET_MEAN, IMAGENET_STD)


def test_registry_builds_both_architectures():
    assert {'deeplabv3', 'deeplabv3plus'} <= set(list_models())
    model = build_model('deeplabv3plus', 11, backbone='resnet18', decoder='textbook')
    assert model.plus and model.decoder_name == 'textbook' and model.num_classes == 11
    assert not build_model('deeplabv3', 11, backbone='resnet18').plus


@pytest.mark.parametrize('kwargs, message', [
    ({'backbone': 'vgg16'}, "unknown backbone 'vgg16'; known: efficientnet_lite0, resnet18"),
    ({'output_stride': 32}, 'output_stride must be 8 or 16, got 32'),
    ({'output_stride': 4}, 'output_stride must be 8 or 16, got 4'),
    ({'decoder': 'huge'}, "unknown decoder 'huge'; known: light, textbook"),
    ({'atrous_rates': (6, 0)}, 'atrous_rates must be positive integers'),
    ({'atrous_rates': ()}, 'atrous_rates must be positive integers'),
])
def test_bad_settings_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(')):
        deeplabv3plus(2, **kwargs)


@pytest.mark.parametrize('backbone', ['resnet18', 'mobilenet_v3_large'])
def test_pretrained_true_without_a_local_source_asks_for_a_file(backbone):
    with pytest.raises(PretrainedWeightsError, match='pass pretrained=<path of a local weights'):
        deeplabv3(2, backbone=backbone, pretrained=True)


@pytest.mark.slow
def test_onnx_export_with_dynamic_height_and_width(tmp_path):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    model = deeplabv3plus(3).eval()
    path = tmp_path / 'deeplab.onnx'
    height, width = torch.export.Dim('height', min=16, max=2048), \
        torch.export.Dim('width', min=16, max=2048)
    torch.onnx.export(model, (torch.randn(1, 3, 64, 96),), str(path), dynamo=True,
                      input_names=['x'], output_names=['logits'],
                      dynamic_shapes=({2: height, 3: width},))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    # Plain ops only (no run-time padding arithmetic such as Ceil).
    allowed = {'Conv', 'Relu', 'Clip', 'Add', 'Concat', 'Resize', 'ReduceMean', 'Shape',
               'Reshape', 'Squeeze', 'Unsqueeze', 'Div', 'Slice', 'Pad', 'Cast', 'Gather',
               'Constant', 'Mul'}
    assert ops <= allowed, f'unexpected ONNX ops: {sorted(ops - allowed)}'
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for size in ((64, 96), (128, 80)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {'x': x.numpy()})[0]
        assert got.shape == (1, 3, *size)
        assert abs(got - expected).max() < 1e-4
