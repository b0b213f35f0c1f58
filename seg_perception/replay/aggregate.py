"""The aggregate of a fleet run: per-bag results (:mod:`.fleet_work`) pooled into one.

Pooling is exact, never an average of averages: confusion matrices are summed and
the metrics computed once from the sum (``evaluation.metrics.summarize``); latency
distributions are computed from all bags' raw per-frame samples. Per camera name
(the same camera across bags), the real-time verdict uses the pooled mean ``node``
time (each bag's first frame per camera left out, as in one bag's report) against
the recorded frame rate of all its frames. Failed bags are listed and not pooled.
A run stopped early (SIGINT, SIGTERM) is ``status: partial``: the bags it finished are
pooled, those it did not run are listed (``not_run``).

With two models, A (``--model``) and B (``--compare``): per-bag and per-class IoU
deltas (B - A, from the pooled matrices), the label disagreement per bag (fraction
of pixels whose class differs) and the bags where the models differ most. What ran
each model (file, backend, precision: ``precision auto`` may run an INT8 form) is
recorded per model (``inference``); ``same_run`` says when two different models ran
as the same file at the same precision (the A/B compares a model with itself).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from seg_perception.evaluation.metrics import nan_to_none, summarize
from seg_perception.replay.fleet_work import OK, same_run
from seg_perception.replay.report import STAGES, latency_summary

MOST_DIFFERENT = 3      # bags shown side by side in the A/B report


def aggregate(results: Sequence[Dict], models: Sequence[str],
              not_run: Sequence[Dict] = ()) -> Dict:
    """The fleet's metrics.json content from the per-bag results (``not_run``: bag and
    name of each bag a stopped run did not finish)."""
    done = [r for r in results if r['status'] == OK]
    failed = [{'bag': r['bag'], 'name': r['name'], 'reason': r['reason']}
              for r in results if r['status'] != OK]
    out = {'status': 'partial' if not_run else 'complete',
           'bags_total': len(results) + len(not_run), 'bags_ok': len(done),
           'bags_failed': len(failed), 'failed': failed,
           'not_run': [{'bag': r['bag'], 'name': r['name']} for r in not_run],
           'models': list(models),
           'per_model': [dict(pool([r['runs'][i] for r in done], [r['name'] for r in done]),
                              inference=_inference([r['runs'][i] for r in done]))
                         for i in range(len(models))]}
    if len(models) == 2:
        out['comparison'] = compare(out['per_model'], done)
        out['comparison']['same_run'] = models[0] != models[1] and same_run(
            *(m['inference'] for m in out['per_model']))
    return nan_to_none(out)


def _inference(runs: Sequence[Dict]) -> Optional[Dict]:
    """What ran one model (fleet_work.ran): the same in every bag of a run, as every
    worker builds its pipeline with the same settings; None before any bag went through."""
    seen = [r['ran'] for r in runs if r.get('ran')]
    return seen[0] if seen else None


def pool(runs: Sequence[Dict], names: Sequence[str]) -> Dict:
    """One model's runs (one per bag, in ``names`` order) pooled."""
    summaries = [r['summary'] for r in runs]
    metrics = _pooled_metrics(summaries)
    samples = [r['samples'] for r in runs]
    latency = {stage: latency_summary([v for bag in samples for cam in bag.values()
                                       for v in cam[stage]]) for stage in STAGES}
    return {
        'frames': int(sum(s['frames'] for s in summaries)),
        'metrics': metrics,
        'latency_ms': latency,
        'cameras': _cameras(summaries, samples),
        'per_bag': [{'name': name, 'bag': s['bag'], 'frames': s['frames'],
                     'num_images': s['num_images'], 'miou': s.get('miou'),
                     'drivable_iou': s.get('drivable_iou'),
                     'per_class_iou': s.get('per_class_iou'),
                     'realtime': s['realtime'].get('keeps_up'), 'output_dir': s['output_dir']}
                    for name, s in zip(names, summaries)],
    }


def _pooled_metrics(summaries: Sequence[Dict]) -> Optional[Dict]:
    """Metrics from the summed confusion matrices of the bags with ground truth."""
    labelled = [s for s in summaries if s.get('ground_truth')]
    if not labelled:
        return None
    kinds = {s['ground_truth']['kind'] for s in labelled}
    shapes = {np.shape(s['confusion_matrix']) for s in labelled}
    if len(kinds) > 1 or len(shapes) > 1:
        return {'note': f'not pooled: the bags have {" and ".join(sorted(kinds))} labels'}
    first = labelled[0]
    matrix = np.sum([np.asarray(s['confusion_matrix'], np.int64) for s in labelled], axis=0)
    metrics = summarize(matrix, first['class_names'], first['drivable_ids'])
    metrics.update(kind=first['ground_truth']['kind'], bags=len(labelled),
                   num_images=int(sum(s['num_images'] for s in labelled)),
                   class_names=list(first['class_names']),
                   confusion_matrix=matrix.tolist(),
                   not_scored=_not_scored(s['ground_truth'] for s in labelled))
    return metrics


