"""Paired augmentation: image and mask stay aligned, masks stay nearest, padding is ignore."""
import numpy as np
import pytest
import torch

from seg_perception.data import build_transforms as build_for_dataset
from seg_perception.data.transforms import build_transforms

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)], np.float32)
IGNORE = 255


def block_scene(seed=0, blocks=(4, 4), block=(12, 16)):
    """A label map of random class blocks and the image whose colour encodes the class."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(PALETTE), blocks)
    label = np.kron(classes, np.ones(block, np.int64)).astype(np.uint8)
    return PALETTE[label].astype(np.uint8), label


def decode(image):
    """Class of each pixel from its colour (nearest palette entry) after un-normalising."""
    rgb = (image.numpy().transpose(1, 2, 0) * STD + MEAN) * 255
    return np.argmin(((rgb[:, :, None, :] - PALETTE) ** 2).sum(-1), axis=-1)


def interior(mask, radius=2):
    """Pixels whose (2r+1)² neighbourhood has one class, is not ignore nor the border.

    Near the border a deformed image blends in the fill colour from outside.
    """
    padded = np.pad(mask, radius, constant_values=-1)
    same = np.ones(mask.shape, bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] == mask
    return same & (mask != IGNORE)


def agreement(image, mask):
    mask = mask.numpy()
    inside = interior(mask)
    return inside.sum(), (decode(image)[inside] == mask[inside]).mean()


FULL = {'augment': {'scale': [0.5, 2.0], 'crop': [40, 56], 'hflip': 0.5,
                    'elastic': {'alpha': 6.0, 'sigma': 4.0}}}


def test_augmentation_keeps_image_and_mask_aligned():
    transform = build_transforms(FULL, True, MEAN, STD, ignore_index=IGNORE)
    torch.manual_seed(0)
    for seed in range(8):
        image, label = block_scene(seed)
        out_image, out_mask = transform(image, label)
        assert out_image.shape == (3, 40, 56) and out_image.dtype == torch.float32
        assert out_mask.shape == (40, 56) and out_mask.dtype == torch.int64
        checked, share = agreement(out_image, out_mask)
        assert checked > 100
        assert share == 1.0, f'seed {seed}: {share:.3f} of interior pixels agree'


def test_alignment_check_detects_a_shifted_mask():
    image, label = block_scene(3)
    transform = build_transforms({}, False, MEAN, STD)
    out_image, out_mask = transform(image, label)
    assert agreement(out_image, out_mask)[1] == 1.0
    assert agreement(out_image, torch.roll(out_mask, 6, dims=1))[1] < 0.9


def test_masks_are_resampled_nearest():
    image, label = block_scene(1)
    label = np.where(label > 1, 7, 0).astype(np.uint8)   # only ids 0 and 7
    cfg = {'augment': {'scale': [0.7, 1.6], 'elastic': {'alpha': 20.0, 'sigma': 3.0}}}
    transform = build_transforms(cfg, True, MEAN, STD, ignore_index=IGNORE)
    torch.manual_seed(1)
    for _ in range(4):
        _, mask = transform(image, label)
        assert set(mask.unique().tolist()) <= {0, 7, IGNORE}


ZERO_AFTER_NORMALISING = tuple(-m / s for m, s in zip(MEAN, STD))


@pytest.mark.parametrize('pad_image, expected_pad',
                         [('mean', (0.0, 0.0, 0.0)), ('zero', ZERO_AFTER_NORMALISING)])
def test_crop_pads_mask_with_ignore_and_image_with_fill(pad_image, expected_pad):
    image, label = block_scene(2, blocks=(2, 2), block=(8, 12))     # 16×24
    # the dataset's label space gives the ignore id: 11 for CamVid
    cfg = {'dataset': 'camvid', 'augment': {'crop': [32, 40], 'pad_image': pad_image}}
    out_image, out_mask = build_for_dataset(cfg, True, MEAN, STD)(image, label)
    padded = out_mask.numpy() == 11
    assert padded.sum() == 32 * 40 - 16 * 24
    assert sorted(out_mask[~torch.from_numpy(padded)].unique().tolist()) == \
        sorted(np.unique(label).tolist())
    pad_pixels = out_image.numpy()[:, padded]
    # the mean colour is stored as uint8, so allow one grey level of rounding
    np.testing.assert_allclose(pad_pixels,
                               np.broadcast_to(np.array(expected_pad)[:, None], pad_pixels.shape),
                               atol=1 / 255 / min(STD) + 1e-6)


def test_color_jitter_changes_image_only():
    image, label = block_scene(4)
    cfg = {'augment': {'color_jitter': {'brightness': 0.5, 'contrast': 0.5, 'saturation': 0.5,
                                        'hue': 0.1}}}
    plain_image, plain_mask = build_transforms({}, True, MEAN, STD)(image, label)
    torch.manual_seed(3)
    jitter_image, jitter_mask = build_transforms(cfg, True, MEAN, STD)(image, label)
    assert torch.equal(jitter_mask, plain_mask)
    assert not torch.allclose(jitter_image, plain_image)


def test_color_jitter_takes_a_range_to_darken_towards_night():
    image, label = block_scene(4)
    cfg = {'augment': {'color_jitter': {'brightness': [0.15, 0.2]}}}
    plain_image, _ = build_transforms({}, True, MEAN, STD)(image, label)
    torch.manual_seed(0)
    dark_image, _ = build_transforms(cfg, True, MEAN, STD)(image, label)
    # back on the 0..1 scale: every pixel at 15-20% of its brightness
    plain = plain_image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    dark = dark_image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    bright = plain > 0.2
    ratio = dark[bright] / plain[bright]
    assert 0.14 <= ratio.min() and ratio.max() <= 0.21
    with pytest.raises(ValueError, match='color_jitter.brightness'):
        build_transforms({'augment': {'color_jitter': {'brightness': [0.1, 0.2, 0.3]}}},
                         True, MEAN, STD)


def back_to_grey(tensor):
    """A normalised image tensor back on the 0..255 scale."""
    return (tensor * torch.tensor(STD)[:, None, None]
            + torch.tensor(MEAN)[:, None, None]) * 255


def test_low_light_darkens_mid_tones_more_than_lights_and_adds_noise():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = 100           # a mid-grey road
    image[:, 20:] = 250           # a street light
    label = np.zeros((40, 40), np.uint8)
    label[:, 20:] = 1

    cfg = {'augment': {'low_light': {'p': 1.0, 'gamma': [2.0, 2.0]}}}
    dark, mask = build_transforms(cfg, True, MEAN, STD)(image, label)
    grey = back_to_grey(dark)
    # (100/255)^2 * 255 = 39.2 and (250/255)^2 * 255 = 245.1: shadows sink, lights stay
    assert torch.allclose(grey[:, :, :20], torch.tensor(39.0), atol=0.6)
    assert torch.allclose(grey[:, :, 20:], torch.tensor(245.0), atol=0.6)
    assert torch.equal(mask, torch.from_numpy(label).long())
    torch.manual_seed(1)
    noisy = back_to_grey(build_transforms(
        {'augment': {'low_light': {'p': 1.0, 'gamma': [2.0, 2.0], 'noise': 20}}},
        True, MEAN, STD)(image, label)[0])
    assert 0.5 < float((noisy[:, :, :20] - 39.2).std()) < 20
    # p = 0 leaves the image as it is
    same, _ = build_transforms({'augment': {'low_light': {'p': 0.0}}}, True, MEAN, STD)(
        image, label)
    assert torch.allclose(back_to_grey(same)[:, :, :20], torch.tensor(100.0), atol=0.6)


def test_glare_fades_towards_white_near_its_source_and_keeps_the_mask():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, ::2] = 40                 # dark stripes: contrast the veil takes away
    image[:, 1::2] = 120
    label = np.tile(np.arange(80, dtype=np.uint8) % 3, (60, 1))

    cfg = {'augment': {'glare': {'p': 1.0, 'strength': [0.8, 0.8], 'radius': [0.15, 0.15]}}}
    transform = build_transforms(cfg, True, MEAN, STD)
    for seed in range(5):
        torch.manual_seed(seed)
        veiled, mask = transform(image, label)
        assert torch.equal(mask, torch.from_numpy(label).long())
        grey = back_to_grey(veiled)[0]
        plain = torch.from_numpy(image[..., 0]).float()
        assert bool((grey >= plain - 0.6).all())                   # never darker
        # the brightest place is the source: in the upper half, at strength 0.8 of the way
        # from the stripe's grey to white
        row, column = divmod(int(torch.argmax(grey)), 80)
        assert row <= 30
        assert float(grey.max()) == pytest.approx(120 + 0.8 * 135, abs=3)
        near = grey[row, max(0, column - 2):column + 2]
        assert float(near.max() - near.min()) < 0.3 * 80          # contrast mostly gone
        # the far bottom corner from the source is almost untouched
        far_row, far_column = 59, (0 if column > 40 else 79)
        assert float(grey[far_row, far_column] - plain[far_row, far_column]) < 15
    # p = 0 leaves the image as it is
    same, _ = build_transforms({'augment': {'glare': {'p': 0.0}}}, True, MEAN, STD)(
        image, label)
    assert torch.allclose(back_to_grey(same)[0], torch.from_numpy(image[..., 0]).float(),
                          atol=0.6)


def test_eval_transform_normalises_and_optionally_resizes():
    image = np.full((6, 8, 3), (0, 128, 255), np.uint8)
    label = np.arange(48, dtype=np.uint8).reshape(6, 8) % 5
    out_image, out_mask = build_transforms({'augment': FULL['augment']}, False, MEAN, STD)(
        image, label)
    expected = [(v / 255 - m) / s for v, m, s in zip((0, 128, 255), MEAN, STD)]
    np.testing.assert_allclose(out_image[:, 0, 0].numpy(), expected, rtol=1e-6)
    assert torch.equal(out_mask, torch.from_numpy(label.astype(np.int64)))
    resized_image, resized_mask = build_transforms({'eval_resize': [12, 16]}, False, MEAN, STD)(
        image, label)
    assert resized_image.shape == (3, 12, 16) and resized_mask.shape == (12, 16)
    assert torch.equal(resized_mask[::2, ::2], out_mask)           # nearest, 2× up


def test_same_seed_same_result():
    image, label = block_scene(5)
    transform = build_transforms(FULL, True, MEAN, STD)
    torch.manual_seed(7)
    first = transform(image, label)
    torch.manual_seed(7)
    second = transform(image, label)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize('augment, message', [
    ({'flip': 0.5}, r"unknown keys \['flip'\]"),
    ({'elastic': {'alpha': 30}}, 'needs sigma > 0'),
    ({'scale': [2.0, 0.5]}, 'low <= high'),
    ({'hflip': 2}, 'probability'),
    ({'color_jitter': {'gamma': 0.1}}, 'color_jitter: unknown keys'),
    ({'crop': [0, 10]}, 'positive'),
    ({'low_light': {'gamma': [3.0, 1.5]}}, 'low_light.gamma'),
    ({'low_light': {'p': 1.5}}, 'low_light.p'),
    ({'low_light': {'p': -0.5}}, 'low_light.p'),
    ({'low_light': {'noise': -1}}, 'low_light.noise'),
    ({'low_light': {'dark': 1}}, 'low_light: unknown keys'),
    ({'glare': {'strength': [0.5, 1.5]}}, 'glare.strength'),
    ({'glare': {'radius': [0.0, 0.2]}}, 'glare.radius'),
    ({'glare': {'p': -0.1}}, 'glare.p'),
    ({'glare': {'sun': 1}}, 'glare: unknown keys'),
    ({'pad_image': 'edge'}, 'pad_image'),
])
def test_bad_augment_config_is_named(augment, message):
    with pytest.raises(ValueError, match=message):
        build_transforms({'augment': augment}, True, MEAN, STD)
