"""The validation pictures shown in TensorBoard: image | ground truth | prediction."""
from __future__ import annotations

import numpy as np
import torch

from seg_perception.labels import LabelSpace


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