def _not_scored(truths) -> Optional[Dict]:
    """The bags' labelled pixels left out of the scores, summed (None from older results)."""
    parts = [t.get('not_scored') for t in truths]
    if not parts or any(p is None for p in parts):
        return None
    pixels = sum(p['pixels'] for p in parts)
    labelled = sum(p['labelled'] for p in parts)
    return {'pixels': pixels, 'labelled': labelled,
            'fraction': round(pixels / labelled, 6) if labelled else 0.0,
            'rule': parts[0]['rule']}


def _cameras(summaries: Sequence[Dict], samples: Sequence[Dict]) -> Dict[str, Dict]:
    """Per camera name: frames, pooled node latency and the real-time verdict."""
    out: Dict[str, Dict] = {}
    for summary, bag in zip(summaries, samples):
        for name, camera in summary['cameras'].items():
            entry = out.setdefault(name, {'bags': 0, 'frames': 0, 'node': [], 'warm': [],
                                          'recorded_s': 0.0, 'recorded_frames': 0})
            node = bag.get(name, {}).get('node', [])
            entry['bags'] += 1
            entry['frames'] += camera['frames']
            entry['node'] += node
            entry['warm'] += node[1:] if len(node) > 1 else node
            if camera['recorded_fps']:
                # frames - 1 periods at the recorded rate: the recording time of this camera
                entry['recorded_s'] += (camera['frames'] - 1) / camera['recorded_fps']
                entry['recorded_frames'] += camera['frames'] - 1
    return {name: _verdict(entry) for name, entry in out.items()}


def _verdict(entry: Dict) -> Dict:
    fps = entry['recorded_frames'] / entry['recorded_s'] if entry['recorded_s'] else None
    mean_ms = float(np.mean(entry['warm'])) if entry['warm'] else None
    load = fps * mean_ms / 1000.0 if fps and mean_ms else None
    if load is None:
        verdict = 'unknown (too few frames to measure the recording rate)'
    elif load <= 1.0:
        verdict = f'yes, {100 * load:.0f}% of the recording time'
    else:
        verdict = f'no, {100 * load:.0f}% of the recording time: drops about ' \
                  f'{100 * (1 - 1 / load):.0f}% of the frames'
    return {'bags': entry['bags'], 'frames': entry['frames'],
            'recorded_fps': None if fps is None else round(fps, 3),
            'mean_node_ms': None if mean_ms is None else round(mean_ms, 3),
            'node_ms': latency_summary(entry['node']),
            'utilisation': None if load is None else round(load, 4),
            'keeps_up': None if load is None else load <= 1.0, 'verdict': verdict}


def compare(per_model: List[Dict], done: Sequence[Dict]) -> Dict:
    """B - A: pooled metrics, per class, per bag; the bags where the labels differ most."""
    a, b = per_model
    metrics_a, metrics_b = a['metrics'] or {}, b['metrics'] or {}
    per_bag = []
    for row_a, row_b, result in zip(a['per_bag'], b['per_bag'], done):
        agreement = result.get('disagreement') or {}
        per_bag.append({'name': row_a['name'], 'bag': row_a['bag'],
                        'label_disagreement': agreement.get('fraction'),
                        'miou_delta': _delta(row_a['miou'], row_b['miou']),
                        'drivable_iou_delta': _delta(row_a['drivable_iou'],
                                                     row_b['drivable_iou']),
                        'output_dirs': [row_a['output_dir'], row_b['output_dir']]})
    ranked = sorted((r for r in per_bag if r['label_disagreement']),
                    key=lambda r: -r['label_disagreement'])
    classes_a = metrics_a.get('per_class_iou') or {}
    classes_b = metrics_b.get('per_class_iou') or {}
    pixels = sum((r.get('disagreement') or {}).get('pixels', 0) for r in done)
    differ = sum((r.get('disagreement') or {}).get('differ', 0) for r in done)
    return {
        'miou_delta': _delta(metrics_a.get('miou'), metrics_b.get('miou')),
        'drivable_iou_delta': _delta(metrics_a.get('drivable_iou'),
                                     metrics_b.get('drivable_iou')),
        'per_class_iou_delta': {name: _delta(classes_a.get(name), classes_b.get(name))
                                for name in classes_a},
        'label_disagreement': round(differ / pixels, 6) if pixels else None,
        'per_bag': per_bag,
        'most_different': [r['name'] for r in ranked[:MOST_DIFFERENT]],
    }


def _delta(first, second) -> Optional[float]:
    if first is None or second is None:
        return None
    return round(float(second) - float(first), 6)
