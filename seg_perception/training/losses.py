"""Training losses for semantic segmentation, chosen and weighted in the config.

``build_loss(cfg, num_classes, ignore_index, class_weights=None)`` returns one module
that takes the network output (a logits tensor N×C×H×W, or the training-mode dict
``{'out': logits, 'aux': logits}``) and the int64 N×H×W target, and returns a scalar::

    loss:
      terms:                       # summed, each times its weight
        - {name: ce, weight: 1.0}
        - {name: dice, weight: 0.5, denominator: squared}
      aux_weight: 0.4              # total = loss(out) + aux_weight * loss(aux)
      class_weighting: median_freq # median_freq | enet | none
      class_weights: [...]         # optional: explicit per-class weights

Terms (options besides ``name`` and ``weight``):

- ``ce``: pixel-wise cross entropy; target pixels equal to ``ignore_index`` count for
  nothing. With class weights this is the class-weighted CE, whose mean divides by the
  summed weights of the counted pixels (PyTorch's convention).
- ``weighted_ce``: the same, but class weights are required.
- ``boundary_ce``: cross entropy times the U-Net weight map
  ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` (Ronneberger et al. 2015),
  averaged over the counted pixels. Objects are the connected components of every class
  (except ``background_ids``); d1 and d2 are the distances to the nearest and second-nearest
  object, so inside an object d1 = 0 and d2 is the distance to the closest other segment,
  and pixels near borders between segments weigh more. With ``background_ids: [0]`` on a
  cells-versus-background task this is exactly the paper's map. ``w_c`` is the class
  weight of the pixel's class when class weights are given, otherwise the per-image
  inverse class frequency scaled to average 1 (``class_balance: none`` makes it 1).
  Options: ``w0`` (10), ``sigma`` (5 pixels), ``background_ids``, ``class_balance``.
- ``dice``: 1 - mean over classes of the soft Dice coefficient
  ``(2 sum(p g) + smooth) / (D + smooth)`` over all counted pixels of the batch, where
  ``D = sum(p) + sum(g)`` (``denominator: sum``) or ``sum(p^2) + sum(g^2)``
  (``denominator: squared``, Milletari et al. 2016). Options: ``denominator``, ``smooth`` (1).
- ``ohem``: online hard example mining CE: only pixels whose probability of the true class
  is below ``thresh`` (0.7) count, but at least the ``min_kept`` (100000) hardest pixels
  of the batch (fewer when the batch has fewer counted pixels).

Class weights (a list, NumPy array or tensor of ``num_classes`` values >= 0, e.g. from
``seg_perception.training.class_weights.compute_class_weights``) come from ``cfg['class_weights']``
or the ``class_weights`` argument; ``ce``, ``ohem`` and ``boundary_ce`` use them when
given (a term can opt out with ``class_weighted: false``). ``class_weighting`` other than
``none`` without weights is an error, so a config never silently trains unweighted.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.config import LOSS_KEYS
from seg_perception.errors import InvalidValueError
from seg_perception.training.boundary_weights import boundary_weight_map

CLASS_WEIGHTINGS = ('none', 'median_freq', 'enet')


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise InvalidValueError(f'loss expects N×C×H×W logits, got shape {tuple(logits.shape)}')
    if target.dim() != 3 or target.shape[0] != logits.shape[0] \
            or target.shape[1:] != logits.shape[2:]:
        raise InvalidValueError(f'target shape {tuple(target.shape)} does not match logits shape '
                                f'{tuple(logits.shape)} (expected N×H×W)')
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise InvalidValueError(f'target must hold integer class ids, got {target.dtype}')


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss that still depends on the logits (all pixels ignored)."""
    return logits.sum() * 0.0


