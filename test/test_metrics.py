"""Metrics from a hand-made confusion matrix, the accumulator, and the DDP merge."""
import math
import subprocess
import sys

import numpy as np
import pytest

from seg_perception.evaluation import metrics
from seg_perception.evaluation.metrics import ConfusionMatrix

# rows = ground truth, columns = prediction; class 3 appears nowhere
MATRIX = np.array([[5, 1, 0, 0],
                   [2, 3, 1, 0],
                   [0, 0, 4, 0],
                   [0, 0, 0, 0]])
# unions: class 0: 6 + 7 - 5 = 8; class 1: 6 + 4 - 3 = 7; class 2: 4 + 5 - 4 = 5
IOU = [5 / 8, 3 / 7, 4 / 5]


def test_per_class_iou_and_miou_by_hand():
    ious = metrics.per_class_iou(MATRIX)
    np.testing.assert_allclose(ious[:3], IOU)
    assert math.isnan(ious[3])                # union 0: excluded from the mean
    assert metrics.mean_iou(MATRIX) == pytest.approx(sum(IOU) / 3)


def test_class_only_predicted_counts_with_iou_zero():
    matrix = np.array([[2, 1],
                       [0, 0]])               # class 1 never in GT but predicted once
    np.testing.assert_allclose(metrics.per_class_iou(matrix), [2 / 3, 0.0])
    assert metrics.mean_iou(matrix) == pytest.approx(1 / 3)
    assert metrics.mean_accuracy(matrix) == pytest.approx(2 / 3)   # only GT classes


def test_accuracies_and_frequency_weighted_iou_by_hand():
    assert metrics.pixel_accuracy(MATRIX) == pytest.approx(12 / 16)
    assert metrics.mean_accuracy(MATRIX) == pytest.approx((5 / 6 + 3 / 6 + 4 / 4) / 3)
    expected_fw = 6 / 16 * IOU[0] + 6 / 16 * IOU[1] + 4 / 16 * IOU[2]
    assert metrics.frequency_weighted_iou(MATRIX) == pytest.approx(expected_fw)


def test_drivable_iou_is_binary_over_the_drivable_classes():
    # drivable = {0, 1}: TP = 5 + 1 + 2 + 3 = 11; GT area 12; predicted area 11
    assert metrics.binary_iou(MATRIX, [0, 1]) == pytest.approx(11 / 12)
    # drivable = {2}: TP 4, GT 4, predicted 5
    assert metrics.binary_iou(MATRIX, [2]) == pytest.approx(4 / 5)
    assert math.isnan(metrics.binary_iou(MATRIX, []))
    assert math.isnan(metrics.binary_iou(MATRIX, [3]))
    with pytest.raises(ValueError, match=r'class ids \[7\] out of range'):
        metrics.binary_iou(MATRIX, [7])


def test_empty_matrix_gives_nan_everywhere():
    empty = np.zeros((3, 3), np.int64)
    for fn in (metrics.mean_iou, metrics.pixel_accuracy, metrics.mean_accuracy,
               metrics.frequency_weighted_iou):
        assert math.isnan(fn(empty))


def test_bad_matrix_is_rejected():
    with pytest.raises(ValueError, match='square'):
        metrics.mean_iou(np.zeros((2, 4)))    # 2×3: a matrix with an ego column
    with pytest.raises(ValueError, match='negative'):
        metrics.mean_iou(np.array([[1, -1], [0, 1]]))


def test_accumulator_matches_a_pixel_loop_and_skips_ignore():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (3, 17, 23))
    target[rng.random(target.shape) < 0.1] = 255
    prediction = rng.integers(0, 5, (3, 17, 23)).astype(np.uint8)
    confusion = ConfusionMatrix(5, ignore_index=255)
    confusion.update(prediction[:2], target[:2])
    confusion.update(prediction[2], target[2])
    expected = np.zeros((5, 5), np.int64)
    for gt, pred in zip(target.ravel(), prediction.ravel()):
        if gt != 255:
            expected[gt, pred] += 1
    np.testing.assert_array_equal(confusion.matrix, expected)
    assert confusion.miou() == pytest.approx(metrics.mean_iou(expected))


