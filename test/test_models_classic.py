"""The classic segmentation networks: FCN, U-Net / residual U-Net, FC-DenseNet, and
the dilated front-end + context module; and the upsampling layers they share."""
import io
import contextlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_perception.models import build_model, list_models
from seg_perception.models.context import ContextModule
from seg_perception.models.pretrained import PretrainedWeightsError
from seg_perception.models.upsample import (IndexedMaxPool2d, TransposeUpsample,
                                            UnpoolUpsample, make_upsample)

CLASSIC = ['fcn32s', 'fcn16s', 'fcn8s', 'unet', 'resunet', 'fcdensenet56', 'fcdensenet67',
           'fcdensenet103', 'dilated_context']
TINY_UNET = dict(base_width=8, depth=3)

# (architecture, config): every network, every upsampling mode where it offers one.
SHAPE_CASES = [
    ('fcn32s', {}), ('fcn16s', {}), ('fcn8s', {}),
    ('fcn8s', dict(upsample='transpose')), ('fcn16s', dict(upsample='bilinear')),
    ('unet', dict(TINY_UNET, upsample='transpose')),
    ('unet', dict(TINY_UNET, upsample='bilinear')),
    ('unet', dict(TINY_UNET, upsample='unpool')),
    ('unet', dict(base_width=8, depth=2, padding='valid')),
    ('unet', dict(base_width=8, depth=2, padding='valid', upsample='unpool')),
    ('resunet', dict(TINY_UNET, upsample='transpose')),
    ('resunet', dict(TINY_UNET, upsample='unpool', merge='concat')),
    ('resunet', dict(base_width=8, depth=2, padding='valid', upsample='bilinear')),
    ('fcdensenet56', {}), ('fcdensenet67', {}), ('fcdensenet103', {}),
    ('dilated_context', dict(variant='basic')), ('dilated_context', dict(variant='large')),
]


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_every_classic_network_is_registered():
    assert set(CLASSIC) <= set(list_models())


@pytest.mark.parametrize('num_classes', [2, 11])
@pytest.mark.parametrize('name,config', SHAPE_CASES,
                         ids=[f'{n}-{"-".join(map(str, c.values()))}' for n, c in SHAPE_CASES])
