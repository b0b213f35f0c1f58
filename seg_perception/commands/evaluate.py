"""``seg-perception evaluate``: score a checkpoint or an exported ONNX model on a dataset.

The work is done by :mod:`seg_perception.evaluation.evaluate`; this is its shell.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict

from seg_perception.commands import _args
from seg_perception.errors import InvalidValueError
from seg_perception.evaluation.evaluate import PipelinePredictor, TorchPredictor, evaluate


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception evaluate``."""
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
    _args.add_drivable_option(data)
    ego = data.add_mutually_exclusive_group()
    ego.add_argument('--ego-mask', metavar='PNG',
                     help='the ego vehicle\'s pixels (e.g. the bonnet), one mask for every image: '
                          'non-zero = ego, any resolution, scaled to each image; the model '
                          'labels them ego and never drivable, the ground truth keeps its labels')
    ego.add_argument('--ego-polygon', metavar='X1,Y1,...',
                     help='the same as a polygon of normalised image coordinates (0..1), '
                          'comma-separated x, y pairs')
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
    _args.add_runtime_options(parser.add_argument_group('ONNX model inference'))


def data_config_from_args(args: argparse.Namespace) -> Dict:
    """The data config: the config file's data section or --dataset/--root."""
    if args.config and args.dataset:
        raise InvalidValueError('give either --config or --dataset/--root, not both')
    if args.config:
        from seg_perception.config import load_config
        data_cfg = dict(load_config(args.config)['data'])
        if args.root:
            data_cfg['root'] = args.root
    elif args.dataset:
        if not args.root:
            raise InvalidValueError(f'--dataset {args.dataset} needs --root DIR (the dataset '
                                    f'folder)')
        data_cfg = {'dataset': args.dataset, 'root': args.root}
    else:
        raise InvalidValueError('no data given: pass --config CFG or --dataset NAME --root DIR')
    if args.drivable_classes:
        data_cfg['drivable_classes'] = _args.drivable_classes(args.drivable_classes)
    if not data_cfg.get('dataset'):
        raise InvalidValueError(f'{args.config}: the data section names no dataset')
    return data_cfg


def ego_mask_from_args(args: argparse.Namespace):
    """The EgoMask of --ego-mask or --ego-polygon; None when neither is given."""
    from seg_perception.ground.ego import EgoMask
    if args.ego_mask:
        return EgoMask.from_png(args.ego_mask)
    if args.ego_polygon:
        return EgoMask.from_polygon(_numbers('--ego-polygon', args.ego_polygon),
                                    source='--ego-polygon')
    return None


def _numbers(option: str, text: str) -> list:
    try:
        return [float(item) for item in text.split(',') if item.strip()]
    except ValueError:
        raise InvalidValueError(f'{option}: expected comma-separated numbers, got '
                                f'{text!r}') from None


def run(args: argparse.Namespace) -> int:
    """Evaluate, write metrics.json / metrics.md / the confusion matrix, print a summary."""
    data_cfg = data_config_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise InvalidValueError(f'--limit must be at least 1, got {args.limit}')
    ego_mask = ego_mask_from_args(args)
    if args.threads and args.checkpoint:
        import torch
        torch.set_num_threads(int(args.threads))
    if args.checkpoint:
        if not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
        predictor = TorchPredictor(args.checkpoint, device=args.device, mode=args.mode,
                                   scales=args.scales, flip=args.flip, overlap=args.overlap,
                                   ego_mask=ego_mask)
        model_path = args.checkpoint
    else:
        if args.mode != 'whole' or args.flip or list(args.scales) != [1.0]:
            raise InvalidValueError('--mode slide, --scales and --flip apply to --checkpoint only: '
                                    'an ONNX model is evaluated as deployed (whole image)')
        predictor = PipelinePredictor(args.model, backend=args.backend,
                                      precision=args.precision, threads=args.threads,
                                      engine_cache_dir=args.engine_cache_dir,
                                      ego_mask=ego_mask)
        model_path = args.model
    output_dir = args.output or os.path.join(
        os.path.dirname(os.path.abspath(model_path)),
        f'eval_{data_cfg["dataset"]}_{args.split}')
    result = evaluate(predictor, data_cfg, args.split, output_dir, limit=args.limit,
                      save_predictions=args.save_predictions, model_name=model_path)

    def pct(value):
        return 'n/a' if value is None else f'{100 * value:.2f}%'

    inference = result.get('inference') or {}
    ran = ''
    if inference.get('kind') == 'onnx':
        ran = f' ({inference["backend"]}, {inference["precision"]}'
        if inference.get('precision_reason'):
            ran += f': {inference["precision_reason"]}'
        ran += ')'
    print(f'{result["num_images"]} images of {result["dataset"]} {result["split"]}{ran}: '
          f'mIoU {pct(result["miou"])}, pixel accuracy {pct(result["pixel_accuracy"])}, '
          f'fwIoU {pct(result["fw_iou"])}, drivable IoU {pct(result["drivable_iou"])}')
    print(f'wrote {os.path.join(output_dir, "metrics.json")}, metrics.md, '
          'confusion_matrix.png')
    return 0
