"""Paired image + mask transforms built on ``torchvision.transforms.v2``.

The image travels as a ``tv_tensors.Image`` (uint8 3×H×W) and the mask as a
``tv_tensors.Mask`` (uint8 1×H×W), so every geometric step moves both the same way
and the mask is always resampled nearest (never blended into a non-existent class);
photometric steps touch the image only. The last step returns plain tensors: the
image float32 3×H×W normalised with (mean, std) on the 0..1 scale, the mask int64 H×W.

Training order: random scale → random crop (padding the mask with the ignore id
and the image with the mean colour or 0) → horizontal flip → colour jitter → low
light (gamma + sensor noise) → glare (a light source's veil) → elastic deformation
(Ronneberger et al., U-Net, 2015) → to tensor + normalise.
Every step comes from the ``augment`` section of the data config (see
:mod:`seg_perception.data`); evaluation is to tensor + normalise, optionally resized.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from seg_perception.errors import InvalidValueError

AUGMENT_KEYS = ('scale', 'crop', 'pad_image', 'hflip', 'color_jitter', 'low_light', 'glare',
                'elastic')
LOW_LIGHT_KEYS = ('p', 'gamma', 'noise')
GLARE_KEYS = ('p', 'strength', 'radius')
JITTER_KEYS = ('brightness', 'contrast', 'saturation', 'hue')


class ToTvTensors:
    """(H×W×3 uint8 array, H×W array) → (tv_tensors.Image, tv_tensors.Mask 1×H×W uint8)."""

    def __call__(self, image, mask):
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask).astype(np.uint8))[None]
        return tv_tensors.Image(image_t), tv_tensors.Mask(mask_t)


class RandomScale:
    """Rescale image and mask by one factor drawn uniformly from ``[low, high]``."""

    def __init__(self, low: float, high: float):
        if not 0 < low <= high:
            raise InvalidValueError(f'augment.scale: need 0 < low <= high, got [{low}, {high}]')
        self.low, self.high = float(low), float(high)

    def __call__(self, image, mask):
        factor = self.low + (self.high - self.low) * float(torch.rand(()))
        height, width = image.shape[-2:]
        size = [max(1, round(height * factor)), max(1, round(width * factor))]
        # F.resize dispatches on the tv_tensor type: bilinear for Image, nearest for Mask
        return F.resize(image, size, antialias=True), F.resize(mask, size)


class Resize:
    """Resize image (bilinear) and mask (nearest) to a fixed (H, W)."""

    def __init__(self, size: Sequence[int]):
        self.size = [int(size[0]), int(size[1])]

    def __call__(self, image, mask):
        return F.resize(image, self.size, antialias=True), F.resize(mask, self.size)


class ToModelInput:
    """Image → float32 normalised 3×H×W tensor; mask → int64 H×W tensor (plain tensors)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)
        if self.mean.numel() != 3 or self.std.numel() != 3 or (self.std <= 0).any():
            raise InvalidValueError(f'mean/std: need 3 values each, std > 0; got {mean}, {std}')

    def __call__(self, image, mask):
        image = image.as_subclass(torch.Tensor).float().div_(255)
        image = (image - self.mean) / self.std
        return image.contiguous(), mask.as_subclass(torch.Tensor)[0].long()


