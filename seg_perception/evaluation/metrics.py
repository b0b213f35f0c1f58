"""Segmentation metrics from a confusion matrix (NumPy only: no torch on the vehicle path).

Everything is derived from one ``C×C`` integer confusion matrix ``M`` whose rows are
ground-truth classes and columns predicted classes; pixels whose ground truth is the
ignore id never enter it. Definitions (they match the Cityscapes benchmark):

- IoU of class c: ``TP / (TP + FP + FN)`` with ``TP = M[c, c]``, ``FN`` = rest of row c,
  ``FP`` = rest of column c. A class whose union ``TP + FP + FN`` is 0 (absent from both
  ground truth and prediction) has IoU NaN.
- mIoU: the mean of the per-class IoUs over the classes with union > 0 (NaN excluded);
  NaN when no class has any pixel.
- pixel accuracy: ``trace(M) / M.sum()``.
- mean class accuracy: mean over classes present in the ground truth of ``TP / row sum``.
- frequency-weighted IoU: ``sum_c (row_sum_c / M.sum()) * IoU_c`` over classes with union > 0.
- drivable-area IoU: the binary IoU of "pixel is in one of the drivable classes" between
  ground truth and prediction, computed from the same matrix.

The matrix may have one more column than rows: pixels predicted as no class at all, the
ego vehicle's (``labels.EGO_ID``, from an ego mask). They stay in their ground-truth row,
so an ego pixel is a miss for its true class (a drivable one included) and never a hit
or a false positive of any class: an ego pixel whose truth is not drivable is a correct
"not drivable".

``ConfusionMatrix`` accumulates batches with one ``np.bincount`` each and accepts NumPy
arrays or torch tensors (moved to the CPU, without importing torch). In distributed training
sum the matrix over processes first (``training.distributed.all_reduce_confusion``).
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from seg_perception.errors import InvalidValueError


def _as_numpy(values) -> np.ndarray:
    """A NumPy view of an array or a (possibly CUDA) torch tensor."""
    if hasattr(values, 'detach'):          # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_matrix(confusion) -> np.ndarray:
    """The matrix as float: C×C, or C×(C+1) with the ego column last."""
    matrix = _as_numpy(confusion)
    if matrix.ndim != 2 or matrix.shape[1] not in (matrix.shape[0], matrix.shape[0] + 1) \
            or matrix.shape[0] < 1:
        raise InvalidValueError(f'a confusion matrix must be square C×C (or C×(C+1) with an '
                                f'ego column), got shape {matrix.shape}')
    if np.any(matrix < 0):
        raise InvalidValueError('a confusion matrix cannot hold negative counts')
    return matrix.astype(np.float64)


def per_class_iou(confusion) -> np.ndarray:
    """IoU of every class; NaN for a class absent from ground truth and prediction."""
    matrix = _check_matrix(confusion)
    classes = matrix[:, :matrix.shape[0]]           # without the ego column
    true_pos = np.diag(classes)
    union = classes.sum(axis=0) + matrix.sum(axis=1) - true_pos
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(union > 0, true_pos / np.maximum(union, 1), np.nan)


def mean_iou(confusion) -> float:
    """Mean IoU over the classes with a non-empty union (NaN when there are none)."""
    ious = per_class_iou(confusion)
    valid = ~np.isnan(ious)
    return float(ious[valid].mean()) if valid.any() else float('nan')


def pixel_accuracy(confusion) -> float:
    """Fraction of evaluated pixels whose class is right (NaN when no pixel)."""
    matrix = _check_matrix(confusion)
    total = matrix.sum()
    return float(np.trace(matrix[:, :matrix.shape[0]]) / total) if total > 0 else float('nan')


def per_class_accuracy(confusion) -> np.ndarray:
    """Recall of every class; NaN for a class absent from the ground truth."""
    matrix = _check_matrix(confusion)
    gt_count = matrix.sum(axis=1)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(gt_count > 0, np.diag(matrix[:, :len(matrix)]) / np.maximum(gt_count, 1),
                        np.nan)


def mean_accuracy(confusion) -> float:
    """Mean class accuracy over the classes present in the ground truth."""
    accuracies = per_class_accuracy(confusion)
    valid = ~np.isnan(accuracies)
    return float(accuracies[valid].mean()) if valid.any() else float('nan')


def frequency_weighted_iou(confusion) -> float:
    """IoUs weighted by each class's share of the ground-truth pixels."""
    matrix = _check_matrix(confusion)
    total = matrix.sum()
    if total == 0:
        return float('nan')
    ious = per_class_iou(matrix)
    weights = matrix.sum(axis=1) / total
    valid = ~np.isnan(ious)
    return float((weights[valid] * ious[valid]).sum())


