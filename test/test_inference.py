"""Test-time inference helpers: sliding windows, network-size resizing, scales, flip."""
import numpy as np
import pytest
import torch
from torch import nn

from seg_perception.evaluation.inference import (predict_logits, sliding_window_logits,
                                                 to_model_input, window_starts)


class Recorder(nn.Module):
    """Two-class logits from the pixel values (plus the column index when ``asymmetric``,
    so that flipping matters); remembers the input sizes it saw."""

    def __init__(self, asymmetric=False):
        super().__init__()
        self.sizes = []
        self.asymmetric = asymmetric

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        column = torch.arange(x.shape[-1], dtype=torch.float32).view(1, 1, 1, -1)
        return torch.cat([x[:, :1] * 2.0, x[:, 1:2] + self.asymmetric * 0.1 * column], 1)


def test_window_starts_cover_the_image():
    assert window_starts(10, 32, 21) == [0]
    assert window_starts(100, 32, 21) == [0, 21, 42, 63, 68]
    for length, window, stride in ((77, 64, 43), (45, 32, 21), (64, 64, 43)):
        covered = np.zeros(length, bool)
        for start in window_starts(length, window, stride):
            covered[start:start + window] = True
        assert covered.all()


def test_sliding_window_equals_the_whole_image_for_a_per_pixel_model():
    image = torch.randn(1, 3, 45, 77)
    model = Recorder()
    logits = sliding_window_logits(model, image, (32, 64), overlap=1 / 3)
    torch.testing.assert_close(logits, model(image))
    assert set(model.sizes[:-1]) == {(32, 64)}
    small = torch.randn(1, 3, 20, 30)     # smaller than a window: padded, then cropped
    torch.testing.assert_close(sliding_window_logits(model, small, (32, 64)), model(small))


def test_whole_mode_runs_at_the_network_size_per_scale_and_flip_averages():
    model = Recorder()
    image = torch.randn(1, 3, 45, 77)
    logits = predict_logits(model, image, (32, 64), mode='whole', scales=(0.5, 1.0))
    assert model.sizes == [(16, 32), (32, 64)] and logits.shape[-2:] == (45, 77)
    model = Recorder(asymmetric=True)
    flipped = predict_logits(model, image, (45, 77), flip=True)
    plain = model(image)
    mirrored = torch.flip(model(torch.flip(image, [3])), [3])
    assert not torch.allclose(plain, mirrored)
    torch.testing.assert_close(flipped, (plain + mirrored) / 2)
    with pytest.raises(ValueError, match='mode must be one of'):
        predict_logits(model, image, (32, 64), mode='tiles')
    with pytest.raises(ValueError, match='scales must be positive'):
        predict_logits(model, image, (32, 64), scales=(0.0,))


def test_to_model_input_checks_the_image():
    tensor = to_model_input(np.full((2, 3, 3), 255, np.uint8), (0.5,) * 3, (0.5,) * 3)
    assert tensor.shape == (1, 3, 2, 3) and torch.allclose(tensor, torch.ones_like(tensor))
    with pytest.raises(ValueError, match='H×W×3 uint8 RGB'):
        to_model_input(np.zeros((2, 3), np.uint8), (0.5,) * 3, (0.5,) * 3)