def test_logits_have_input_size_for_odd_sizes(name, config, num_classes):
    torch.manual_seed(0)
    model = build_model(name, num_classes, **config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 67, 91))
    assert out.shape == (1, num_classes, 67, 91)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('name,config', [
    ('unet', dict(base_width=4, depth=2, padding='valid', upsample='unpool')),
    ('resunet', dict(base_width=4, depth=2, upsample='unpool')),
    ('unet', dict(base_width=4, depth=2, upsample='bilinear')),
])
def test_tiny_and_small_inputs_train_end_to_end(name, config):
    # Smaller than the valid U-Net's mirror margin (20 px): the edge is repeated beyond it.
    model = build_model(name, 3, **config).train()
    x = torch.randn(2, 3, 13, 9)
    out = model(x)
    assert out.shape == (2, 3, 13, 9)
    F.cross_entropy(out, torch.randint(0, 3, (2, 13, 9))).backward()
    assert model.encoders[0].body[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize('name,paper_millions', [
    ('fcdensenet56', 1.5), ('fcdensenet67', 3.5), ('fcdensenet103', 9.4)])
def test_fcdensenet_parameter_counts_match_the_paper(name, paper_millions):
    # Jégou et al. 2017, "The One Hundred Layers Tiramisu", Table 2 (CamVid, 11 classes):
    # 1.5 M, 3.5 M, 9.4 M. A faithful FC-DenseNet56 counts ~1.38 M (the paper rounds).
    count = _count(build_model(name, 11))
    assert abs(count / 1e6 - paper_millions) <= 0.10 * paper_millions, count


def test_fcn8s_on_vgg16_has_the_papers_134m_parameters():
    # Long et al. 2015, Table 1 / Table 2: FCN-8s (VGG-16, PASCAL VOC 21 classes) 134 M.
    with torch.device('meta'):      # count only: no 540 MB allocation
        model = build_model('fcn8s', 21, backbone='vgg16')
    assert abs(_count(model) / 1e6 - 134) < 1.5, _count(model)


def test_fcdensenet_feature_map_counts_follow_the_paper():
    # Jégou et al. Table 2 (FC-DenseNet103): m = 1088, 816, 576, 384, 256 after the up blocks.
    model = build_model('fcdensenet103', 11)
    assert [b.out_channels for b in model.down_blocks] == [112, 192, 304, 464, 656]
    assert [b.out_channels for b in model.up_blocks] == [1088, 816, 576, 384, 256]
    assert model.classifier.in_channels == 256


def test_unet_valid_geometry_is_the_papers_overlap_tile():
    # Ronneberger et al. 2015, Fig. 1/2: a 572×572 tile gives a 388×388 output (92 px margin).
    model = build_model('unet', 2, padding='valid', depth=4)
    margin, bottom, right, out_h, out_w = model.valid_margins(388, 388)
    assert (margin, bottom, right, out_h, out_w) == (92, 92, 92, 388, 388)
    margin, bottom, right, out_h, _ = model.valid_margins(67, 91)
    assert out_h >= 67 and (out_h - 4) % 16 == 0 and bottom == 92 + out_h - 67


# ---------------------------------------------------------------- valid-padding U-Net
def test_valid_unet_output_pixel_sits_on_its_input_pixel():
    torch.manual_seed(0)
    model = build_model('unet', 2, base_width=4, depth=2, padding='valid',
                        batch_norm=False).eval()
    x = torch.randn(1, 3, 97, 83, requires_grad=True)
    out = model(x)
    for row, col in ((48, 40), (51, 37), (44, 45)):
        grad, = torch.autograd.grad(out[0, :, row, col].sum(), x, retain_graph=True)
        rows, cols = (grad.abs().sum((0, 1)) > 0).nonzero(as_tuple=True)
        # The receptive field is centred on the pixel up to the 2×2 pooling grid.
        assert abs((rows.min() + rows.max()) / 2 - row) <= 1.5
        assert abs((cols.min() + cols.max()) / 2 - col) <= 1.5


def test_valid_unet_agrees_with_a_larger_image_away_from_the_mirrored_border():
    torch.manual_seed(0)
    model = build_model('unet', 2, base_width=4, depth=2, padding='valid',
                        batch_norm=False).eval()
    big = torch.randn(1, 3, 120, 110)
    shift = 8                               # a multiple of 2**depth: same pooling grid
    crop = big[..., shift:shift + 71, shift:shift + 69]
    with torch.no_grad():
        out_big, out_crop = model(big), model(crop)
    # Receptive field radius < 24 px: these pixels never see the mirrored margin.
    inner = (slice(None), slice(None), slice(24, 71 - 24), slice(24, 69 - 24))
    shifted = out_big[..., shift:shift + 71, shift:shift + 69]
    assert torch.allclose(out_crop[inner], shifted[inner], atol=1e-5)


# ---------------------------------------------------------------- context module
@pytest.mark.parametrize('variant', ['basic', 'large'])
def test_context_module_identity_initialisation_passes_its_input(variant):
    torch.manual_seed(0)
    x = torch.rand(2, 11, 23, 19)           # non-negative: unchanged by the ReLUs
    exact = ContextModule(11, variant, init_noise=0.0)
    assert torch.allclose(exact(x), x, atol=1e-5)
    signed = torch.randn(2, 11, 23, 19)      # the truncations cut negative scores
    assert torch.allclose(exact(signed), signed.clamp(min=0), atol=1e-5)
    noisy = ContextModule(11, variant)       # default: noise only for 'large'
    error = (noisy(x) - x).abs().max()
    assert error < 0.05 if variant == 'large' else error < 1e-5
    if variant == 'large':
        assert error > 0                     # the noise that breaks the replicas' symmetry
        assert [c.out_channels for c in noisy.layers] == [22, 22, 44, 88, 176, 352, 352]
    assert [c.dilation[0] for c in noisy.layers] == [1, 1, 2, 4, 8, 16, 1]


def test_fresh_context_network_predicts_what_its_front_end_predicts():
    torch.manual_seed(0)
    model = build_model('dilated_context', 5).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        scores = model.front_end(x)
        expected = F.interpolate(scores.clamp(min=0), size=(40, 48), mode='bilinear',
                                 align_corners=False)
        assert torch.allclose(model(x), expected, atol=1e-5)


# ---------------------------------------------------------------- upsampling layers
def test_transposed_upsampling_has_no_overlap_and_no_checkerboard():
    torch.manual_seed(0)
    up = make_upsample('transpose', 6, 4, 2)
    assert isinstance(up, TransposeUpsample)
    assert up.conv.kernel_size == up.conv.stride == (2, 2)
    with torch.no_grad():
        flat = up(torch.full((1, 6, 5, 7), 0.7))
        assert flat.shape == (1, 4, 10, 14)
        # Fresh weights: a constant map stays constant in every channel.
        assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat), atol=1e-6)
        # Any weights: one input pixel reaches exactly its own 2×2 output block.
        up.conv.weight.normal_()
        impulse = torch.zeros(1, 6, 5, 7)
        impulse[0, :, 2, 3] = 1.0
        response = (up(impulse) - up(torch.zeros_like(impulse))).abs().sum(1)[0]
        touched = (response > 0).nonzero().tolist()
        assert touched == [[4, 6], [4, 7], [5, 6], [5, 7]]


