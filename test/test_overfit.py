"""Each architecture family can memorise one small batch: the cheapest proof that it learns.

Two 64×64 images with a blocky 4-class label map; Adam; the loss must fall and the
mIoU on that batch (in eval mode, as deployed) must reach 0.9 within a step budget.
"""
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_perception.models import build_model, list_models

NUM_CLASSES = 4
MAX_STEPS = 150
CHECK_EVERY = 10
TARGET_MIOU = 0.9
# (architecture, settings, learning rate): small and quick, dropout off where there is one.
FAMILIES = [
    ('deeplabv3plus', {'backbone': 'efficientnet_lite0', 'decoder': 'light'}, 3e-3),
    ('fcn8s', {'backbone': 'resnet18', 'dropout': 0.0}, 1e-3),
    ('unet', {'base_width': 8, 'depth': 3}, 3e-3),
    ('resunet', {'base_width': 8, 'depth': 3}, 3e-3),
    ('fcdensenet56', {'dropout': 0.0}, 3e-3),
    ('dilated_context', {'backbone': 'resnet18'}, 1e-3),
]


@pytest.fixture
def one_thread():
    """Tiny batches run fastest on one thread, and suffer least from a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blocky_batch(seed=0, size=64, block=16):
    """Normalised images and labels: a random grid of class blocks, one noisy colour each."""
    rng = np.random.RandomState(seed)
    cells = size // block
    grid = rng.randint(0, NUM_CLASSES, size=(2, cells, cells))
    grid.reshape(-1)[:NUM_CLASSES] = np.arange(NUM_CLASSES)     # every class present
    labels = grid.repeat(block, axis=1).repeat(block, axis=2)
    colours = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 210], [220, 210, 70]],
                       dtype=np.float32)
    images = colours[labels] + rng.normal(0, 20, size=labels.shape + (3,))
    images = (np.clip(images, 0, 255) / 255.0 - 0.5) / 0.5
    return (torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(labels.astype(np.int64)))


def mean_iou(predicted, target):
    ious = []
    for class_id in range(NUM_CLASSES):
        union = ((predicted == class_id) | (target == class_id)).sum().item()
        if union:
            ious.append(((predicted == class_id) & (target == class_id)).sum().item() / union)
    return float(np.mean(ious))


@pytest.mark.slow
@pytest.mark.parametrize('architecture,config,learning_rate', FAMILIES,
                         ids=[family[0] for family in FAMILIES])
def test_overfits_one_batch(architecture, config, learning_rate, one_thread):
    if architecture not in list_models():
        pytest.skip(f'{architecture} is not registered')
    torch.manual_seed(0)
    images, labels = blocky_batch()
    model = build_model(architecture, NUM_CLASSES, **config)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    started = time.perf_counter()
    losses, miou = [], 0.0
    for step in range(1, MAX_STEPS + 1):
        model.train()
        output = model(images)
        logits = output['out'] if isinstance(output, dict) else output
        assert logits.shape == (2, NUM_CLASSES, 64, 64)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % CHECK_EVERY == 0:
            model.eval()
            with torch.no_grad():
                miou = mean_iou(model(images).argmax(dim=1), labels)
            if miou >= TARGET_MIOU:
                break
    elapsed = time.perf_counter() - started
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * losses[0], f'loss {losses[0]:.3f} -> {losses[-1]:.3f}'
    assert miou >= TARGET_MIOU, f'{architecture}: mIoU {miou:.3f} after {step} steps ' \
        f'({elapsed:.1f} s)'
