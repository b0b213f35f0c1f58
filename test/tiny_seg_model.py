"""A tiny trainable SegmentationModel for training, checkpoint and export tests that must
not wait on real nets.

conftest's ``tiny_name`` fixture registers it as TINY_NAME while a test runs and removes
it afterwards, so other tests that walk ``list_models()`` never see it.
"""
import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.labels import CAMVID
from seg_perception.model_info import ModelInfo
from seg_perception.models.base import SegmentationModel

TINY_NAME = 'tiny_test_segmenter'


class TinySegmenter(SegmentationModel):
    """Two strided convolutions with batch norm, an optional aux head; stride 4."""

    size_multiple = 4

    def __init__(self, num_classes: int, *, width: int = 8, aux: bool = False,
                 pretrained: bool = False):
        super().__init__(num_classes)
        if pretrained:
            raise RuntimeError('tiny test model has no pretrained weights to download')
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)
        self.aux_head = nn.Conv2d(width, num_classes, 1) if aux else None

    def forward_padded(self, x):
        features = self.body(self.stem(x))
        logits = F.interpolate(self.head(features), size=x.shape[-2:], mode='bilinear',
                               align_corners=False)
        if self.training and self.aux_head is not None:
            aux = F.interpolate(self.aux_head(features), size=x.shape[-2:], mode='bilinear',
                                align_corners=False)
            return {'out': logits, 'aux': aux}
        return logits


def tiny_info(input_size=(24, 32), **config) -> ModelInfo:
    """A CamVid (11 classes) description of the tiny model."""
    return ModelInfo.from_label_space(TINY_NAME, CAMVID, input_size, arch_config=dict(config),
                                      dataset='synthetic')


def seeded_tiny(seed: int = 0, **config) -> TinySegmenter:
    """A tiny model with deterministic weights and non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    model = TinySegmenter(CAMVID.num_classes, **config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()
