"""Losses against values worked out by hand on 2×2 and 3×3 images."""
import math

import numpy as np
import pytest
import torch

from seg_perception.training.losses import (BoundaryWeightedCrossEntropyLoss, CrossEntropyLoss,
                                            DiceLoss, OhemCrossEntropyLoss, boundary_weight_map,
                                            build_loss)

LN3 = math.log(3.0)


def tiny_example():
    """2 classes on 2×2 pixels; the bottom-right pixel is ignored.

    Softmax probabilities of class 0 / class 1 per pixel:
      (0,0): logits [ln3, 0] -> 3/4, 1/4   target 0  -> p_true 3/4
      (0,1): logits [0, ln3] -> 1/4, 3/4   target 0  -> p_true 1/4
      (1,0): logits [0, 0]   -> 1/2, 1/2   target 1  -> p_true 1/2
      (1,1): logits [5, -5]               target 255 (ignored)
    """
    logits = torch.tensor([[[LN3, 0.0], [0.0, 5.0]],
                           [[0.0, LN3], [0.0, -5.0]]]).unsqueeze(0)
    target = torch.tensor([[[0, 0], [1, 255]]])
    return logits, target


NLL = [math.log(4 / 3), math.log(4), math.log(2)]     # -ln p_true of the 3 counted pixels


def test_cross_entropy_ignores_the_ignore_id():
    logits, target = tiny_example()
    loss = CrossEntropyLoss(ignore_index=255)(logits, target)
    assert loss.item() == pytest.approx(sum(NLL) / 3, rel=1e-6)


