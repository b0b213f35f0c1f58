"""The optimizer of ``optimizer:`` (SGD or AdamW) over a model's trainable parameters."""
from __future__ import annotations

import logging
from typing import Any, Dict

import torch

LOGGER = logging.getLogger('seg_perception.training')


def build_optimizer(model: torch.nn.Module, config: Dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over the trainable parameters.

    ``backbone_lr_mult`` scales the LR of ``model.backbone`` (when the model has one)
    relative to the rest (decoder and heads), as fine-tuning recipes often do.
    """
    backbone = getattr(model, 'backbone', None)
    backbone_ids = ({id(p) for p in backbone.parameters()}
                    if isinstance(backbone, torch.nn.Module) else set())
    mult = config['backbone_lr_mult']
    if mult != 1.0 and not backbone_ids:
        LOGGER.warning('optimizer.backbone_lr_mult=%s ignored: %s has no .backbone',
                       mult, type(model).__name__)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for _, p in trainable if id(p) not in backbone_ids]
    body = [p for _, p in trainable if id(p) in backbone_ids]
    groups = [{'params': g, 'lr': config['lr'] * m, 'name': name}
              for name, g, m in (('backbone', body, mult), ('head', head, 1.0)) if g]
    if config['name'] == 'sgd':
        return torch.optim.SGD(groups, lr=config['lr'], momentum=config['momentum'],
                               weight_decay=config['weight_decay'],
                               nesterov=config['nesterov'])
    return torch.optim.AdamW(groups, lr=config['lr'], weight_decay=config['weight_decay'])
