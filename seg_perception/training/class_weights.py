"""Class weights for the segmentation loss, from the training labels (``class-weights``).

Two schemes:

``median_freq``
    Median-frequency balancing (Eigen & Fergus, ICCV 2015): ``freq(c)`` = pixels of
    class c / labelled pixels of the images in which c is present; ``w(c) =
    median(freq) / freq(c)``, the median taken over the classes that occur. Pixels
    with the ignore id are not counted anywhere. A class that never occurs gets 0
    (it has no pixels to weigh) and a warning.
``enet``
    ENet (Paszke et al., 2016): ``w(c) = 1 / ln(1.02 + p(c))`` with ``p(c)`` = pixels
    of c / all labelled pixels; bounded by 1/ln(1.02) ≈ 50.5 for rare classes.

Counting every label image takes a while on large datasets, so results are cached
in a JSON file (``class_weights.json`` in the dataset root by default, or a user
cache folder when the root is read-only) under ``<dataset>/<split>/<method>``, with
a fingerprint of the label files (names and sizes); a changed dataset is recounted.

    seg-perception class-weights --config train.yaml [--method enet]
    seg-perception class-weights --dataset camvid --root DIR [--split train] [--output FILE]
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.files import write_text

LOGGER = logging.getLogger(__name__)
METHODS = ('median_freq', 'enet')
ENET_C = 1.02
CACHE_FORMAT = 'seg_perception/class-weights-1'
CACHE_NAME = 'class_weights.json'


def count_pixels(dataset, num_classes: int, ignore_index: int, workers: int = 1,
                 progress: bool = False) -> dict:
    """Per-class pixel counts over ``dataset.read_label`` (or ``dataset[i][1]``).

    Returns ``pixels`` (pixels of each class), ``image_pixels`` (labelled pixels of
    the images where each class is present), ``labelled`` (all labelled pixels),
    ``num_images`` and ``skipped`` (unreadable files skipped with ``skip_corrupt``).
    """
    from seg_perception.data.common import CorruptFileError

    skip = bool(getattr(dataset, 'skip_corrupt', False))
    read = getattr(dataset, 'read_label', None) or (lambda i: np.asarray(dataset[i][1]))

    def one(index):
        try:
            label = np.asarray(read(index)).ravel()
        except CorruptFileError as exc:
            if not skip:
                raise
            return None, str(exc)
        valid = label[label != ignore_index]
        if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
            bad = np.unique(valid[(valid < 0) | (valid >= num_classes)])
            raise InvalidValueError(f'sample {index}: class ids {bad.tolist()} outside 0..'
                                    f'{num_classes - 1} (ignore id {ignore_index})')
        return np.bincount(valid.astype(np.int64), minlength=num_classes), None

    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    skipped = 0
    indices = range(len(dataset))
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        results = pool.map(one, indices)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(dataset), desc='counting labels', unit='img')
        for counts, error in results:
            if counts is None:
                skipped += 1
                LOGGER.warning('skipping unreadable label (%d so far): %s', skipped, error)
                continue
            pixels += counts
            image_pixels[counts > 0] += counts.sum()
    return {'pixels': pixels, 'image_pixels': image_pixels, 'labelled': int(pixels.sum()),
            'num_images': len(dataset) - skipped, 'skipped': skipped}


def weights_from_counts(counts: dict, method: str) -> np.ndarray:
    """Class weights (float64) from the output of :func:`count_pixels`."""
    pixels = np.asarray(counts['pixels'], np.float64)
    if pixels.sum() <= 0:
        raise InvalidValueError('no labelled pixels: every label is the ignore id')
    if method == 'median_freq':
        image_pixels = np.asarray(counts['image_pixels'], np.float64)
        present = pixels > 0
        freq = np.zeros_like(pixels)
        freq[present] = pixels[present] / image_pixels[present]
        weights = np.zeros_like(pixels)
        weights[present] = np.median(freq[present]) / freq[present]
        return weights
    if method == 'enet':
        return 1.0 / np.log(ENET_C + pixels / pixels.sum())
    raise InvalidValueError(f'unknown class-weight method {method!r}; use one of '
                            f'{", ".join(METHODS)}')


def _warn_absent(counts: dict, class_names=None) -> None:
    absent = np.flatnonzero(np.asarray(counts['pixels']) == 0)
    if absent.size:
        names = [class_names[i] if class_names else str(i) for i in absent]
        LOGGER.warning('classes never seen in the labels: %s', ', '.join(names))


def compute_class_weights(dataset, method: str = 'median_freq',
                          num_classes: Optional[int] = None,
                          ignore_index: Optional[int] = None, workers: int = 1) -> np.ndarray:
    """Class weights of ``dataset`` (float64, one per class) by ``median_freq`` or ``enet``.

    ``num_classes``/``ignore_index`` default to ``dataset.label_space``'s.
    """
    if method not in METHODS:
        raise InvalidValueError(f'unknown class-weight method {method!r}; use one of '
                                f'{", ".join(METHODS)}')
    space = getattr(dataset, 'label_space', None)
    num_classes = space.num_classes if num_classes is None else int(num_classes)
    ignore_index = space.ignore_index if ignore_index is None else int(ignore_index)
    counts = count_pixels(dataset, num_classes, ignore_index, workers=workers)
    _warn_absent(counts, space.class_names if space is not None else None)
    return weights_from_counts(counts, method)


def label_fingerprint(dataset) -> str:
    """A hash of the label file names (relative to the root) and sizes."""
    digest = hashlib.sha1()
    root = str(getattr(dataset, 'root', ''))
    for _, label in sorted(dataset.samples):
        rel = os.path.relpath(label, root) if root else label
        digest.update(f'{rel}\0{os.path.getsize(label)}\n'.encode())
    return digest.hexdigest()


def default_cache_path(dataset) -> Path:
    """``<root>/class_weights.json``, or a per-root file in the user cache when read-only."""
    root = Path(dataset.root)
    if os.access(root, os.W_OK):
        return root / CACHE_NAME
    base = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
    tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return base / 'seg_perception' / 'class_weights' / f'{root.name}-{tag}.json'


def _read_cache(path: Path) -> dict:
    if not path.is_file():
        return {'format': CACHE_FORMAT, 'entries': {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        LOGGER.warning('ignoring unreadable class-weight cache %s: %s', path, exc)
        return {'format': CACHE_FORMAT, 'entries': {}}
    if data.get('format') != CACHE_FORMAT or not isinstance(data.get('entries'), dict):
        LOGGER.warning('ignoring class-weight cache %s: not a %s file', path, CACHE_FORMAT)
        return {'format': CACHE_FORMAT, 'entries': {}}
    return data


def _write_cache(path: Path, data: dict) -> None:
    write_text(str(path), json.dumps(data, indent=1) + '\n')


def cached_class_weights(dataset, method: str = 'median_freq', *, dataset_name: str,
                         cache_path=None, recompute: bool = False, workers: int = 1,
                         progress: bool = False) -> dict:
    """Weights of ``dataset`` from the cache, computing and storing them when needed.

    Returns the cache entry: ``weights`` (np.ndarray), ``class_names``, ``pixels``,
    ``num_images``, ``cache_path``, ``cached`` (True when reused), ``key``.
    """
    if method not in METHODS:
        raise InvalidValueError(f'unknown class-weight method {method!r}; use one of '
                                f'{", ".join(METHODS)}')
    space = dataset.label_space
    path = Path(cache_path) if cache_path else default_cache_path(dataset)
    prefix = f'{dataset_name}/{dataset.split}/'
    key = prefix + method
    fingerprint = label_fingerprint(dataset)
    data = _read_cache(path)
    entries = data['entries']
    entry = entries.get(key)
    if (not recompute and entry and entry.get('fingerprint') == fingerprint
            and entry.get('num_classes') == space.num_classes):
        return dict(entry, weights=np.asarray(entry['weights'], np.float64),
                    cache_path=str(path), cached=True, key=key)
    # the other method's entry holds the same pixel counts: reuse them
    counts = None
    for other_key, other in entries.items():
        if (not recompute and other_key.startswith(prefix)
                and other.get('fingerprint') == fingerprint
                and other.get('num_classes') == space.num_classes
                and other.get('ignore_index') == space.ignore_index):
            counts = other
            break
    if counts is None:
        counts = count_pixels(dataset, space.num_classes, space.ignore_index,
                              workers=workers, progress=progress)
    _warn_absent(counts, space.class_names)
    weights = weights_from_counts(counts, method)
    entry = {'weights': [float(w) for w in weights], 'method': method,
             'class_names': list(space.class_names), 'num_classes': space.num_classes,
             'ignore_index': space.ignore_index, 'num_images': int(counts['num_images']),
             'skipped': int(counts.get('skipped', 0)),
             'pixels': [int(p) for p in counts['pixels']],
             'image_pixels': [int(p) for p in counts['image_pixels']],
             'labelled': int(counts['labelled']), 'fingerprint': fingerprint}
    entries[key] = entry
    try:
        _write_cache(path, data)
    except OSError as exc:
        LOGGER.warning('could not write class-weight cache %s: %s', path, exc)
    return dict(entry, weights=weights, cache_path=str(path), cached=False, key=key)
