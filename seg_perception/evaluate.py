"""``seg-perception evaluate``: score a checkpoint or an exported ONNX model on a dataset.

::

    seg-perception evaluate (--checkpoint CKPT | --model MODEL.onnx)
                            (--config CFG | --dataset NAME --root DIR) [--split val]
                            [--output DIR] [--mode whole|slide] [--scales 1.0 ...] [--flip]
                            [--backend auto] [--limit N] [--save-predictions]

Images and labels are read raw from the dataset (``read_sample``: uint8 RGB and the
label in the label space's ids), so both paths see the same pixels:

- ``--checkpoint``: the torch model, with whole-image or sliding-window inference and
  optional multi-scale + flip averaging (see :mod:`seg_perception.inference`).
- ``--model``: the exported graph through ``runtime.pipeline.SegmentationPipeline``,
  exactly as the ROS node runs it (uint8 RGB in, labels at camera resolution out).

Output (``--output``): ``metrics.json`` (mIoU, per-class IoU, pixel accuracy, mean
class accuracy, frequency-weighted IoU, drivable-area IoU, the confusion matrix, ...),
``metrics.md`` and ``confusion_matrix.png``; see :mod:`seg_perception.metrics` for the
definitions. ``--save-predictions`` also writes ``predictions/<image name>.png`` (class ids).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .metrics import ConfusionMatrix
from .report_tables import write_metrics

__all__ = ['configure_parser', 'run', 'evaluate', 'evaluate_dataset', 'write_metrics',
           'TorchPredictor', 'PipelinePredictor']

LOGGER = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument('--checkpoint', metavar='CKPT', help='a training checkpoint (.pt)')
    model.add_argument('--model', metavar='MODEL.onnx',
                       help='an exported ONNX model, run through the runtime pipeline')
    data = parser.add_argument_group('data (a training config, or a dataset and its root)')
    data.add_argument('--config', metavar='CFG', help='training config; its data section')
    data.add_argument('--dataset', metavar='NAME',
                      help='camvid, cityscapes, bdd100k, bdd100k_drivable, apolloscape or '
                           'folder (ROOT/images/SPLIT + ROOT/masks/SPLIT, in the model\'s '
                           'label space)')
    data.add_argument('--root', metavar='DIR', help='dataset folder (overrides the config)')
    data.add_argument('--split', default='val', help='split to evaluate (default: val)')
    data.add_argument('--drivable-classes', nargs='+', metavar='CLASS',
                      help='class names or ids that count as drivable area')
    data.add_argument('--limit', type=int, metavar='N', help='evaluate the first N images only')
    parser.add_argument('--output', metavar='DIR',
                        help='output folder (default: eval_<dataset>_<split> next to the model)')
    parser.add_argument('--save-predictions', action='store_true',
                        help='also write the predicted class-id PNGs to OUTPUT/predictions')
    torch_opts = parser.add_argument_group('checkpoint inference')
    torch_opts.add_argument('--mode', choices=('whole', 'slide'), default='whole',
                            help='whole: resize to the network input size; slide: windows '
                                 'of the input size over the native resolution')
    torch_opts.add_argument('--overlap', type=float, default=1 / 3,
                            help='sliding-window overlap fraction (default 1/3)')
    torch_opts.add_argument('--scales', type=float, nargs='+', default=[1.0],
                            help='image scales whose logits are averaged (default 1.0)')
    torch_opts.add_argument('--flip', action='store_true',
                            help='also average the horizontally flipped image')
    torch_opts.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    onnx_opts = parser.add_argument_group('ONNX model inference')
    onnx_opts.add_argument('--backend', default='auto',
                           help='runtime backend (auto, onnxruntime providers, tensorrt)')
    onnx_opts.add_argument('--precision', default='fp32', help='fp32, fp16 or int8')
    parser.add_argument('--threads', type=int, help='CPU threads for inference')


# -- predictors ----------------------------------------------------------------

class TorchPredictor:
    """Labels of a uint8 RGB image from a checkpoint's model (whole/slide, scales, flip)."""

    def __init__(self, checkpoint: str, *, device: str = 'auto', mode: str = 'whole',
                 scales: Sequence[float] = (1.0,), flip: bool = False,
                 overlap: float = 1 / 3):
        import torch

        from .checkpoint import build_model_from_checkpoint
        from .inference import MODES
        if mode not in MODES:
            raise ValueError(f'--mode must be one of {MODES}, got {mode!r}')
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        elif device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('--device cuda: no CUDA device is available')
        self.model, self.info = build_model_from_checkpoint(checkpoint)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.options = dict(mode=mode, scales=tuple(scales), flip=bool(flip), overlap=overlap)
        self.description = {'kind': 'checkpoint', 'device': str(self.device), **self.options}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from .inference import predict_labels
        return predict_labels(self.model, image, self.info.input_size, self.info.mean,
                              self.info.std, device=self.device, **self.options)


