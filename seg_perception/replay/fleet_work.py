"""One bag of a fleet run: the work a worker does, described as plain data.

A :class:`BagTask` names the bag, its output folders and the bag-eval options; the
same :func:`evaluate_task` runs it in a local worker process (:mod:`.fleet`) or as a
Ray task (:mod:`.fleet_ray`). It calls today's per-bag evaluator
(:func:`~seg_perception.replay.bag_eval.evaluate_bag`) once per model, with a pipeline
built once per worker process and model (``_PIPELINES``), and returns a
JSON-ready result: the bag's metrics.json per model, what really ran it (the file,
backend and precision: ``precision auto`` may run the INT8 form beside the model), its
raw per-frame latency samples (pooled exactly by :mod:`.aggregate`) and, with two
models, how often their labels differ. A bag that cannot be evaluated returns
``status: failed`` with the reason; one stopped by a stop request (the ``stop`` of
:func:`evaluate_task`) returns ``status: stopped`` (not finished: a fleet run keeps
no result for it); only a bug propagates.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from seg_perception.errors import SegPerceptionError
from seg_perception.replay.report import STAGES

LOG = logging.getLogger(__name__)
OK, FAILED, STOPPED = 'ok', 'failed', 'stopped'

# (model, backend, precision, drivable classes, threads, engine cache) -> pipeline, per process
_PIPELINES: Dict[tuple, object] = {}


@dataclass
class BagTask:
    """One bag to evaluate with one or two models (``models[i]`` into ``outputs[i]``)."""

    bag: str
    name: str                               # unique among the run's bags: names its files
    models: List[str]
    outputs: List[str]
    options: Dict = field(default_factory=dict)     # evaluate_bag keywords
    hook: Optional[Callable[[str], None]] = None    # called with the bag first (tests)

    def to_dict(self) -> Dict:
        return {k: v for k, v in asdict(self).items() if k != 'hook'}


def failed_result(task: BagTask, reason: str) -> Dict:
    """The result of a bag that could not be evaluated, for ``reason``."""
    return {'bag': task.bag, 'name': task.name, 'models': list(task.models),
            'status': FAILED, 'reason': reason, 'runs': [], 'disagreement': None}


def _pipeline(model: str, options: Dict):
    from seg_perception.replay.bag_eval import make_pipeline
    keys = ('backend', 'precision', 'drivable_classes', 'threads', 'engine_cache_dir')
    settings = {k: options[k] for k in keys if k in options}
    key = (model,) + tuple((k, repr(v)) for k, v in sorted(settings.items()))
    if key not in _PIPELINES:
        _PIPELINES[key] = make_pipeline(model, **settings)
    return _PIPELINES[key]


def ran(pipeline) -> Dict:
    """What runs a model: the file (with precision auto, maybe the INT8 form beside it),
    the backend, the precision and why."""
    description = pipeline.describe()
    return {'file': description.get('model'), 'backend': description.get('name'),
            'device': description.get('device'), 'precision': description.get('precision'),
            'precision_reason': description.get('precision_reason') or None}


def same_run(first: Optional[Dict], second: Optional[Dict]) -> bool:
    """Whether two :func:`ran` are the same file, backend and precision."""
    keys = ('file', 'backend', 'precision')
    return bool(first and second) and all(first.get(k) == second.get(k) for k in keys)


def evaluate_task(task: BagTask, stop: Optional[Callable[[], Optional[str]]] = None) -> Dict:
    """Evaluate ``task``'s bag with each model; the per-bag result (see the module doc).

    ``stop``: evaluate_bag's stop request (a worker's SIGTERM).
    """
    from seg_perception.replay.bag_eval import RunStopped, evaluate_bag
    started = time.monotonic()
    result = dict(failed_result(task, ''), status=OK, reason=None)
    if task.hook is not None:
        task.hook(task.bag)
    for model, output in zip(task.models, task.outputs):
        records: Dict[str, List[Dict]] = {}
        try:
            pipeline = _pipeline(model, task.options)
            summary = evaluate_bag(task.bag, model, output, progress=False, pipeline=pipeline,
                                   records=records, stop=stop, **task.options)
        except RunStopped as exc:
            result.update(status=STOPPED, reason=str(exc))
            break
        except (SegPerceptionError, OSError) as exc:
            result.update(status=FAILED, reason=f'{type(exc).__name__}: {exc}')
            break
        result['runs'].append({'model': model, 'output_dir': output, 'summary': summary,
                               'ran': ran(pipeline), 'samples': _samples(records)})
    if result['status'] == OK and len(result['runs']) == 2:
        try:
            result['disagreement'] = label_disagreement(*(r['summary']['output_bag']
                                                          for r in result['runs']))
        except (SegPerceptionError, OSError) as exc:
            result.update(status=FAILED, reason=f'comparing the output bags: {exc}')
    result['seconds'] = round(time.monotonic() - started, 3)
    return result


def _samples(records: Dict[str, List[Dict]]) -> Dict[str, Dict[str, List[float]]]:
    """camera -> stage -> the per-frame ms (0.001 ms resolution), for exact pooling."""
    return {camera: {stage: [round(r[stage], 3) for r in rows] for stage in STAGES}
            for camera, rows in records.items()}


def label_disagreement(bag_a: str, bag_b: str) -> Dict:
    """Pixels whose class differs between the labels topics of two output bags of one
    input bag: {'pixels', 'differ', 'fraction', 'per_camera': {topic: fraction}}."""
    a, b = _labels(bag_a), _labels(bag_b)
    pixels = differ = 0
    per_camera: Dict[str, float] = {}
    for topic in sorted(set(a) | set(b)):
        frames_a, frames_b = a.get(topic, {}), b.get(topic, {})
        total = changed = 0
        for key in sorted(set(frames_a) & set(frames_b)):
            left, right = frames_a[key], frames_b[key]
            total += left.size
            changed += int(np.count_nonzero(left != right)) if left.shape == right.shape \
                else left.size
        # a frame only one model wrote counts as wholly different
        for key in set(frames_a) ^ set(frames_b):
            size = (frames_a.get(key) if key in frames_a else frames_b[key]).size
            total += size
            changed += size
        per_camera[topic] = round(changed / total, 6) if total else None
        pixels += total
        differ += changed
    return {'pixels': pixels, 'differ': differ,
            'fraction': round(differ / pixels, 6) if pixels else None, 'per_camera': per_camera}


def _labels(path: str) -> Dict[str, Dict[Tuple[int, int], np.ndarray]]:
    """labels topic -> (log time, index) -> class ids, of an output bag."""
    from seg_perception.replay.bag_io import open_bag
    out: Dict[str, Dict[Tuple[int, int], np.ndarray]] = {}
    with open_bag(path, allow_salvage=False) as source:
        topics = [t for t in source.topics if t.endswith('/segmentation/labels')]
        for topic, msgtype, log_time, raw in source.messages(topics):
            msg = source.deserialize(raw, msgtype)
            frames = out.setdefault(topic, {})
            pixels = np.frombuffer(bytes(msg.data), np.uint8)[:msg.height * msg.step]
            image = pixels.reshape(msg.height, msg.step)[:, :msg.width]
            frames[(int(log_time), len(frames))] = image
    return out