def _as_weights(values, num_classes: int) -> torch.Tensor:
    if hasattr(values, 'detach'):
        values = values.detach().cpu().numpy()
    weights = np.asarray(values, dtype=np.float64).reshape(-1)
    if weights.size != num_classes:
        raise InvalidValueError(f'{weights.size} class weights given for {num_classes} classes')
    # 0 is allowed: median-frequency weighting gives it to classes absent from the labels
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
        raise InvalidValueError(f'class weights must be finite, non-negative and not all 0, '
                                f'got {weights.tolist()}')
    return torch.as_tensor(weights, dtype=torch.float32)


class _WeightedLoss(nn.Module):
    """Base for losses with an ignore id and optional per-class weights."""

    def __init__(self, ignore_index: int = 255, class_weights=None, num_classes=None):
        super().__init__()
        self.ignore_index = int(ignore_index)
        if class_weights is not None:
            count = num_classes if num_classes is not None else len(class_weights)
            self.register_buffer('class_weights', _as_weights(class_weights, count))
        else:
            self.class_weights = None

    def _weights_for(self, logits: torch.Tensor) -> Optional[torch.Tensor]:
        if self.class_weights is None:
            return None
        if self.class_weights.numel() != logits.shape[1]:
            raise InvalidValueError(f'{self.class_weights.numel()} class weights for logits with '
                                    f'{logits.shape[1]} classes')
        return self.class_weights.to(device=logits.device, dtype=logits.dtype)