def binary_iou(confusion, class_ids: Iterable[int]) -> float:
    """IoU of the union of ``class_ids`` against everything else (e.g. drivable area).

    NaN when ``class_ids`` is empty or neither ground truth nor prediction has the area.
    """
    matrix = _check_matrix(confusion)
    ids = sorted({int(i) for i in class_ids})
    if not ids:
        return float('nan')
    bad = [i for i in ids if not 0 <= i < matrix.shape[0]]
    if bad:
        raise InvalidValueError(f'class ids {bad} out of range for a {matrix.shape[0]}-class '
                                f'matrix')
    true_pos = matrix[np.ix_(ids, ids)].sum()
    union = matrix[ids, :].sum() + matrix[:, ids].sum() - true_pos
    return float(true_pos / union) if union > 0 else float('nan')


class ConfusionMatrix:
    """Accumulates a ground-truth × prediction pixel count matrix.

    ``update(prediction, target)`` takes class-id arrays of equal shape (any number of
    dimensions, NumPy or torch). Target pixels equal to ``ignore_index`` are skipped;
    any other id outside ``0..num_classes-1`` in either array is an error, because it
    means the label space of the model and the dataset disagree. With ``ego_id``
    (``labels.EGO_ID`` for predictions made with an ego mask) the matrix is C×(C+1) and
    predicted ``ego_id`` pixels are counted in the last column (see the module docstring).
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = 255,
                 ego_id: Optional[int] = None):
        if int(num_classes) < 1:
            raise InvalidValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.ego_id = None if ego_id is None else int(ego_id)
        if self.ego_id is not None and 0 <= self.ego_id < self.num_classes:
            raise InvalidValueError(f'ego id {self.ego_id} is one of the classes '
                                    f'0..{self.num_classes - 1}')
        columns = self.num_classes + (self.ego_id is not None)
        self.matrix = np.zeros((self.num_classes, columns), np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, prediction, target) -> None:
        """Add one prediction/ground-truth pair (or batch) to the counts."""
        if hasattr(prediction, 'detach') and hasattr(target, 'detach') and self.ego_id is None \
                and prediction.device == target.device and prediction.device.type != 'cpu':
            try:    # count on the GPU: only C×C numbers travel to the host
                self._update_on_device(prediction.detach(), target.detach())
                return
            except RuntimeError:    # e.g. bincount refused under deterministic algorithms
                pass
        prediction = _as_numpy(prediction)
        target = _as_numpy(target)
        if prediction.shape != target.shape:
            raise InvalidValueError(f'prediction shape {prediction.shape} differs from label '
                                    f'shape {target.shape}')
        if prediction.dtype.kind not in 'iub' or target.dtype.kind not in 'iub':
            raise InvalidValueError(f'class ids must be integers, got prediction '
                                    f'{prediction.dtype} '
                                    f'and label {target.dtype}')
        target = target.reshape(-1).astype(np.int64)
        prediction = prediction.reshape(-1).astype(np.int64)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target, prediction = target[keep], prediction[keep]
        if target.size == 0:
            return
        count = self.num_classes
        if target.min() < 0 or target.max() >= count:
            bad = np.unique(target[(target < 0) | (target >= count)])[:10]
            raise InvalidValueError(f'label ids {bad.tolist()} are neither classes 0..{count - 1} '
                                    f'nor the ignore id {self.ignore_index}')
        outside = (prediction < 0) | (prediction >= count)
        if self.ego_id is not None:
            ego = prediction == self.ego_id
            outside &= ~ego
        if outside.any():
            bad = np.unique(prediction[outside])[:10]
            raise InvalidValueError(f'predicted ids {bad.tolist()} are not classes 0..{count - 1}')
        if self.ego_id is not None:
            prediction[ego] = count             # the ego column
        columns = self.matrix.shape[1]
        self.matrix += np.bincount(target * columns + prediction,
                                   minlength=count * columns).reshape(count, columns)

    def _update_on_device(self, prediction, target) -> None:
        if tuple(prediction.shape) != tuple(target.shape):
            raise InvalidValueError(f'prediction shape {tuple(prediction.shape)} differs from '
                                    f'label shape {tuple(target.shape)}')
        if prediction.is_floating_point() or target.is_floating_point():
            raise InvalidValueError(f'class ids must be integers, got prediction '
                                    f'{prediction.dtype} '
                                    f'and label {target.dtype}')
        target = target.reshape(-1).long()
        prediction = prediction.reshape(-1).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target, prediction = target[keep], prediction[keep]
        if target.numel() == 0:
            return
        count = self.num_classes
        if int(target.min()) < 0 or int(target.max()) >= count \
                or int(prediction.min()) < 0 or int(prediction.max()) >= count:
            # let the NumPy path name the offending ids
            self.update(prediction.cpu().numpy(), target.cpu().numpy())
            return
        counts = (target * count + prediction).bincount(minlength=count * count)
        self.matrix += counts.cpu().numpy().astype(np.int64).reshape(count, count)

    def merge(self, other) -> 'ConfusionMatrix':
        """Add another matrix (ConfusionMatrix or array of the same size) in place."""
        matrix = other.matrix if isinstance(other, ConfusionMatrix) else _as_numpy(other)
        if matrix.shape != self.matrix.shape:
            raise InvalidValueError(f'cannot merge a {matrix.shape} matrix into a '
                                    f'{self.matrix.shape} one')
        self.matrix += matrix.astype(np.int64)
        return self

    __iadd__ = merge

    # -- metrics --------------------------------------------------------------
    def iou(self) -> np.ndarray:
        return per_class_iou(self.matrix)

    def miou(self) -> float:
        return mean_iou(self.matrix)

    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.matrix)

    def mean_accuracy(self) -> float:
        return mean_accuracy(self.matrix)

    def fw_iou(self) -> float:
        return frequency_weighted_iou(self.matrix)

    def drivable_iou(self, drivable_ids: Iterable[int]) -> float:
        return binary_iou(self.matrix, drivable_ids)

    def summary(self, class_names: Optional[Sequence[str]] = None,
                drivable_ids: Iterable[int] = ()) -> Dict:
        """All metrics in one dict (NaN kept as float NaN; see ``nan_to_none``)."""
        return summarize(self.matrix, class_names, drivable_ids)


def summarize(confusion, class_names: Optional[Sequence[str]] = None,
              drivable_ids: Iterable[int] = ()) -> Dict:
    """Every metric of a confusion matrix, keyed as in ``metrics.json``."""
    matrix = _check_matrix(confusion)
    count = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
    if len(names) != count:
        raise InvalidValueError(f'{len(names)} class names for a {count}-class confusion matrix')
    ious = per_class_iou(matrix)
    accuracies = per_class_accuracy(matrix)
    return {
        'miou': mean_iou(matrix),
        'per_class_iou': {name: float(v) for name, v in zip(names, ious)},
        'pixel_accuracy': pixel_accuracy(matrix),
        'mean_accuracy': mean_accuracy(matrix),
        'per_class_accuracy': {name: float(v) for name, v in zip(names, accuracies)},
        'fw_iou': frequency_weighted_iou(matrix),
        'drivable_iou': binary_iou(matrix, drivable_ids),
        'num_pixels': int(matrix.sum()),
    }


def nan_to_none(value):
    """Replace float NaN by None, recursively, so the result is valid JSON."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
