"""Training helpers that touch other modules: the loss with its class weights, the
config comparison on resume, and the prediction pictures for TensorBoard."""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Sequence, Tuple

import numpy as np
import torch

from seg_perception.errors import InvalidValueError
from seg_perception.training.distributed import DistContext, broadcast_object
from seg_perception.labels import LabelSpace
from seg_perception.training.utils import LOGGER


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


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Iterator[Tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def log_config_changes(old: Dict[str, Any], new: Dict[str, Any],
                       free_keys: Sequence[str]) -> None:
    """Warn about settings that differ from the checkpoint's (the run is then not exact)."""
    before, after = dict(_flatten(old)), dict(_flatten(new))
    changed = sorted(k for k in set(before) | set(after)
                     if k not in free_keys and before.get(k) != after.get(k))
    for key in changed:
        LOGGER.warning('resume: %s changed from %r to %r; the run will differ from an '
                       'uninterrupted one', key, before.get(key), after.get(key))


def denormalise(image: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised 3×H×W tensor back to H×W×3 uint8 RGB."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def prediction_picture(image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor,
                       space: LabelSpace, mean, std) -> np.ndarray:
    """Camera image | ground truth | prediction, side by side (H×3W×3 uint8 RGB).

    Ignored ground-truth pixels are black.
    """
    rgb = denormalise(image, mean, std)
    truth = mask.detach().cpu().numpy().astype(np.int64)
    truth = np.where((truth >= 0) & (truth < space.num_classes), truth, 255).astype(np.uint8)
    predicted = prediction.detach().cpu().numpy().astype(np.uint8)
    return np.concatenate([rgb, space.colorize(truth), space.colorize(predicted)], axis=1)
