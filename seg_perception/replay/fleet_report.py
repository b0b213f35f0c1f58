"""The fleet run's report: ``metrics.json``, ``report.md``, ``report.html`` in the run folder.

``metrics.json`` holds everything the pages show (:mod:`.aggregate`). With two models,
the first overlay of each of the bags where they differ most is put side by side
(A above B) in ``overlays_ab/``. The pages are laid out as blocks and rendered by
:mod:`.report_pages`, like one bag's report.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List

import cv2
import numpy as np

from seg_perception.replay.report import OVERLAY_DIR
from seg_perception.replay.report_pages import (STAGE_NOTES, _ms, _num, _pct, not_scored_text,
                                                render_html, render_markdown)

AB_DIR = 'overlays_ab'


def write_fleet_report(output_dir: str, result: Dict) -> None:
    """Write metrics.json, the A/B pictures, report.md and report.html to ``output_dir``."""
    from seg_perception.evaluation.tables import metrics_json_text
    from seg_perception.files import write_text
    pictures = _ab_pictures(output_dir, result.get('comparison'))
    page = blocks(result, pictures)
    write_text(os.path.join(output_dir, 'metrics.json'), metrics_json_text(result))
    write_text(os.path.join(output_dir, 'report.md'), render_markdown(page, output_dir))
    write_text(os.path.join(output_dir, 'report.html'),
               render_html('Fleet evaluation', page))


def blocks(result: Dict, pictures: List[tuple]) -> List[tuple]:
    """The report's blocks (see report_pages.blocks)."""
    out: List[tuple] = [('h1', f'Fleet evaluation: {result["bags_total"]} bags')]
    if result['not_run']:
        out.append(('warn', f'Partial: stopped by {result.get("stopped_by") or "a signal"} '
                            f'with {len(result["not_run"])} of {result["bags_total"]} bags not '
                            'run (--resume runs them): '
                            + ', '.join(b['name'] for b in result['not_run'])))
    if result['failed']:
        out.append(('warn', f'{result["bags_failed"]} of {result["bags_total"]} bags failed '
                            '(not pooled; --resume re-runs them)'))
        out.append(('table', ('bag', 'reason'),
                    [(f['name'], f['reason']) for f in result['failed']]))
    labels = ('A', 'B') if len(result['models']) == 2 else ('',)
    for label, model, pooled in zip(labels, result['models'], result['per_model']):
        out += _model_blocks(f'{label}: {model}' if label else model, pooled)
    if result.get('comparison'):
        out += _comparison_blocks(result['comparison'], pictures)
    return out


def _model_blocks(title: str, pooled: Dict) -> List[tuple]:
    ran = pooled.get('inference')
    how = (f' Ran {ran["file"]} on {ran["backend"]} ({ran["device"]}) at {ran["precision"]}'
           + (f' ({ran["precision_reason"]})' if ran['precision_reason'] else '') + '.'
           if ran else '')
    out: List[tuple] = [('h2', f'Model {title}'),
                        ('p', f'{pooled["frames"]} frames in {len(pooled["per_bag"])} bags.'
                              + how)]
    metrics = pooled['metrics']
    if metrics and 'miou' in metrics:
        out.append(('p', f'Pooled over all frames ({metrics["kind"]} labels, '
                         f'{metrics["num_images"]} frames scored in {metrics["bags"]} bags; '
                         'confusion matrices summed): mIoU '
                         f'{_pct(metrics["miou"])} %, drivable IoU '
                         f'{_pct(metrics["drivable_iou"])} %.'))
        left_out = not_scored_text(metrics)
        if left_out:
            out.append(('warn', f'These scores leave out {left_out}; what the model labels '
                                'there is not scored.'))
        out.append(('table', ('class', 'IoU (%)'),
                    [(n, _pct(v)) for n, v in (metrics.get('per_class_iou') or {}).items()]))
    elif metrics:
        out.append(('p', metrics['note']))
    out.append(('table', ('bag', 'frames', 'frames scored', 'mIoU (%)', 'drivable IoU (%)',
                          'real time'),
                [(b['name'], b['frames'], b['num_images'], _pct(b['miou']),
                  _pct(b['drivable_iou']), {True: 'yes', False: 'no'}.get(b['realtime'], '?'))
                 for b in pooled['per_bag']]))
    out.append(('p', 'Real time per camera (all its bags; decode + pipeline, first frame of '
                     'each bag left out):'))
    out.append(('table', ('camera', 'bags', 'frames', 'recorded fps', 'mean ms', 'p95 ms',
                          'keeps up'),
                [(n, c['bags'], c['frames'], _num(c['recorded_fps'], 1), _ms(c['mean_node_ms']),
                  _ms(c['node_ms']['p95']), c['verdict'])
                 for n, c in pooled['cameras'].items()]))
    out.append(('p', 'Latency per stage over all frames (ms):'))
    out.append(('table', ('stage', 'median', 'p95', 'max', 'what'),
                [(stage, _ms(v['median']), _ms(v['p95']), _ms(v['max']),
                  STAGE_NOTES.get(stage, '')) for stage, v in pooled['latency_ms'].items()]))
    return out


def _comparison_blocks(comparison: Dict, pictures: List[tuple]) -> List[tuple]:
    out: List[tuple] = [('h2', 'A/B: B - A')]
    if comparison.get('same_run'):
        out.append(('warn', 'A and B ran the same file at the same precision: this compares '
                            'a model with itself (precision auto runs the INT8 form beside a '
                            'model; give --precision fp32 to run each file as it is).'))
    out.append(('p', f'Labels differ on {_pct(comparison["label_disagreement"])} % of the '
                     f'pixels; mIoU {_signed(comparison["miou_delta"])}, drivable IoU '
                     f'{_signed(comparison["drivable_iou_delta"])} (percentage points).'))
    if comparison['per_class_iou_delta']:
        out.append(('table', ('class', 'IoU delta (pp)'),
                    [(n, _signed(v)) for n, v in comparison['per_class_iou_delta'].items()]))
    out.append(('table', ('bag', 'pixels differing (%)', 'mIoU delta (pp)',
                          'drivable IoU delta (pp)'),
                [(b['name'], _pct(b['label_disagreement']), _signed(b['miou_delta']),
                  _signed(b['drivable_iou_delta'])) for b in comparison['per_bag']]))
    if comparison['most_different']:
        out.append(('p', 'Where they differ most: ' + ', '.join(comparison['most_different'])
                    + (' (A above B):' if pictures else '.')))
    out += [('img', caption, path) for caption, path in pictures]
    return out


def _signed(value) -> str:
    return 'n/a' if value is None else f'{100.0 * value:+.2f}'


def _ab_pictures(output_dir: str, comparison) -> List[tuple]:
    """(caption, path) of A above B for the first overlay of the most different bags."""
    if not comparison:
        return []
    rows = {b['name']: b for b in comparison['per_bag']}
    written = []
    for name in comparison['most_different']:
        first = [sorted(glob.glob(os.path.join(folder, OVERLAY_DIR, '*.png')))
                 for folder in rows[name]['output_dirs']]
        if not all(first):
            continue
        images = [cv2.imread(paths[0]) for paths in first]
        if any(image is None for image in images):
            continue
        width = max(image.shape[1] for image in images)
        padded = [np.pad(image, ((0, 4), (0, width - image.shape[1]), (0, 0)),
                         constant_values=255) for image in images]
        path = os.path.join(output_dir, AB_DIR, f'{name}.png')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if cv2.imwrite(path, np.vstack(padded)):
            written.append((f'{name}: {os.path.basename(first[0][0])[:-4]}, A above B', path))
    return written
