"""The training loss as the config asks for it, with its class weights (a list, a file
of one, or counted from the training labels)."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict

import torch

from seg_perception.errors import InvalidValueError
from seg_perception.labels import LabelSpace
from seg_perception.training.distributed import DistContext, broadcast_object

LOGGER = logging.getLogger('seg_perception.training')


def _class_weights_file(path: str) -> list:
    import yaml
    if not os.path.isfile(path):
        raise FileNotFoundError(f'loss.class_weights file not found: {path}')
    with open(path, encoding='utf-8') as stream:
        loaded = yaml.safe_load(stream)
    if isinstance(loaded, dict):
        loaded = loaded.get('class_weights', loaded.get('weights'))
    if not isinstance(loaded, list):
        raise InvalidValueError(f'{path}: expected a list of class weights (or a mapping with '
                                f'"class_weights"), got {type(loaded).__name__}')
    return loaded


def build_criterion(config: Dict[str, Any], train_set, space: LabelSpace, output_dir: str,
                    ctx: DistContext) -> torch.nn.Module:
    """``losses.build_loss`` with the class weights the config asks for.

    ``loss.class_weights`` may be a list or a JSON/YAML file of one. With
    ``loss.class_weighting: median_freq|enet`` and no explicit weights they are
    counted from the training labels (by rank 0, cached in the run folder).
    """
    from seg_perception.training.losses import build_loss
    loss_cfg = dict(config['loss'])
    if isinstance(loss_cfg.get('class_weights'), str):
        loss_cfg['class_weights'] = _class_weights_file(loss_cfg['class_weights'])
    weighting = str(loss_cfg.get('class_weighting') or 'none').lower()
    weights = None
    if weighting != 'none' and loss_cfg.get('class_weights') is None:
        if ctx.is_main:
            from seg_perception.training.class_weights import cached_class_weights
            entry = cached_class_weights(
                train_set, weighting, dataset_name=str(config['data'].get('dataset', '')),
                cache_path=os.path.join(output_dir, 'class_weights.json'),
                workers=max(1, config['train']['workers']))
            weights = [float(w) for w in entry['weights']]
            LOGGER.info('class weights (%s, %s): %s', weighting,
                        'cached' if entry['cached'] else 'counted',
                        ' '.join(f'{n} {w:.2f}' for n, w in zip(space.class_names, weights)))
        weights = broadcast_object(ctx, weights)
    return build_loss(loss_cfg, space.num_classes, space.ignore_index, class_weights=weights)