def test_unpool_puts_values_back_at_the_argmax_positions():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 10)
    pooled, indices = IndexedMaxPool2d(2)(x)
    up = make_upsample('unpool', 3, 3, 2)
    restored = up(pooled, indices)
    assert restored.shape == x.shape
    windows = x.reshape(2, 3, 4, 2, 5, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 4, 5, 4)
    argmax = windows.argmax(-1)                      # position inside each 2×2 window
    expected = torch.zeros_like(windows).scatter_(-1, argmax[..., None],
                                                  windows.max(-1, keepdim=True).values)
    expected = expected.reshape(2, 3, 4, 5, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(x.shape)
    assert torch.equal(restored, expected)
    assert (restored != 0).sum() == pooled.numel()


def test_unpool_refuses_missing_or_mismatched_indices_and_the_tracer():
    up = UnpoolUpsample(4, 3, 2)
    pooled, indices = IndexedMaxPool2d(2)(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match='needs the indices'):
        up(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match='differ in shape'):
        up(torch.randn(1, 4, 2, 3), indices)
    assert up(torch.randn(1, 4, 3, 3), indices).shape == (1, 3, 6, 6)
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match='dynamo=True'):
        warnings.simplefilter('ignore')
        torch.jit.trace(lambda v: up(v, indices), torch.randn(1, 4, 3, 3))


# ---------------------------------------------------------------- bad configurations
@pytest.mark.parametrize('name,config,message', [
    ('fcn8s', dict(upsample='unpool'), 'no max-pool indices'),
    ('fcn8s', dict(upsample='nearest'), 'unknown upsample mode'),
    ('fcn8s', dict(backbone='vgg19'), 'unknown backbone'),
    ('unet', dict(padding='reflect'), 'unknown padding'),
    ('unet', dict(upsample='pixelshuffle'), 'unknown upsample mode'),
    ('unet', dict(depth=0), 'depth'),
    ('unet', dict(base_width=0), 'base_width'),
    ('resunet', dict(merge='max'), 'unknown merge'),
    ('fcdensenet56', dict(block_layers=(4, 4)), 'odd number'),
    ('dilated_context', dict(variant='huge'), 'unknown context module variant'),
    ('dilated_context', dict(backbone='alexnet'), 'unknown front-end backbone'),
])
def test_bad_configuration_names_the_problem(name, config, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, 3, **config)


@pytest.mark.parametrize('name', CLASSIC)
def test_one_class_is_refused(name):
    with pytest.raises(ValueError, match='num_classes'):
        build_model(name, 1)


def test_make_upsample_refuses_bad_arguments():
    with pytest.raises(ValueError, match='unknown upsample mode'):
        make_upsample('deconv', 4, 4, 2)
    with pytest.raises(ValueError, match='scale'):
        make_upsample('transpose', 4, 4, 1)
    with pytest.raises(ValueError, match='in_ch'):
        make_upsample('bilinear', 0, 4, 2)


# ---------------------------------------------------------------- local pretrained weights
def test_fcn_loads_a_local_torchvision_resnet_state_dict(tmp_path):
    import torchvision
    source = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        source.conv1.weight.fill_(0.25)
        source.layer4[1].conv2.weight.fill_(-0.5)
    path = tmp_path / 'resnet18.pth'
    torch.save(source.state_dict(), path)
    model = build_model('fcn8s', 4, backbone='resnet18', pretrained=str(path))
    assert torch.all(model.backbone.stem[0].weight == 0.25)
    assert torch.all(model.backbone.layer4[1].conv2.weight == -0.5)


def test_pretrained_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / 'nowhere.pth'
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        build_model('fcn32s', 4, pretrained=str(missing))
    wrong = tmp_path / 'tiny.pth'
    torch.save({'conv1.weight': torch.zeros(2, 3, 1, 1)}, wrong)
    with pytest.raises(PretrainedWeightsError, match='tiny.pth'):
        build_model('fcn32s', 4, backbone='resnet18', pretrained=str(wrong))
    with torch.device('meta'), pytest.raises(PretrainedWeightsError, match='tiny.pth'):
        build_model('fcn32s', 4, backbone='vgg16', pretrained=str(wrong))
    with pytest.raises(PretrainedWeightsError, match='nothing is downloaded'):
        build_model('fcn8s', 4, backbone='vgg16', pretrained=True)
    with pytest.raises(PretrainedWeightsError, match='nothing is downloaded'):
        build_model('dilated_context', 4, backbone='vgg16', pretrained=True)