class LowLight:
    """With probability ``p``, make the image look as if taken at night.

    A gamma drawn from ``gamma`` (> 1 darkens the mid-tones and shadows while bright
    lights stay bright, unlike a brightness factor that scales everything alike), then
    Gaussian sensor noise with a standard deviation drawn from [0, ``noise``] grey
    levels (a camera's high gain in the dark). The mask is untouched.
    """

    def __init__(self, p: float, gamma: Tuple[float, float], noise: float):
        if not 0 <= p <= 1:
            raise InvalidValueError(f'augment.low_light.p: a probability in 0..1, got {p}')
        if not 0 < gamma[0] <= gamma[1]:
            raise InvalidValueError(f'augment.low_light.gamma: need 0 < low <= high, got {gamma}')
        if noise < 0:
            raise InvalidValueError(f'augment.low_light.noise: grey levels >= 0, got {noise}')
        self.p, self.gamma, self.noise = float(p), gamma, float(noise)

    def __call__(self, image, mask):
        if float(torch.rand(())) >= self.p:
            return image, mask
        low, high = self.gamma
        gamma = low + (high - low) * float(torch.rand(()))
        dark = image.as_subclass(torch.Tensor).float().div_(255).pow_(gamma).mul_(255)
        if self.noise > 0:
            dark += torch.randn_like(dark) * (self.noise * float(torch.rand(())))
        dark = dark.round_().clamp_(0, 255).to(torch.uint8)
        return tv_tensors.wrap(dark, like=image), mask


class Glare:
    """With probability ``p``, veil the image in the glare of a light in view.

    A low sun or an oncoming car's headlights scatter light in the lens and windscreen: near
    the source everything fades towards white and loses its contrast, far from it little
    changes. The veil is a Gaussian spot, ``strength`` (drawn from its range, 0..1) at its
    centre and of a width drawn from ``radius`` (a fraction of the image diagonal), centred
    anywhere across the width in the upper half of the frame, where low suns and headlights
    are; each pixel moves that share of the way to white. The mask is untouched: a veiled
    road is still road.
    """

    def __init__(self, p: float, strength: Tuple[float, float], radius: Tuple[float, float]):
        if not 0 <= p <= 1:
            raise InvalidValueError(f'augment.glare.p: a probability in 0..1, got {p}')
        if not 0 <= strength[0] <= strength[1] <= 1:
            raise InvalidValueError(f'augment.glare.strength: need 0 <= low <= high <= 1, '
                                    f'got {list(strength)}')
        if not 0 < radius[0] <= radius[1]:
            raise InvalidValueError(f'augment.glare.radius: need 0 < low <= high (fractions of '
                                    f'the diagonal), got {list(radius)}')
        self.p, self.strength, self.radius = float(p), strength, radius

    def __call__(self, image, mask):
        if float(torch.rand(())) >= self.p:
            return image, mask
        height, width = image.shape[-2:]
        draws = torch.rand(4)
        strength = self.strength[0] + (self.strength[1] - self.strength[0]) * float(draws[0])
        radius = self.radius[0] + (self.radius[1] - self.radius[0]) * float(draws[1])
        sigma = radius * float(np.hypot(height, width))
        centre_x, centre_y = float(draws[2]) * width, float(draws[3]) * height / 2
        ys = (torch.arange(height, dtype=torch.float32) - centre_y) ** 2
        xs = (torch.arange(width, dtype=torch.float32) - centre_x) ** 2
        veil = strength * torch.exp(-(ys[:, None] + xs[None, :]) / (2 * sigma * sigma))
        pixels = image.as_subclass(torch.Tensor).float()
        veiled = (pixels + (255 - pixels) * veil).round_().clamp_(0, 255).to(torch.uint8)
        return tv_tensors.wrap(veiled, like=image), mask


def _pair(value, key: str) -> Tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise InvalidValueError(f'{key}: expected a number or [a, b], got {value!r}')


def _check_keys(section: dict, allowed, where: str) -> None:
    if not isinstance(section, dict):
        raise InvalidValueError(f'{where}: expected a mapping, got {section!r}')
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise InvalidValueError(f'{where}: unknown keys {unknown}; allowed: {", ".join(allowed)}')


def _image_fill(pad_image: str, mean: Sequence[float]):
    if pad_image == 'mean':
        return [int(round(255 * float(m))) for m in mean]
    if pad_image in ('zero', 0, '0'):
        return 0
    raise InvalidValueError(f'augment.pad_image: "mean" or "zero", got {pad_image!r}')


