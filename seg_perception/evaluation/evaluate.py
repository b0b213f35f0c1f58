"""``seg-perception evaluate``: score a checkpoint or an exported ONNX model on a dataset.

::

    seg-perception evaluate (--checkpoint CKPT | --model MODEL.onnx)
                            (--config CFG | --dataset NAME --root DIR) [--split val]
                            [--output DIR] [--mode whole|slide] [--scales 1.0 ...] [--flip]
                            [--backend auto] [--limit N] [--save-predictions]
                            [--ego-mask PNG | --ego-polygon X1,Y1,...]

Images and labels are read raw from the dataset (``read_sample``: uint8 RGB and the
label in the label space's ids), so both paths see the same pixels:

- ``--checkpoint``: the torch model, with whole-image or sliding-window inference and
  optional multi-scale + flip averaging (see :mod:`seg_perception.evaluation.inference`).
- ``--model``: the exported graph through ``runtime.pipeline.SegmentationPipeline``,
  exactly as the ROS node runs it (uint8 RGB in, labels at camera resolution out).

Output (``--output``): ``metrics.json`` (mIoU, per-class IoU, pixel accuracy, mean
class accuracy, frequency-weighted IoU, drivable-area IoU, the confusion matrix, ...),
``metrics.md`` and ``confusion_matrix.png``; see :mod:`seg_perception.evaluation.metrics` for the
definitions. ``--save-predictions`` also writes ``predictions/<image name>.png`` (class ids).
A model's extra masks (ModelInfo.masks) are not scored: a warning and ``masks_not_scored``
in metrics.json say which.

An ego mask (``--ego-mask``, ``--ego-polygon``: one ``ground.ego.EgoMask`` for the whole
dataset, scaled to each image) is given to the model as deployed: the pipeline labels its
pixels ``labels.EGO_ID`` and never drivable, and a checkpoint's labels get the same. The
ground truth keeps its labels, so an ego pixel the truth calls drivable is a miss and one it
calls not drivable a correct negative (the ego column of ``metrics.ConfusionMatrix``).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.evaluation.metrics import ConfusionMatrix
from seg_perception.evaluation.tables import write_metrics
from seg_perception.labels import EGO_ID

__all__ = ['evaluate', 'evaluate_dataset', 'write_metrics',
           'TorchPredictor', 'PipelinePredictor']

LOGGER = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]


# -- predictors ----------------------------------------------------------------

class TorchPredictor:
    """Labels of a uint8 RGB image from a checkpoint's model (whole/slide, scales, flip)."""

    def __init__(self, checkpoint: str, *, device: str = 'auto', mode: str = 'whole',
                 scales: Sequence[float] = (1.0,), flip: bool = False,
                 overlap: float = 1 / 3, ego_mask=None):
        """``ego_mask``: a ``ground.ego.EgoMask`` whose pixels get ``EGO_ID`` (or None)."""
        import torch

        from seg_perception.models.checkpoint import build_model_from_checkpoint
        from seg_perception.evaluation.inference import MODES
        if mode not in MODES:
            raise InvalidValueError(f'--mode must be one of {MODES}, got {mode!r}')
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        elif device == 'cuda' and not torch.cuda.is_available():
            raise InvalidValueError('--device cuda: no CUDA device is available')
        self.model, self.info = build_model_from_checkpoint(checkpoint)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.options = dict(mode=mode, scales=tuple(scales), flip=bool(flip), overlap=overlap)
        self.description = {'kind': 'checkpoint', 'device': str(self.device), **self.options}
        self.ego_mask = ego_mask

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from seg_perception.evaluation.inference import predict_labels
        labels = predict_labels(self.model, image, self.info.input_size, self.info.mean,
                                self.info.std, device=self.device, **self.options)
        if self.ego_mask is not None:
            labels[self.ego_mask.at(labels.shape)] = EGO_ID     # as the pipeline does
        return labels


class PipelinePredictor:
    """Labels of a uint8 RGB image from an ONNX model through the deployed pipeline."""

    def __init__(self, model_path: str, *, backend: str = 'auto', precision: str = 'fp32',
                 threads: Optional[int] = None, engine_cache_dir: Optional[str] = None,
                 ego_mask=None):
        """``ego_mask``: a ``ground.ego.EgoMask`` given to the pipeline (or None)."""
        from seg_perception.runtime.pipeline import SegmentationPipeline
        self.pipeline = SegmentationPipeline(model_path, backend=backend, precision=precision,
                                             output_resolution='camera', threads=threads,
                                             engine_cache_dir=engine_cache_dir)
        self.info = self.pipeline.info
        described = self.pipeline.describe()
        # precision 'auto' may run the INT8 file beside the model: the record names the
        # file that ran and why, so an fp32 figure cannot silently be an INT8 one.
        self.description = {'kind': 'onnx', 'backend': described.get('name', backend),
                            'precision': described.get('precision', precision),
                            'precision_reason': described.get('precision_reason'),
                            'model_run': described.get('model', model_path),
                            'resize': described.get('resize')}
        self.ego_mask = ego_mask

    def __call__(self, image: np.ndarray) -> np.ndarray:
        ego = None if self.ego_mask is None else self.ego_mask.at(image.shape[:2])
        (result,) = self.pipeline.process([image], encodings=['rgb8'], ego_masks=[ego])
        return result.labels


