"""Writing evaluation results: ``metrics.json``, ``metrics.md`` and the confusion plot.

``write_metrics`` is shared by ``seg-perception evaluate`` and ``bag-eval`` so both
produce the same files. No torch here; matplotlib is imported only to draw the plot
(with the Agg canvas, so no display is needed) and a missing matplotlib only skips it.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict, Optional, Sequence

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.files import write_text
from seg_perception.labels import EGO_NAME
from seg_perception.evaluation.metrics import (ConfusionMatrix, nan_to_none, per_class_accuracy,
                                               summarize)

LOGGER = logging.getLogger(__name__)

METRICS_JSON = 'metrics.json'
METRICS_MD = 'metrics.md'
CONFUSION_PNG = 'confusion_matrix.png'
# Keys every metrics.json has (values may be null when unknown or undefined).
REQUIRED_KEYS = ('miou', 'per_class_iou', 'pixel_accuracy', 'fw_iou', 'drivable_iou',
                 'mean_accuracy', 'confusion_matrix', 'num_images', 'model', 'dataset',
                 'split')


def _class_names_and_drivable(label_space):
    """(class names, drivable ids) of a LabelSpace, a ModelInfo or a plain dict."""
    if isinstance(label_space, dict):
        return list(label_space['class_names']), list(label_space.get('drivable_ids', []))
    names = getattr(label_space, 'class_names', None)
    if names is None:
        raise TypeError(f'need a LabelSpace or ModelInfo for the class names, got '
                        f'{type(label_space).__name__}')
    return list(names), list(getattr(label_space, 'drivable_ids', ()))


def write_metrics(output_dir: str, confusion, label_space, extra: Optional[Dict] = None,
                  plot: bool = True) -> Dict:
    """Write metrics.json, metrics.md and confusion_matrix.png; return the JSON dict.

    ``confusion``: a ConfusionMatrix or a C×C count array (rows ground truth), or C×(C+1)
    with the pixels predicted as ego vehicle last (``confusion_columns`` then names them).
    ``label_space``: a LabelSpace or ModelInfo naming the classes and drivable ids.
    ``extra``: more keys for metrics.json (``num_images``, ``model``, ``dataset``,
    ``split``, ...); they may not replace a computed metric. NaN metrics become null.
    """
    matrix = confusion.matrix if isinstance(confusion, ConfusionMatrix) else np.asarray(confusion)
    names, drivable = _class_names_and_drivable(label_space)
    result = summarize(matrix, names, drivable)
    result['confusion_matrix'] = np.asarray(matrix, np.int64).tolist()
    result['class_names'] = names
    if np.shape(matrix)[1] > len(names):
        result['confusion_columns'] = names + [EGO_NAME]
    result['drivable_ids'] = [int(i) for i in drivable]
    clash = sorted(set(extra or {}) & set(result))
    for key in ('num_images', 'model', 'dataset', 'split'):
        result.setdefault(key, None)
    if clash:
        raise InvalidValueError(f'extra keys {clash} would overwrite computed metrics')
    result.update(extra or {})
    result = nan_to_none(result)
    os.makedirs(output_dir, exist_ok=True)
    write_text(os.path.join(output_dir, METRICS_JSON), metrics_json_text(result))
    write_text(os.path.join(output_dir, METRICS_MD), markdown_report(result, matrix))
    if plot:
        try:
            plot_confusion(matrix, result.get('confusion_columns', names),
                           os.path.join(output_dir, CONFUSION_PNG),
                           title=_title(result))
        except ImportError as exc:
            LOGGER.warning('confusion plot skipped: matplotlib is not installed (%s)', exc)
    return result


def metrics_json_text(result: Dict) -> str:
    """Indented JSON, with each confusion-matrix row on one line (readable at 19 classes)."""
    placeholder = '@@confusion_matrix@@'
    rows = result.get('confusion_matrix')
    text = json.dumps(dict(result, confusion_matrix=placeholder), indent=2, allow_nan=False)
    if isinstance(rows, list):
        body = ',\n'.join('    ' + json.dumps(row) for row in rows)
        text = text.replace(json.dumps(placeholder), '[\n' + body + '\n  ]' if rows else '[]')
    return text + '\n'


def _percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    return f'{100.0 * value:.2f}'


def _title(result: Dict) -> str:
    parts = [str(result[k]) for k in ('model', 'dataset', 'split') if result.get(k)]
    return ' / '.join(os.path.basename(p) for p in parts)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str = '') -> str:
    """A GitHub Markdown table; ``align`` holds 'l'/'r' per column (default: l, then r)."""
    align = align or 'l' + 'r' * (len(header) - 1)
    rule = ['---:' if a == 'r' else ':---' for a in align]
    lines = ['| ' + ' | '.join(str(h) for h in header) + ' |', '| ' + ' | '.join(rule) + ' |']
    lines += ['| ' + ' | '.join(str(c).replace('|', '\\|') for c in row) + ' |'
              for row in rows]
    return '\n'.join(lines) + '\n'


def markdown_report(result: Dict, matrix) -> str:
    """The metrics.md text: context, the summary metrics and a per-class table."""
    matrix = np.asarray(matrix, np.float64)
    lines = ['# Segmentation evaluation', '']
    for key in ('model', 'dataset', 'split', 'num_images', 'ego_mask'):
        if result.get(key) is not None:
            lines.append(f'- {key.replace("_", " ")}: `{result[key]}`')
    inference = result.get('inference') or {}
    if inference.get('model_run') and inference['model_run'] != result.get('model'):
        lines.append(f'- file run: `{inference["model_run"]}`')
    if inference.get('precision'):
        why = f' ({inference["precision_reason"]})' if inference.get('precision_reason') else ''
        lines.append(f'- precision: {inference["precision"]}{why}')
    lines.append(f'- evaluated pixels: {result["num_pixels"]}')
    if matrix.shape[1] > matrix.shape[0]:
        lines.append(f'- of them predicted as ego vehicle: {int(matrix[:, -1].sum())} (a miss of '
                     'their true class, never drivable)')
    lines += ['', '## Summary (%)', '']
    summary_rows = [('mIoU', _percent(result['miou'])),
                    ('pixel accuracy', _percent(result['pixel_accuracy'])),
                    ('mean class accuracy', _percent(result['mean_accuracy'])),
                    ('frequency-weighted IoU', _percent(result['fw_iou'])),
                    ('drivable-area IoU', _percent(result['drivable_iou']))]
    lines.append(markdown_table(('metric', 'value'), summary_rows))
    total = matrix.sum()
    shares = matrix.sum(axis=1) / total if total > 0 else np.zeros(len(matrix))
    accuracies = per_class_accuracy(matrix) if total > 0 else np.full(len(matrix), np.nan)
    drivable = set(result.get('drivable_ids') or [])
    rows = []
    for index, name in enumerate(result['class_names']):
        label = f'{name} (drivable)' if index in drivable else name
        rows.append((index, label, _percent(result['per_class_iou'][name]),
                     _percent(float(accuracies[index])), _percent(float(shares[index]))))
    lines += ['## Per class (%)', '']
    lines.append(markdown_table(('id', 'class', 'IoU', 'accuracy', 'share of pixels'), rows,
                                align='llrrr'))
    lines.append('n/a: the class is absent from both ground truth and prediction '
                 '(IoU) or from the ground truth (accuracy); such classes are left out '
                 'of the means.')
    return '\n'.join(lines) + '\n'


def plot_confusion(matrix, class_names: Sequence[str], path: str, title: str = '') -> str:
    """Save the row-normalised confusion matrix (recall per ground-truth class) as PNG.

    ``class_names`` names the columns; the rows are the first ``len(matrix)`` of them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    count = len(class_names)
    rows_count = len(matrix)
    side = min(4.0 + 0.45 * count, 24.0)
    figure = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(normalised, cmap='Blues', vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(count))
    axes.set_yticks(range(rows_count))
    axes.set_xticklabels(class_names, rotation=60, ha='right', fontsize=8)
    axes.set_yticklabels(class_names[:rows_count], fontsize=8)
    axes.set_xlabel('predicted class')
    axes.set_ylabel('ground-truth class')
    axes.set_title(title or 'confusion matrix (rows sum to 1)', fontsize=10)
    if count <= 25:     # numbers stay readable up to about this many classes
        for i in range(rows_count):
            for j in range(count):
                if normalised[i, j] >= 0.005:
                    axes.text(j, i, f'{normalised[i, j]:.2f}', ha='center', va='center',
                              fontsize=6, color='white' if normalised[i, j] > 0.5 else 'black')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