class CrossEntropyLoss(_WeightedLoss):
    """Pixel-wise (optionally class-weighted) cross entropy that skips ignored pixels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(logits, target)
        target = target.long()
        if not (target != self.ignore_index).any():
            return _zero(logits)
        return F.cross_entropy(logits, target, weight=self._weights_for(logits),
                               ignore_index=self.ignore_index)


class OhemCrossEntropyLoss(_WeightedLoss):
    """Cross entropy over the hard pixels only (online hard example mining)."""

    def __init__(self, ignore_index: int = 255, class_weights=None, num_classes=None,
                 thresh: float = 0.7, min_kept: int = 100000):
        super().__init__(ignore_index, class_weights, num_classes)
        if not 0.0 < float(thresh) <= 1.0:
            raise InvalidValueError(f'ohem thresh is a probability in (0, 1], got {thresh}')
        if int(min_kept) < 0:
            raise InvalidValueError(f'ohem min_kept must be >= 0, got {min_kept}')
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(logits, target)
        target = target.long()
        valid = target != self.ignore_index
        count = int(valid.sum())
        if count == 0:
            return _zero(logits)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        nll = F.cross_entropy(logits, safe_target, reduction='none')[valid]
        with torch.no_grad():
            keep = torch.exp(-nll) < self.thresh
            wanted = min(self.min_kept, count)
            if int(keep.sum()) < wanted:
                keep = torch.zeros_like(keep)
                keep[torch.topk(nll, wanted).indices] = True
        if not keep.any():
            return _zero(logits)
        weights = self._weights_for(logits)
        if weights is None:
            return nll[keep].mean()
        pixel_weights = weights[safe_target[valid][keep]]
        return (nll[keep] * pixel_weights).sum() / pixel_weights.sum()


class BoundaryWeightedCrossEntropyLoss(_WeightedLoss):
    """Cross entropy weighted per pixel by the U-Net border weight map."""

    def __init__(self, ignore_index: int = 255, class_weights=None, num_classes=None,
                 w0: float = 10.0, sigma: float = 5.0, background_ids: Sequence[int] = (),
                 class_balance: str = 'image'):
        super().__init__(ignore_index, class_weights, num_classes)
        if float(sigma) <= 0 or float(w0) < 0:
            raise InvalidValueError(f'boundary_ce needs sigma > 0 and w0 >= 0, got {sigma}, {w0}')
        if class_balance not in ('image', 'none'):
            raise InvalidValueError(f"boundary_ce class_balance must be 'image' or 'none', "
                                    f'got {class_balance!r}')
        self.w0 = float(w0)
        self.sigma = float(sigma)
        self.background_ids = tuple(int(i) for i in background_ids)
        self.class_balance = class_balance
        self._cache = (None, None)    # the same target serves the main and the aux output

    def weight_maps(self, target: torch.Tensor) -> torch.Tensor:
        """N×H×W float weight maps of a target batch (computed on the CPU)."""
        if self._cache[0] is target:
            return self._cache[1]
        class_weights = (None if self.class_weights is None
                         else self.class_weights.cpu().numpy().tolist())
        labels = target.detach().cpu().numpy()
        maps = np.stack([boundary_weight_map(
            one, self.ignore_index, self.w0, self.sigma, class_weights, self.background_ids,
            self.class_balance) for one in labels])
        result = torch.from_numpy(maps).to(target.device)
        self._cache = (target, result)
        return result

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(logits, target)
        target = target.long()
        valid = target != self.ignore_index
        if not valid.any():
            return _zero(logits)
        weights = self.weight_maps(target).to(logits.dtype)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        nll = F.cross_entropy(logits, safe_target, reduction='none')
        return (nll * weights)[valid].sum() / valid.sum()


class DiceLoss(nn.Module):
    """1 - soft Dice averaged over classes, over all counted pixels of the batch."""

    def __init__(self, ignore_index: int = 255, denominator: str = 'sum',
                 smooth: float = 1.0):
        super().__init__()
        if denominator not in ('sum', 'squared'):
            raise InvalidValueError("dice denominator must be 'sum' or 'squared', "
                                    f'got {denominator!r}')
        if float(smooth) < 0:
            raise InvalidValueError(f'dice smooth must be >= 0, got {smooth}')
        self.ignore_index = int(ignore_index)
        self.denominator = denominator
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(logits, target)
        target = target.long()
        valid = (target != self.ignore_index).unsqueeze(1).to(logits.dtype)   # N×1×H×W
        if not valid.any():
            return _zero(logits)
        probs = torch.softmax(logits, dim=1) * valid
        safe_target = torch.where(target != self.ignore_index, target, torch.zeros_like(target))
        if safe_target.max() >= logits.shape[1]:
            raise InvalidValueError(f'target id {int(safe_target.max())} is not a class of logits '
                                    f'with {logits.shape[1]} classes')
        onehot = F.one_hot(safe_target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        onehot = onehot * valid
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        if self.denominator == 'squared':
            denominator = (probs ** 2).sum(dims) + (onehot ** 2).sum(dims)
        else:
            denominator = probs.sum(dims) + onehot.sum(dims)
        dice = (2.0 * intersection + self.smooth) / (denominator + self.smooth).clamp_min(1e-12)
        return 1.0 - dice.mean()


# name -> (class, uses class weights, options the config may set)
_TERMS = {
    'ce': (CrossEntropyLoss, True, ()),
    'weighted_ce': (CrossEntropyLoss, True, ()),
    'boundary_ce': (BoundaryWeightedCrossEntropyLoss, True,
                    ('w0', 'sigma', 'background_ids', 'class_balance')),
    'dice': (DiceLoss, False, ('denominator', 'smooth')),
    'ohem': (OhemCrossEntropyLoss, True, ('thresh', 'min_kept')),
}
_ALIASES = {'cross_entropy': 'ce', 'unet_ce': 'boundary_ce', 'ohem_ce': 'ohem'}


class SegmentationLoss(nn.Module):
    """A weighted sum of loss terms, applied to the main and (optionally) aux output.

    ``last_values`` holds the detached value of every term of the latest call (for logs).
    """

    def __init__(self, terms: Dict[str, nn.Module], weights: Dict[str, float],
                 aux_weight: float = 0.4):
        super().__init__()
        if not terms:
            raise InvalidValueError('a loss needs at least one term')
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.aux_weight = float(aux_weight)
        self.last_values: Dict[str, float] = {}

    def _combined(self, logits, target, prefix: str) -> torch.Tensor:
        total = None
        for name, term in self.terms.items():
            value = term(logits, target)
            self.last_values[prefix + name] = float(value.detach())
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        return total

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        self.last_values = {}
        if isinstance(output, dict):
            if 'out' not in output:
                raise InvalidValueError(f"model output dict lacks 'out' (keys: {sorted(output)})")
            loss = self._combined(output['out'], target, '')
            if output.get('aux') is not None and self.aux_weight > 0:
                loss = loss + self.aux_weight * self._combined(output['aux'], target, 'aux_')
        else:
            loss = self._combined(output, target, '')
        self.last_values['total'] = float(loss.detach())
        return loss


def _parse_term(entry, index: int) -> dict:
    if isinstance(entry, str):
        entry = {'name': entry}
    if not isinstance(entry, dict) or 'name' not in entry:
        raise InvalidValueError(f'loss.terms[{index}] must be a name or a dict with a name, '
                                f'got {entry!r}')
    entry = dict(entry)
    name = _ALIASES.get(str(entry['name']).lower(), str(entry['name']).lower())
    if name not in _TERMS:
        raise InvalidValueError(f"unknown loss term {entry['name']!r}; known: "
                                f"{', '.join(sorted(_TERMS))}")
    entry['name'] = name
    return entry


def build_loss(cfg: Optional[dict], num_classes: int, ignore_index: int,
               class_weights=None) -> SegmentationLoss:
    """Build the configured loss; see the module docstring for the config keys."""
    cfg = dict(cfg or {})
    if 'loss' in cfg and 'terms' not in cfg:        # the whole training config
        cfg = dict(cfg['loss'] or {})
    known = set(LOSS_KEYS)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise InvalidValueError(f'unknown loss option(s) {unknown}; known: {sorted(known)}')
    weighting = str(cfg.get('class_weighting') or 'none').lower()
    if weighting not in CLASS_WEIGHTINGS:
        raise InvalidValueError(f'loss.class_weighting must be one of {CLASS_WEIGHTINGS}, '
                                f'got {weighting!r}')
    weights = cfg.get('class_weights')
    if weights is None:
        weights = class_weights
    if weights is not None:
        weights = _as_weights(weights, num_classes)
    elif weighting != 'none':
        raise InvalidValueError(f'loss.class_weighting is {weighting!r} but no class weights were '
                                'given; compute them with seg_perception.training.class_weights.'
                                'compute_class_weights (or `seg-perception class-weights`) and '
                                'pass them, or set loss.class_weights')
    entries = cfg.get('terms') or [{'name': 'ce', 'weight': 1.0}]
    terms: Dict[str, nn.Module] = {}
    term_weights: Dict[str, float] = {}
    for index, raw in enumerate(entries):
        entry = _parse_term(raw, index)
        name = entry.pop('name')
        cls, weightable, options = _TERMS[name]
        weight = float(entry.pop('weight', 1.0))
        use_weights = bool(entry.pop('class_weighted', True)) and weightable
        bad = sorted(set(entry) - set(options))
        if bad:
            raise InvalidValueError(f'loss term {name!r}: unknown option(s) {bad}; known: '
                                    f'{sorted(options) + ["class_weighted", "weight"]}')
        if name == 'weighted_ce' and weights is None:
            raise InvalidValueError("loss term 'weighted_ce' needs class weights "
                                    '(loss.class_weights or class_weighting: median_freq|enet)')
        kwargs = dict(entry, ignore_index=ignore_index)
        if weightable:
            kwargs['class_weights'] = weights if use_weights else None
            kwargs['num_classes'] = num_classes
        key = name if name not in terms else f'{name}_{index}'
        terms[key] = cls(**kwargs)
        term_weights[key] = weight
    return SegmentationLoss(terms, term_weights, cfg.get('aux_weight', 0.4))