# -- the evaluation loop -----------------------------------------------------------

def evaluate_dataset(predict: Predictor, dataset, num_classes: int, *,
                     limit: Optional[int] = None, save_dir: Optional[str] = None,
                     ego_id: Optional[int] = None) -> Tuple[ConfusionMatrix, int]:
    """Run ``predict`` on raw images of ``dataset``; return (confusion, images evaluated).

    ``ego_id``: the id ``predict`` gives ego-vehicle pixels, counted in the matrix's ego
    column (None: no ego pixels expected).
    """
    space = dataset.label_space
    confusion = ConfusionMatrix(num_classes, space.ignore_index, ego_id)
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    started = time.monotonic()
    for index in range(count):
        image_path = dataset.samples[index][0]
        image, label = dataset.read_sample(index)
        prediction = np.asarray(predict(image))
        if prediction.shape != label.shape:
            raise InvalidValueError(f'{image_path}: prediction is {prediction.shape[1]}x'
                                    f'{prediction.shape[0]} but the label is {label.shape[1]}x'
                                    f'{label.shape[0]} (W x H)')
        try:
            confusion.update(prediction, label)
        except ValueError as exc:
            raise InvalidValueError(f'{image_path}: {exc}') from None
        if save_dir:
            _save_prediction(save_dir, image_path, prediction)
        if (index + 1) % 50 == 0 or index + 1 == count:
            LOGGER.info('%d/%d images, %.2f s/image, running mIoU %.2f%%', index + 1, count,
                        (time.monotonic() - started) / (index + 1), 100 * confusion.miou())
    return confusion, count


def _save_prediction(folder: str, image_path: str, prediction: np.ndarray) -> None:
    import cv2
    stem = os.path.splitext(os.path.basename(image_path))[0]
    path = os.path.join(folder, stem + '.png')
    if not cv2.imwrite(path, prediction.astype(np.uint8)):
        raise OSError(f'cannot write prediction {path}')


def _check_label_spaces(info, space) -> None:
    if info.num_classes != space.num_classes:
        raise InvalidValueError(f'the model predicts {info.num_classes} classes '
                                f'({", ".join(info.class_names)}) but the dataset has '
                                f'{space.num_classes} ({", ".join(space.class_names)})')
    if [n.lower() for n in info.class_names] != [n.lower() for n in space.class_names]:
        LOGGER.warning('class names differ between model (%s) and dataset (%s); '
                       'ids are compared as they are', ', '.join(info.class_names),
                       ', '.join(space.class_names))


def _unscored_masks(info) -> list:
    """The model's extra masks (ModelInfo.masks): a dataset has no truth for them, so they
    are not scored; the labels (and drivable area from them) are, as for any model."""
    masks = list(getattr(info, 'masks', None) or [])
    if masks:
        LOGGER.warning('the model\'s masks (%s) are not scored: only its class labels and '
                       'drivable area are', ', '.join(masks))
    return masks


def evaluate(predictor, data_cfg: Dict, split: str = 'val', output_dir: Optional[str] = None,
             *, limit: Optional[int] = None, save_predictions: bool = False,
             model_name: str = '') -> Dict:
    """Evaluate a predictor (TorchPredictor, PipelinePredictor) on a data config's split.

    Writes the metric files to ``output_dir`` (when given) and returns the metrics dict.
    """
    from seg_perception.data import build_dataset
    data_cfg = dict(data_cfg)
    if str(data_cfg.get('dataset', '')).lower() == 'folder' and not data_cfg.get('label_space'):
        # a folder of images + masks in the model's own label space
        data_cfg['label_space'] = predictor.info.label_space_obj().to_dict()
    dataset = build_dataset(data_cfg, split)
    _check_label_spaces(predictor.info, dataset.label_space)
    started = time.monotonic()
    save_dir = os.path.join(output_dir, 'predictions') if save_predictions and output_dir \
        else None
    ego_mask = getattr(predictor, 'ego_mask', None)
    confusion, count = evaluate_dataset(predictor, dataset, predictor.info.num_classes,
                                        limit=limit, save_dir=save_dir,
                                        ego_id=None if ego_mask is None else EGO_ID)
    extra = {'num_images': count, 'model': model_name, 'dataset': data_cfg.get('dataset'),
             'ego_mask': None if ego_mask is None else ego_mask.source,
             'split': dataset.split, 'dataset_root': str(dataset.root),
             'architecture': predictor.info.architecture,
             'inference': predictor.description,
             'masks_not_scored': _unscored_masks(predictor.info),
             'seconds': round(time.monotonic() - started, 3)}
    if output_dir:
        return write_metrics(output_dir, confusion, dataset.label_space, extra)
    from seg_perception.evaluation.metrics import nan_to_none
    result = confusion.summary(list(dataset.label_space.class_names),
                               dataset.label_space.drivable_ids)
    result.update(extra, confusion_matrix=confusion.matrix.tolist())
    return nan_to_none(result)