def test_class_weighted_cross_entropy_divides_by_the_summed_weights():
    logits, target = tiny_example()
    loss = CrossEntropyLoss(255, class_weights=[1.0, 3.0])(logits, target)
    expected = (1 * NLL[0] + 1 * NLL[1] + 3 * NLL[2]) / (1 + 1 + 3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # weights as a NumPy array or a tensor give the same value
    for weights in (np.array([1.0, 3.0]), torch.tensor([1.0, 3.0])):
        assert CrossEntropyLoss(255, class_weights=weights)(logits, target).item() == \
            pytest.approx(expected, rel=1e-6)


def test_dice_sum_denominator():
    logits, target = tiny_example()
    # class 0: p = 3/4, 1/4, 1/2; g = 1, 1, 0 -> 2*1 / (3/2 + 2) = 4/7
    # class 1: p = 1/4, 3/4, 1/2; g = 0, 0, 1 -> 2*(1/2) / (3/2 + 1) = 2/5
    loss = DiceLoss(255, denominator='sum', smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(1 - (4 / 7 + 2 / 5) / 2, rel=1e-6)
    # with smooth = 1: (2 + 1) / (7/2 + 1) and (1 + 1) / (5/2 + 1)
    loss = DiceLoss(255, denominator='sum', smooth=1.0)(logits, target)
    assert loss.item() == pytest.approx(1 - (3 / 4.5 + 2 / 3.5) / 2, rel=1e-6)


def test_dice_squared_denominator():
    logits, target = tiny_example()
    # class 0: sum p^2 = 9/16 + 1/16 + 4/16 = 7/8, sum g^2 = 2 -> 2 / (23/8) = 16/23
    # class 1: sum p^2 = 7/8, sum g^2 = 1 -> 1 / (15/8) = 8/15
    loss = DiceLoss(255, denominator='squared', smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(1 - (16 / 23 + 8 / 15) / 2, rel=1e-6)


def test_ohem_keeps_pixels_below_the_threshold():
    logits, target = tiny_example()
    # p_true = 3/4, 1/4, 1/2: with thresh 0.7 the easy first pixel drops out
    loss = OhemCrossEntropyLoss(255, thresh=0.7, min_kept=0)(logits, target)
    assert loss.item() == pytest.approx((NLL[1] + NLL[2]) / 2, rel=1e-6)


def test_ohem_min_kept_adds_the_hardest_pixels():
    logits, target = tiny_example()
    # thresh 0.3 keeps only p = 1/4; min_kept 2 adds the next hardest (p = 1/2)
    loss = OhemCrossEntropyLoss(255, thresh=0.3, min_kept=2)(logits, target)
    assert loss.item() == pytest.approx((NLL[1] + NLL[2]) / 2, rel=1e-6)
    # min_kept larger than the counted pixels keeps them all
    loss = OhemCrossEntropyLoss(255, thresh=0.3, min_kept=100)(logits, target)
    assert loss.item() == pytest.approx(sum(NLL) / 3, rel=1e-6)


def test_ohem_with_class_weights():
    logits, target = tiny_example()
    loss = OhemCrossEntropyLoss(255, class_weights=[1.0, 3.0], thresh=0.7,
                                min_kept=0)(logits, target)
    assert loss.item() == pytest.approx((NLL[1] + 3 * NLL[2]) / 4, rel=1e-6)


def test_boundary_weight_map_two_segments():
    # Two segments: class 0 in columns 0-1 (6 px), class 1 in column 2 (3 px).
    label = np.array([[0, 0, 1]] * 3)
    w0, sigma = 10.0, 2.0
    weights = boundary_weight_map(label, 255, w0=w0, sigma=sigma)
    # w_c: 9 px / (2 classes * count) -> 0.75 for class 0, 1.5 for class 1.
    # d1 = 0 inside a segment, d2 = distance to the other one: 2, 1, 1 per column.
    col = [0.75 + w0 * math.exp(-4 / (2 * sigma ** 2)),
           0.75 + w0 * math.exp(-1 / (2 * sigma ** 2)),
           1.5 + w0 * math.exp(-1 / (2 * sigma ** 2))]
    np.testing.assert_allclose(weights, np.array([col] * 3), rtol=1e-5)


def test_boundary_weight_map_unet_background():
    # Two one-pixel cells on background 0, as in the U-Net paper (background is no object).
    label = np.array([[1, 0, 1],
                      [0, 0, 0],
                      [0, 0, 0]])
    w0, sigma = 10.0, 2.0
    weights = boundary_weight_map(label, 255, w0=w0, sigma=sigma, background_ids=(0,),
                                  class_balance='none')

    def w(d1, d2):
        return 1.0 + w0 * math.exp(-(d1 + d2) ** 2 / (2 * sigma ** 2))

    r2, r5, r8 = math.sqrt(2), math.sqrt(5), math.sqrt(8)
    expected = [[w(0, 2), w(1, 1), w(0, 2)],
                [w(1, r5), w(r2, r2), w(1, r5)],
                [w(2, r8), w(r5, r5), w(2, r8)]]
    np.testing.assert_allclose(weights, np.array(expected), rtol=1e-5)


def test_boundary_weight_map_matches_brute_force():
    ndimage = pytest.importorskip('scipy.ndimage')
    rng = np.random.default_rng(3)
    label = ndimage.median_filter(rng.integers(0, 4, (20, 30)), 3)
    label[rng.random(label.shape) < 0.05] = 255
    sigma, w0 = 3.0, 10.0
    valid = label != 255
    classes, counts = np.unique(label[valid], return_counts=True)
    expected = np.zeros(label.shape)
    for cls, count in zip(classes, counts):
        expected[label == cls] = valid.sum() / (len(classes) * count)
    distances = []
    for cls in classes:
        components, count = ndimage.label(label == cls, structure=np.ones((3, 3)))
        distances += [ndimage.distance_transform_edt(components != k)
                      for k in range(1, count + 1)]
    nearest_two = np.sort(np.stack(distances), axis=0)[:2]
    expected += w0 * np.exp(-nearest_two.sum(0) ** 2 / (2 * sigma ** 2))
    expected[~valid] = 0
    np.testing.assert_allclose(boundary_weight_map(label, 255, w0, sigma), expected,
                               atol=1e-4)


def test_boundary_ce_is_cross_entropy_times_the_map():
    label = np.array([[0, 0, 1]] * 3)
    label[0, 0] = 255
    target = torch.from_numpy(label).unsqueeze(0)
    logits = torch.zeros(1, 2, 3, 3, requires_grad=True)   # ln 2 per pixel
    loss_fn = BoundaryWeightedCrossEntropyLoss(255, w0=10.0, sigma=2.0,
                                               class_weights=[2.0, 4.0], num_classes=2)
    loss = loss_fn(logits, target)
    # with class weights w_c is the weight of the pixel's class; the ignored pixel
    # still separates nothing, so d2 is 2 / 1 / 1 by column as before.
    col = [2.0 + 10 * math.exp(-4 / 8), 2.0 + 10 * math.exp(-1 / 8),
           4.0 + 10 * math.exp(-1 / 8)]
    expected = math.log(2) * (3 * sum(col) - col[0]) / 8
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits.grad is not None and logits.grad[0, :, 0, 0].abs().sum() == 0


def test_build_loss_weighted_sum_and_aux():
    logits, target = tiny_example()
    cfg = {'terms': [{'name': 'ce', 'weight': 1.0},
                     {'name': 'dice', 'weight': 0.5, 'denominator': 'squared',
                      'smooth': 0.0}],
           'aux_weight': 0.4}
    loss_fn = build_loss(cfg, num_classes=2, ignore_index=255)
    ce = sum(NLL) / 3
    dice = 1 - (16 / 23 + 8 / 15) / 2
    assert loss_fn(logits, target).item() == pytest.approx(ce + 0.5 * dice, rel=1e-6)
    # aux output: all-zero logits give CE ln 2 and dice from p = 1/2 everywhere
    aux = torch.zeros_like(logits)
    aux_dice = 1 - (2 * 1.0 / (3 * 0.25 + 2) + 2 * 0.5 / (3 * 0.25 + 1)) / 2
    total = loss_fn({'out': logits, 'aux': aux}, target)
    expected = ce + 0.5 * dice + 0.4 * (math.log(2) + 0.5 * aux_dice)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert set(loss_fn.last_values) == {'ce', 'dice', 'aux_ce', 'aux_dice', 'total'}


def test_build_loss_uses_class_weights_from_argument_or_config():
    logits, target = tiny_example()
    expected = (NLL[0] + NLL[1] + 3 * NLL[2]) / 5
    by_arg = build_loss({'class_weighting': 'enet'}, 2, 255, class_weights=np.array([1., 3.]))
    by_cfg = build_loss({'class_weights': [1.0, 3.0]}, 2, 255)
    for loss_fn in (by_arg, by_cfg):
        assert loss_fn(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # median-frequency weights are 0 for a class absent from the training labels
    zero_for_absent = build_loss({'class_weights': [0.0, 3.0]}, 2, 255)
    assert zero_for_absent(logits, target).item() == pytest.approx(NLL[2], rel=1e-6)
    opted_out = build_loss({'terms': [{'name': 'ce', 'class_weighted': False}],
                            'class_weights': [1.0, 3.0]}, 2, 255)
    assert opted_out(logits, target).item() == pytest.approx(sum(NLL) / 3, rel=1e-6)


def test_build_loss_accepts_the_whole_config_and_defaults_to_ce():
    logits, target = tiny_example()
    for cfg in (None, {}, {'loss': {'terms': ['cross_entropy']}}):
        assert build_loss(cfg, 2, 255)(logits, target).item() == \
            pytest.approx(sum(NLL) / 3, rel=1e-6)


@pytest.mark.parametrize('cfg, message', [
    ({'terms': [{'name': 'focal'}]}, "unknown loss term 'focal'"),
    ({'terms': [{'name': 'dice', 'denominatr': 'sum'}]}, "unknown option(s) ['denominatr']"),
    ({'terms': [{'name': 'dice', 'denominator': 'cubed'}]}, "'sum' or 'squared'"),
    ({'class_weighting': 'median_freq'}, 'no class weights were given'),
    ({'class_weighting': 'inverse'}, 'class_weighting must be one of'),
    ({'class_weights': [1.0, 2.0, 3.0]}, '3 class weights given for 2 classes'),
    ({'class_weights': [1.0, -2.0]}, 'finite, non-negative and not all 0'),
    ({'class_weights': [0.0, 0.0]}, 'finite, non-negative and not all 0'),
    ({'class_weights': [1.0, float('nan')]}, 'finite, non-negative and not all 0'),
    ({'terms': ['weighted_ce']}, 'needs class weights'),
    ({'term': ['ce']}, "unknown loss option(s) ['term']"),
    ({'terms': [{'name': 'ohem', 'thresh': 1.5}]}, 'probability'),
])
def test_build_loss_rejects_bad_config(cfg, message):
    with pytest.raises(ValueError) as info:
        build_loss(cfg, 2, 255)
    assert message in str(info.value)


def test_shape_mismatch_is_a_clear_error():
    logits, _ = tiny_example()
    with pytest.raises(ValueError, match='does not match logits shape'):
        CrossEntropyLoss(255)(logits, torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='integer class ids'):
        DiceLoss(255)(logits, torch.zeros(1, 2, 2))


def test_all_ignored_batch_gives_zero_not_nan():
    logits, _ = tiny_example()
    target = torch.full((1, 2, 2), 255)
    for name in ('ce', 'dice', 'ohem', 'boundary_ce'):
        value = build_loss({'terms': [name]}, 2, 255)(logits, target)
        assert value.item() == 0.0, name