class PipelinePredictor:
    """Labels of a uint8 RGB image from an ONNX model through the deployed pipeline."""

    def __init__(self, model_path: str, *, backend: str = 'auto', precision: str = 'fp32',
                 threads: Optional[int] = None):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f'model file not found: {model_path}')
        from .runtime.pipeline import SegmentationPipeline
        self.pipeline = SegmentationPipeline(model_path, backend=backend, precision=precision,
                                             output_resolution='camera', threads=threads)
        self.info = self.pipeline.info
        described = self.pipeline.describe()
        self.description = {'kind': 'onnx', 'backend': described.get('name', backend),
                            'precision': described.get('precision', precision),
                            'resize': described.get('resize')}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        (result,) = self.pipeline.process([image], encodings=['rgb8'])
        return result.labels


# -- the evaluation loop -----------------------------------------------------------

def evaluate_dataset(predict: Predictor, dataset, num_classes: int, *,
                     limit: Optional[int] = None, save_dir: Optional[str] = None
                     ) -> Tuple[ConfusionMatrix, int]:
    """Run ``predict`` on raw images of ``dataset``; return (confusion, images evaluated)."""
    space = dataset.label_space
    confusion = ConfusionMatrix(num_classes, space.ignore_index)
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    started = time.monotonic()
    for index in range(count):
        image_path = dataset.samples[index][0]
        image, label = dataset.read_sample(index)
        prediction = np.asarray(predict(image))
        if prediction.shape != label.shape:
            raise ValueError(f'{image_path}: prediction is {prediction.shape[1]}x'
                             f'{prediction.shape[0]} but the label is {label.shape[1]}x'
                             f'{label.shape[0]} (W x H)')
        try:
            confusion.update(prediction, label)
        except ValueError as exc:
            raise ValueError(f'{image_path}: {exc}') from None
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
        raise ValueError(f'the model predicts {info.num_classes} classes '
                         f'({", ".join(info.class_names)}) but the dataset has '
                         f'{space.num_classes} ({", ".join(space.class_names)})')
    if [n.lower() for n in info.class_names] != [n.lower() for n in space.class_names]:
        LOGGER.warning('class names differ between model (%s) and dataset (%s); '
                       'ids are compared as they are', ', '.join(info.class_names),
                       ', '.join(space.class_names))


