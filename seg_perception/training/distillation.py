"""Pixel-wise knowledge distillation (``train.distill``): the network also learns, at every
pixel, the softened class distribution of a larger network trained on the same frames
(Hinton et al., 2015; per pixel as in Liu et al., "Structured knowledge distillation for
semantic segmentation", CVPR 2019).

::

    train:
      distill:
        teacher: runs/tries/teacher_textbook/last.pt   # a checkpoint of this package
        weight: 1.0                                     # of the KL term in the loss
        temperature: 1.0                                # both distributions softened by it

The teacher is rebuilt for inference (its weight average when it has one, no aux head),
frozen, and must predict the same classes from the same normalised input as the student.
Unlabelled pixels, which the cross entropy ignores, still carry the teacher's opinion.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.config import ConfigError, check_keys
from seg_perception.errors import InvalidValueError
from seg_perception.model_info import ModelInfo

LOGGER = logging.getLogger('seg_perception.training')
DISTILL_KEYS = ('teacher', 'weight', 'temperature')


def check_distill_section(section: Optional[Mapping[str, Any]]) -> None:
    """Check ``train.distill`` (None: off) without reading the teacher."""
    if section is None:
        return
    if not isinstance(section, Mapping):
        raise ConfigError(f'train.distill must be a mapping with a teacher checkpoint, '
                          f'got {section!r}')
    check_keys(section, DISTILL_KEYS, 'train.distill')
    if not isinstance(section.get('teacher'), str) or not section['teacher']:
        raise ConfigError('train.distill.teacher is required: the checkpoint of the network '
                          'to learn from')
    for key in ('weight', 'temperature'):
        value = section.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f'train.distill.{key} must be a number > 0, got {value!r}')


class PixelDistillation(nn.Module):
    """``weight × T² × KL(teacher ‖ student)`` of the per-pixel class distributions at
    temperature T, averaged over pixels (the T² keeps the gradients' scale, Hinton et al.)."""

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 1.0):
        super().__init__()
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def train(self, mode: bool = True) -> 'PixelDistillation':
        super().train(mode)
        self.teacher.eval()              # its BatchNorm statistics are part of what it knows
        return self

    def forward(self, images: torch.Tensor, output) -> torch.Tensor:
        student = output['out'] if isinstance(output, dict) else output
        with torch.no_grad():
            teacher = self.teacher(images)
        scale = self.temperature
        divergence = F.kl_div(F.log_softmax(student.float() / scale, dim=1),
                              F.log_softmax(teacher.float() / scale, dim=1),
                              reduction='none', log_target=True)
        return self.weight * scale * scale * divergence.sum(dim=1).mean()


def build_distillation(section: Optional[Mapping[str, Any]], student: ModelInfo
                       ) -> Optional[PixelDistillation]:
    """The distillation term of ``train.distill`` for a student described by ``student``."""
    if section is None:
        return None
    from seg_perception.models.checkpoint import build_model_from_checkpoint
    path = section['teacher']
    teacher, info = build_model_from_checkpoint(path)
    if list(info.class_names) != list(student.class_names):
        raise InvalidValueError(f'train.distill.teacher {path} predicts {info.class_names}, '
                                f'the network trained here {student.class_names}')
    theirs, ours = tuple(info.mean) + tuple(info.std), tuple(student.mean) + tuple(student.std)
    same_input = all(abs(float(a) - float(b)) < 1e-6 for a, b in zip(theirs, ours))
    if not same_input:
        raise InvalidValueError(f'train.distill.teacher {path} expects input normalised with '
                                f'mean {info.mean} std {info.std}, the network trained here '
                                f'{student.mean} {student.std}: it would see other numbers')
    LOGGER.info('distilling from %s (%s %s), weight %g, temperature %g', path,
                info.architecture, info.arch_config.get('decoder', ''),
                section.get('weight', 1.0), section.get('temperature', 1.0))
    return PixelDistillation(teacher, section.get('weight', 1.0), section.get('temperature', 1.0))