@pytest.mark.parametrize('name', ['vgg16', 'vgg16_bn'])
def test_fcn_loads_a_local_torchvision_vgg_state_dict(name, tmp_path):
    # Every conv (and BatchNorm) tensor by its torchvision name, fc6/fc7 reshaped into
    # convolutions; the BatchNorm counters are in the file and loaded strictly.
    import torchvision
    source = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        source.features[0].weight.fill_(0.125)
        source.classifier[0].weight.fill_(-0.25)
        source.classifier[3].bias.fill_(0.5)
    path = tmp_path / f'{name}.pth'
    torch.save(source.state_dict(), path)
    del source
    model = build_model('fcn32s', 4, backbone=name, pretrained=str(path))
    assert torch.all(model.backbone.all_features()[0].weight == 0.125)
    assert model.head[0].weight.shape == (4096, 512, 7, 7)
    assert torch.all(model.head[0].weight == -0.25) and torch.all(model.head[3].bias == 0.5)


@pytest.mark.parametrize('name', ['vgg16', 'vgg16_bn'])
def test_vgg_layers_use_torchvision_names_so_its_weights_load(name):
    import torchvision
    from seg_perception.models.classic_backbones import vgg16_features
    with torch.device('meta'):
        reference = getattr(torchvision.models, name)().features.state_dict()
        ours = vgg16_features(batch_norm=name.endswith('_bn')).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


# ---------------------------------------------------------------- ONNX export
EXPORT_CASES = [
    ('fcn32s', {}), ('fcn16s', {}), ('fcn8s', {}),
    ('unet', dict(TINY_UNET, upsample='unpool')),
    ('unet', dict(base_width=8, depth=2, padding='valid', upsample='bilinear')),
    ('resunet', dict(TINY_UNET, upsample='transpose')),
    # fcdensenet67/103 are fcdensenet56's code with other layer counts; their export
    # (~3× and ~5× fcdensenet56's time) is left out to keep the suite short.
    ('fcdensenet56', {}),
    ('dilated_context', dict(variant='large')),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,config', EXPORT_CASES,
                         ids=[f'{n}-{"-".join(map(str, c.values()))}' for n, c in EXPORT_CASES])
def test_onnx_export_with_dynamic_size_matches_pytorch(name, config, tmp_path):
    import onnxruntime as ort
    torch.manual_seed(0)
    model = build_model(name, 11, **config).eval()
    dynamic = torch.export.Dim.DYNAMIC
    path = tmp_path / f'{name}.onnx'
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (torch.randn(1, 3, 67, 91),), str(path), dynamo=True,
                          opset_version=18, input_names=['images'], output_names=['logits'],
                          dynamic_shapes={'x': {2: dynamic, 3: dynamic}})
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for size in ((67, 91), (45, 38)):        # the traced size and another one
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {'images': x.numpy()})[0]
        assert got.shape == expected.shape
        agreement = np.mean(got.argmax(1) == expected.argmax(1))
        assert agreement >= 0.999, agreement


def test_legacy_exporter_takes_valid_unet_and_refuses_unpool_clearly(tmp_path):
    # The TorchScript exporter (the one for opset 17 / TensorRT 8): sizes are traced as
    # tensors, so the valid U-Net's mirror margins must stay graph operations.
    import onnxruntime as ort
    torch.manual_seed(0)
    model = build_model('unet', 5, base_width=4, depth=2, padding='valid').eval()
    path = tmp_path / 'valid_unet.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (torch.randn(1, 3, 67, 91),), str(path), dynamo=False,
                          opset_version=17, input_names=['images'],
                          dynamic_axes={'images': {0: 'n', 2: 'h', 3: 'w'}})
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for size in ((45, 38), (13, 9)):         # the second is smaller than the mirror margin
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {'images': x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
    unpool = build_model('unet', 5, base_width=4, depth=2, upsample='unpool').eval()
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match='dynamo=True'):
        warnings.simplefilter('ignore')
        torch.onnx.export(unpool, (torch.randn(1, 3, 32, 32),), str(tmp_path / 'u.onnx'),
                          dynamo=False, opset_version=17)


def test_pretrained_backbones_report_the_normalisation_their_weights_expect():
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert build_model('fcn8s', 3).normalization == imagenet
    assert build_model('dilated_context', 3).normalization == imagenet
    lite0 = build_model('dilated_context', 3, backbone='efficientnet_lite0')
    assert lite0.normalization == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