def evaluate(predictor, data_cfg: Dict, split: str = 'val', output_dir: Optional[str] = None,
             *, limit: Optional[int] = None, save_predictions: bool = False,
             model_name: str = '') -> Dict:
    """Evaluate a predictor (TorchPredictor, PipelinePredictor) on a data config's split.

    Writes the metric files to ``output_dir`` (when given) and returns the metrics dict.
    """
    from .data import build_dataset
    data_cfg = dict(data_cfg)
    if str(data_cfg.get('dataset', '')).lower() == 'folder' and not data_cfg.get('label_space'):
        # a folder of images + masks in the model's own label space
        data_cfg['label_space'] = predictor.info.label_space_obj().to_dict()
    dataset = build_dataset(data_cfg, split)
    _check_label_spaces(predictor.info, dataset.label_space)
    started = time.monotonic()
    save_dir = os.path.join(output_dir, 'predictions') if save_predictions and output_dir \
        else None
    confusion, count = evaluate_dataset(predictor, dataset, predictor.info.num_classes,
                                        limit=limit, save_dir=save_dir)
    extra = {'num_images': count, 'model': model_name, 'dataset': data_cfg.get('dataset'),
             'split': dataset.split, 'dataset_root': str(dataset.root),
             'architecture': predictor.info.architecture,
             'inference': predictor.description,
             'seconds': round(time.monotonic() - started, 3)}
    if output_dir:
        return write_metrics(output_dir, confusion, dataset.label_space, extra)
    from .metrics import nan_to_none
    result = confusion.summary(list(dataset.label_space.class_names),
                               dataset.label_space.drivable_ids)
    result.update(extra, confusion_matrix=confusion.matrix.tolist())
    return nan_to_none(result)


# -- command line ----------------------------------------------------------------------

def data_config_from_args(args: argparse.Namespace) -> Dict:
    """The data config: the config file's data section or --dataset/--root."""
    if args.config and args.dataset:
        raise ValueError('give either --config or --dataset/--root, not both')
    if args.config:
        from .config import load_config
        data_cfg = dict(load_config(args.config)['data'])
        if args.root:
            data_cfg['root'] = args.root
    elif args.dataset:
        if not args.root:
            raise ValueError(f'--dataset {args.dataset} needs --root DIR (the dataset folder)')
        data_cfg = {'dataset': args.dataset, 'root': args.root}
    else:
        raise ValueError('no data given: pass --config CFG or --dataset NAME --root DIR')
    if args.drivable_classes:
        data_cfg['drivable_classes'] = [int(c) if c.isdigit() else c
                                        for c in args.drivable_classes]
    if not data_cfg.get('dataset'):
        raise ValueError(f'{args.config}: the data section names no dataset')
    return data_cfg


def run(args: argparse.Namespace) -> int:
    data_cfg = data_config_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f'--limit must be at least 1, got {args.limit}')
    if args.threads and args.checkpoint:
        import torch
        torch.set_num_threads(int(args.threads))
    if args.checkpoint:
        if not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
        predictor = TorchPredictor(args.checkpoint, device=args.device, mode=args.mode,
                                   scales=args.scales, flip=args.flip, overlap=args.overlap)
        model_path = args.checkpoint
    else:
        if args.mode != 'whole' or args.flip or list(args.scales) != [1.0]:
            raise ValueError('--mode slide, --scales and --flip apply to --checkpoint only: '
                             'an ONNX model is evaluated as deployed (whole image)')
        predictor = PipelinePredictor(args.model, backend=args.backend,
                                      precision=args.precision, threads=args.threads)
        model_path = args.model
    output_dir = args.output or os.path.join(
        os.path.dirname(os.path.abspath(model_path)),
        f'eval_{data_cfg["dataset"]}_{args.split}')
    result = evaluate(predictor, data_cfg, args.split, output_dir, limit=args.limit,
                      save_predictions=args.save_predictions, model_name=model_path)

    def pct(value):
        return 'n/a' if value is None else f'{100 * value:.2f}%'

    print(f'{result["num_images"]} images of {result["dataset"]} {result["split"]}: '
          f'mIoU {pct(result["miou"])}, pixel accuracy {pct(result["pixel_accuracy"])}, '
          f'fwIoU {pct(result["fw_iou"])}, drivable IoU {pct(result["drivable_iou"])}')
    print(f'wrote {os.path.join(output_dir, "metrics.json")}, metrics.md, '
          'confusion_matrix.png')
    return 0