def train_steps(augment: dict, mean, ignore_index: int) -> list:
    """The geometric and photometric steps of the ``augment`` config section, in order."""
    _check_keys(augment, AUGMENT_KEYS, 'augment')
    steps = []
    if augment.get('scale'):
        steps.append(RandomScale(*_pair(augment['scale'], 'augment.scale')))
    fill = {tv_tensors.Image: _image_fill(augment.get('pad_image', 'mean'), mean),
            tv_tensors.Mask: int(ignore_index)}
    if augment.get('crop'):
        height, width = (int(v) for v in _pair(augment['crop'], 'augment.crop'))
        if height <= 0 or width <= 0:
            raise InvalidValueError(f'augment.crop: need positive [H, W], got {augment["crop"]!r}')
        steps.append(v2.RandomCrop((height, width), pad_if_needed=True, fill=fill))
    flip = float(augment.get('hflip') or 0)
    if not 0 <= flip <= 1:
        raise InvalidValueError(f'augment.hflip: a probability in 0..1, got {flip}')
    if flip > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip))
    jitter = augment.get('color_jitter') or {}
    _check_keys(jitter, JITTER_KEYS, 'augment.color_jitter')
    # A number x means factors in [1 - x, 1 + x] (hue: [-x, x]); a pair [lo, hi] gives the
    # range itself, e.g. brightness [0.15, 1.3] to darken frames towards night.
    jitter = {k: (tuple(float(x) for x in _pair(v, f'augment.color_jitter.{k}'))
                  if isinstance(v, (list, tuple)) else float(v))
              for k, v in jitter.items() if v}
    if jitter:
        steps.append(v2.ColorJitter(**jitter))
    low_light = augment.get('low_light') or {}
    _check_keys(low_light, LOW_LIGHT_KEYS, 'augment.low_light')
    if low_light:       # built even at p 0, so that a bad value is named, then left out
        step = LowLight(float(low_light.get('p', 0.5)),
                        _pair(low_light.get('gamma', [1.5, 3.0]), 'augment.low_light.gamma'),
                        float(low_light.get('noise', 0)))
        if step.p > 0:
            steps.append(step)
    glare = augment.get('glare') or {}
    _check_keys(glare, GLARE_KEYS, 'augment.glare')
    if glare:
        step = Glare(float(glare.get('p', 0.5)),
                     _pair(glare.get('strength', [0.3, 0.9]), 'augment.glare.strength'),
                     _pair(glare.get('radius', [0.1, 0.4]), 'augment.glare.radius'))
        if step.p > 0:
            steps.append(step)
    elastic = augment.get('elastic') or {}
    _check_keys(elastic, ('alpha', 'sigma'), 'augment.elastic')
    alpha, sigma = float(elastic.get('alpha') or 0), float(elastic.get('sigma') or 0)
    if alpha > 0:
        if sigma <= 0:
            raise InvalidValueError(f'augment.elastic: alpha {alpha} needs sigma > 0 (the '
                                    'smoothing of the displacement field, in pixels)')
        steps.append(v2.ElasticTransform(alpha=alpha, sigma=sigma, fill=fill))
    return steps


def build_transforms(cfg: dict, train: bool, mean, std, ignore_index: int = 255,
                     eval_resize: Optional[Sequence[int]] = None) -> v2.Compose:
    """A callable ``(image H×W×3 uint8, mask H×W) -> (float32 3×H×W, int64 H×W)``.

    ``cfg`` is the ``data:`` config (its ``augment`` and ``eval_resize`` keys are used);
    ``mean``/``std`` are the model's normalisation on the 0..1 scale.
    """
    steps = [ToTvTensors()]
    if train:
        steps += train_steps(cfg.get('augment') or {}, mean, ignore_index)
    else:
        size = eval_resize if eval_resize is not None else cfg.get('eval_resize')
        if size:
            steps.append(Resize(_pair(size, 'eval_resize')))
    steps.append(ToModelInput(mean, std))
    return v2.Compose(steps)
