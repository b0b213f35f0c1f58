"""The recipes of config/contracts/: each family's model, built here with random weights,
exported as its documentation does, imported with its contract, and compared with the
family's own PyTorch inference (argmax of the logits upsampled to the frame)."""
import os
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import yaml

from import_helpers import blocky_frame
from seg_perception.deploy.contract import parse_contract
from seg_perception.deploy.import_model import import_model

CONTRACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'config', 'contracts')
SIZE = (64, 96)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def small_contract(family: str, **input_changes):
    with open(os.path.join(CONTRACTS, f'{family}.yaml')) as stream:
        data = yaml.safe_load(stream)
    data['input'].update(size=list(SIZE), **input_changes)
    return parse_contract(data)


def torch_export(model, path, input_name='input', output_names=('out',)):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, torch.randn(1, 3, *SIZE), str(path), dynamo=False,
                          input_names=[input_name], output_names=list(output_names),
                          dynamic_axes={input_name: {0: 'batch'}}, opset_version=17)
    return str(path)


def family_labels(model_logits, frame: np.ndarray) -> np.ndarray:
    """The families' own inference: resize, normalise, run, upsample to the frame, argmax."""
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=SIZE, mode='bilinear', align_corners=False)
    with torch.no_grad():
        logits = model_logits((image / 255.0 - MEAN) / STD)
    logits = F.interpolate(logits, size=frame.shape[:2], mode='bilinear', align_corners=False)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def wrapped_labels(path, frame):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(['labels'], {'images': frame[np.newaxis]})[0][0]


def check_family(foreign, contract, model_logits, tmp_path):
    frame = blocky_frame(120, 200)
    result = import_model(foreign, contract, str(tmp_path / 'model.onnx'), frame)
    assert result.worst >= 0.995
    for test_frame in (frame, blocky_frame(90, 160, seed=3)):
        agreement = (wrapped_labels(tmp_path / 'model.onnx', test_frame)
                     == family_labels(model_logits, test_frame)).mean()
        assert agreement >= 0.995, agreement
    return result


def test_torchvision_deeplabv3(tmp_path):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=21).eval()
    foreign = torch_export(model, tmp_path / 'deeplabv3.onnx')
    check_family(foreign, small_contract('torchvision'), lambda x: model(x)['out'], tmp_path)


def test_segmentation_models_pytorch_unet(tmp_path):
    smp = pytest.importorskip('segmentation_models_pytorch')
    torch.manual_seed(0)
    model = smp.Unet('resnet18', encoder_weights=None, classes=19).eval()
    foreign = torch_export(model, tmp_path / 'unet.onnx', output_names=('logits',))
    result = check_family(foreign, small_contract('smp'), model, tmp_path)
    assert result.info.label_space == 'cityscapes' and result.info.drivable_ids == [0]


def test_huggingface_segformer(tmp_path):
    transformers = pytest.importorskip('transformers')
    config = transformers.SegformerConfig(
        num_labels=19, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=32)
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    # Hugging Face initialises with std 0.02: such logits are near-ties everywhere, which
    # float rounding alone decides. Spread them as a trained model's are.
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight)
    processor = transformers.SegformerImageProcessor()
    contract = small_contract('segformer')
    assert list(processor.image_mean) == list(contract.input.mean)
    assert list(processor.image_std) == list(contract.input.std)
    assert processor.rescale_factor == pytest.approx(contract.input.scale)
    # The graph optimum's ONNX export writes: pixel_values in, the output's logits out.
    logits = OutputLogits(model).eval()
    foreign = torch_export(logits, tmp_path / 'segformer.onnx', input_name='pixel_values',
                           output_names=('logits',))
    with torch.no_grad():
        assert logits(torch.zeros(1, 3, *SIZE)).shape[-2:] == (SIZE[0] // 4, SIZE[1] // 4)
    check_family(foreign, contract, logits, tmp_path)


class OutputLogits(torch.nn.Module):
    """A Hugging Face model whose output object's ``logits`` is the one result."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def test_bdd100k_two_head_model(tmp_path):
    from import_helpers import TwoHeads
    model = TwoHeads().eval()
    foreign = torch_export(model, tmp_path / 'multitask.onnx',
                           output_names=('seg', 'drive_area_seg', 'lane_line_seg'))
    contract = small_contract('bdd100k_multitask', resize='stretch')
    frame = blocky_frame(120, 200)
    result = import_model(foreign, contract, str(tmp_path / 'model.onnx'), frame)
    assert result.info.class_names == ['not_drivable', 'drivable']
    assert result.info.masks == ['lane_lines']
    session = ort.InferenceSession(str(tmp_path / 'model.onnx'),
                                   providers=['CPUExecutionProvider'])
    labels, masks = session.run(['labels', 'masks'], {'images': frame[np.newaxis]})
    # The family's own inference: each head upsampled to the frame, argmax.
    expected_drivable = family_labels(lambda x: model(x)[1], frame)
    expected_lanes = family_labels(lambda x: model(x)[2], frame)
    assert (labels[0] == expected_drivable).mean() >= 0.995
    assert (masks[0, 0] == expected_lanes * 255).mean() >= 0.995


def test_bdd100k_contract_letterboxes(tmp_path):
    from import_helpers import TwoHeads
    foreign = torch_export(TwoHeads().eval(), tmp_path / 'multitask.onnx',
                           output_names=('seg', 'drive_area_seg', 'lane_line_seg'))
    result = import_model(foreign, small_contract('bdd100k_multitask'),
                          str(tmp_path / 'model.onnx'), blocky_frame(120, 200))
    assert result.worst >= 0.995