def test_accumulator_takes_torch_tensors():
    torch = pytest.importorskip('torch')
    confusion = ConfusionMatrix(3, ignore_index=11)
    confusion.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 11]]))
    np.testing.assert_array_equal(confusion.matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])


def test_accumulator_rejects_bad_input():
    confusion = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match='differs from label shape'):
        confusion.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match=r'label ids \[7\] are neither classes 0..2'):
        confusion.update(np.zeros((2, 2), np.uint8), np.array([[0, 7], [1, 255]]))
    with pytest.raises(ValueError, match=r'predicted ids \[3\]'):
        confusion.update(np.array([[0, 3], [1, 2]]), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match='must be integers'):
        confusion.update(np.zeros((2, 2)), np.zeros((2, 2), np.int64))
    assert confusion.matrix.sum() == 0        # nothing half-added


def test_merge_and_summary():
    first, second = ConfusionMatrix(4), ConfusionMatrix(4)
    first.merge(MATRIX // 2)
    second.merge(MATRIX - MATRIX // 2)
    first += second
    np.testing.assert_array_equal(first.matrix, MATRIX)
    with pytest.raises(ValueError, match='cannot merge'):
        first.merge(np.zeros((3, 3)))
    summary = first.summary(['a', 'b', 'c', 'd'], drivable_ids=[0, 1])
    assert summary['per_class_iou']['b'] == pytest.approx(3 / 7)
    assert summary['drivable_iou'] == pytest.approx(11 / 12)
    assert summary['num_pixels'] == 16
    clean = metrics.nan_to_none(summary)
    assert clean['per_class_iou']['d'] is None and clean['miou'] == summary['miou']


def test_all_reduce_without_a_process_group_is_a_no_op():
    from seg_perception.training.distributed import all_reduce_confusion
    confusion = ConfusionMatrix(4)
    confusion.merge(MATRIX)
    confusion.matrix = all_reduce_confusion(confusion.matrix)
    np.testing.assert_array_equal(confusion.matrix, MATRIX)


def _reduce_worker(rank, world_size, init_file, queue):
    import torch.distributed as dist

    from seg_perception.training.distributed import all_reduce_confusion
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world_size)
    try:
        confusion = ConfusionMatrix(4)
        confusion.merge(MATRIX * (rank + 1))
        confusion.matrix = all_reduce_confusion(confusion.matrix)
        import torch
        tensor = all_reduce_confusion(torch.ones(2, 2, dtype=torch.int64))
        queue.put((rank, confusion.matrix.tolist(), tensor.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_sums_over_processes(tmp_path):
    pytest.importorskip('torch')
    import torch.multiprocessing as mp
    context = mp.get_context('spawn')
    queue = context.SimpleQueue()
    mp.start_processes(_reduce_worker, args=(2, str(tmp_path / 'init'), queue), nprocs=2,
                       start_method='spawn')
    results = sorted(queue.get() for _ in range(2))
    for _, matrix, tensor in results:
        np.testing.assert_array_equal(matrix, MATRIX * 3)
        assert tensor == [[2, 2], [2, 2]]


@pytest.mark.parametrize('module', ['seg_perception.evaluation.metrics',
                                    'seg_perception.evaluation.tables',
                                    'seg_perception.evaluation.evaluate'])
def test_metric_modules_do_not_import_torch(module):
    # bag-eval on the vehicle reuses them without torch installed
    code = f'import sys, {module}; sys.exit(1 if "torch" in sys.modules else 0)'
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


def test_accumulator_counts_cuda_tensors_on_the_device():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    rng = np.random.default_rng(1)
    target = rng.integers(0, 6, (2, 9, 13))
    target[rng.random(target.shape) < 0.2] = 255
    prediction = rng.integers(0, 6, target.shape)
    on_host, on_device = ConfusionMatrix(6), ConfusionMatrix(6)
    on_host.update(prediction, target)
    on_device.update(torch.from_numpy(prediction).cuda(), torch.from_numpy(target).cuda())
    np.testing.assert_array_equal(on_device.matrix, on_host.matrix)
    with pytest.raises(ValueError, match=r'predicted ids \[6\]'):
        on_device.update(torch.full((2, 2), 6).cuda(), torch.zeros(2, 2).long().cuda())
