"""Ground truth for ``bag-eval``: label images matched to the frames of a bag.

Two sources:

- ``--label-topic [CAMERA=]TOPIC``: mono8 label images in the bag itself
  (sensor_msgs/Image, or a PNG CompressedImage), matched to the camera's frames by
  header stamp. Without ``CAMERA=`` the topic belongs to the camera whose
  namespace it lies in (``/cam_front/ground_truth/labels`` → ``cam_front``), or to
  the only camera. Labels may be logged before or after their frame: whichever of
  the two comes second completes the pair (a bounded number wait per camera).
- ``--labels DIR``: label PNGs on disk, in DIR or in DIR/<camera name>/, matched
  by ``--labels-match stamp`` (default: the file name is the header stamp in
  nanoseconds, ``1700000000123456789.png``, optionally ``<camera name>_<stamp>.png``)
  or ``--labels-match name`` (the number in the file name is the frame's position
  in its camera topic, counted from 0, as frame extractors name them:
  ``frame0000.png``, ``000012.png``).

Two kinds of label images (``--label-kind``, ``auto`` = ``drivable`` when the
topic or folder name says "drivable", else ``classes``):

- ``classes``: class ids of the model's label space (its ignore id is ignored);
  gives mIoU, per-class IoU and drivable-area IoU as ``seg-perception evaluate``.
- ``drivable``: 255 = drivable, 0 = not drivable, any other value ignored (the
  same convention as the node's drivable_mask); scored against the predicted
  drivable mask as two classes, ``not drivable`` and ``drivable``.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.labels import EGO_ID
from seg_perception.replay.bag_io import BagError, same_topic
from seg_perception.evaluation.metrics import ConfusionMatrix

KINDS = ('auto', 'classes', 'drivable')
MATCHES = ('stamp', 'name')
DRIVABLE_SPACE = {'class_names': ['not drivable', 'drivable'], 'drivable_ids': [1]}
_PENDING_LIMIT = 64        # frames (or labels) per camera waiting for their partner
_IMAGE_SUFFIXES = ('.png', '.pgm', '.bmp', '.tif', '.tiff')


def resolve_kind(kind: str, source_name: str) -> str:
    """'classes' or 'drivable' for ``kind`` ('auto' looks at the topic/folder name)."""
    if kind not in KINDS:
        raise InvalidValueError(f'--label-kind must be one of {", ".join(KINDS)}, got {kind!r}')
    if kind != 'auto':
        return kind
    return 'drivable' if 'drivable' in source_name.lower() else 'classes'


class Scorer:
    """Confusion matrices (all cameras and per camera) for one kind of label."""

    def __init__(self, kind: str, info):
        self.kind = kind
        if kind == 'drivable':
            self.space = dict(DRIVABLE_SPACE)
            self.num_classes, self.ignore_index = 2, 2
        else:
            self.space = {'class_names': list(info.class_names),
                          'drivable_ids': list(info.drivable_ids)}
            self.num_classes, self.ignore_index = info.num_classes, info.ignore_index
        self.total = ConfusionMatrix(self.num_classes, self.ignore_index)
        self.per_camera: Dict[str, ConfusionMatrix] = {}
        self.frames: Dict[str, int] = {}
        # Label pixels the scores leave out (e.g. a bonnet the labels mark 128): said beside
        # every score, since an IoU that skips a region the model labels is not its IoU.
        self.pixels_labelled = self.pixels_not_scored = 0

    def prediction(self, result) -> np.ndarray:
        """What is scored of a SegResult: class ids, or the drivable mask as 0/1."""
        if self.kind == 'drivable':
            return (result.drivable_mask == 255).astype(np.uint8)
        return result.labels

    def update(self, camera: str, prediction: np.ndarray, label: np.ndarray, where: str) -> None:
        """Add one frame; ``where`` names the label in errors."""
        if label.shape != prediction.shape:
            raise BagError(f'{where}: label image is {label.shape[1]}x{label.shape[0]} but the '
                           f'camera image is {prediction.shape[1]}x{prediction.shape[0]} '
                           '(W x H); labels must have the camera resolution')
        if self.kind == 'drivable':
            target = np.full(label.shape, 2, np.uint8)
            target[label == 0] = 0
            target[label == 255] = 1
        else:
            target = label
            prediction = self._ego_as_miss(prediction, target)
        camera_matrix = self.per_camera.setdefault(
            camera, ConfusionMatrix(self.num_classes, self.ignore_index))
        try:
            camera_matrix.update(prediction, target)
        except ValueError as exc:
            raise BagError(f'{where}: {exc}') from None
        self.total.update(prediction, target)
        self.frames[camera] = self.frames.get(camera, 0) + 1
        self.pixels_labelled += target.size
        if self.ignore_index is not None:
            self.pixels_not_scored += int(np.count_nonzero(target == self.ignore_index))

    def not_scored(self) -> Dict:
        """The labelled pixels left out of every score, and which label values those are."""
        if self.kind == 'drivable':
            rule = 'label values other than 0 and 255'
        elif self.ignore_index is None:
            rule = 'none: the model has no ignore id'
        else:
            rule = f'label value {self.ignore_index} (the ignore id)'
        fraction = (self.pixels_not_scored / self.pixels_labelled
                    if self.pixels_labelled else 0.0)
        return {'pixels': self.pixels_not_scored, 'labelled': self.pixels_labelled,
                'fraction': round(fraction, 6), 'rule': rule}

    def _ego_as_miss(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Class ids with ego pixels (EGO_ID, no class) scored as a miss, not left out.

        The matrix has no ego column, so an ego pixel is counted as the first non-drivable
        class that is not its truth: a miss for the truth's class and never drivable (the
        drivable IoU is exact); that class gets the false positive.
        """
        ego = prediction == EGO_ID
        if not ego.any() or EGO_ID < self.num_classes:
            return prediction
        drivable = set(self.space['drivable_ids'])
        others = [c for c in range(self.num_classes) if c not in drivable][:2]
        if not others:
            return prediction           # every class is drivable: the matrix reports that
        prediction = prediction.copy()
        fallback = others[1] if len(others) > 1 else others[0]
        prediction[ego] = np.where(target[ego] == others[0], fallback, others[0])
        return prediction


def label_pixels(decoded, where: str) -> np.ndarray:
    """A decoded label message (conversions.DecodedImage) as an H×W uint8 array."""
    pixels, encoding = decoded.pixels, decoded.encoding
    if encoding != 'mono8':
        raise BagError(f'{where}: label images must be mono8 (one channel of class ids), '
                       f'got {encoding}')
    return np.ascontiguousarray(pixels)


class TopicLabels:
    """Labels from topics of the bag, paired with frames by (camera, header stamp)."""

    def __init__(self, specs: Sequence[str], bag_topics: Sequence[str],
                 cameras: Dict[str, str], other_cameras: Sequence[str] = ()):
        """``specs``: '[CAMERA=]TOPIC' strings; ``cameras``: namespace -> camera name of
        the evaluated cameras; ``other_cameras``: namespaces of the bag's other cameras."""
        self.topic_camera: Dict[str, str] = {}
        for spec in specs:
            camera, _, topic = spec.rpartition('=')
            found = [t for t in bag_topics if same_topic(t, topic)]
            if not found:
                raise BagError(f'label topic {topic} is not in the bag; its topics: '
                               f'{", ".join(sorted(bag_topics))}')
            other = _namespace_of(found[0], other_cameras)
            if not camera and other and not _namespace_of(found[0], cameras):
                raise BagError(f'label topic {found[0]} belongs to camera {other}, which is not '
                               'evaluated: add its image topic to --topics, or write '
                               f'--label-topic CAMERA={found[0]}')
            self.topic_camera[found[0]] = self._camera_of(found[0], camera, cameras)
        self._frames: Dict[str, OrderedDict] = {}   # camera -> stamp -> (prediction, where)
        self._labels: Dict[str, OrderedDict] = {}   # camera -> stamp -> (label, where)
        self.unmatched_labels = 0
        self.matched = 0

    @staticmethod
    def _camera_of(topic: str, given: str, cameras: Dict[str, str]) -> str:
        names = set(cameras.values())
        if given:
            if given not in names and given not in cameras:
                raise BagError(f'--label-topic {given}={topic}: no camera {given!r} is '
                               f'evaluated (cameras: {", ".join(sorted(names))})')
            return cameras.get(given, given)
        best = _namespace_of(topic, cameras)
        if best:
            return cameras[best]
        if len(names) == 1:
            return next(iter(names))
        raise BagError(f'label topic {topic} lies in no camera namespace '
                       f'({", ".join(sorted(cameras))}): write --label-topic CAMERA={topic}')

    def add_label(self, scorer: Scorer, topic: str, stamp: int, label: np.ndarray) -> None:
        camera = self.topic_camera[topic]
        where = f'label topic {topic} at stamp {stamp}'
        frame = self._frames.get(camera, {}).pop(stamp, None)
        if frame is not None:
            scorer.update(camera, frame[0], label, where)
            self.matched += 1
        else:
            self._remember(self._labels, camera, stamp, (label, where))

    def add_frame(self, scorer: Scorer, camera: str, stamp: int, prediction: np.ndarray) -> None:
        if camera not in set(self.topic_camera.values()):
            return
        label = self._labels.get(camera, {}).pop(stamp, None)
        if label is not None:
            scorer.update(camera, prediction, label[0], label[1])
            self.matched += 1
        else:
            self._remember(self._frames, camera, stamp, (prediction, ''))

    def _remember(self, store: Dict[str, OrderedDict], camera: str, stamp: int, item) -> None:
        pending = store.setdefault(camera, OrderedDict())
        pending[stamp] = item
        if len(pending) > _PENDING_LIMIT:
            pending.popitem(last=False)
            if store is self._labels:
                self.unmatched_labels += 1

    def finish(self) -> Dict[str, int]:
        """Counts of labels and frames that found no partner."""
        self.unmatched_labels += sum(len(p) for p in self._labels.values())
        return {'labels_matched': self.matched, 'labels_unmatched': self.unmatched_labels}


def _namespace_of(topic: str, namespaces) -> str:
    """The longest camera namespace that ``topic`` lies in ('' when none)."""
    tokens = [t for t in topic.split('/') if t]
    best = ''
    for namespace in namespaces:
        parts = namespace.split('/')
        if tokens[:len(parts)] == parts and len(namespace) > len(best):
            best = namespace
    return best


_DIGITS = re.compile(r'(\d+)$')


class FolderLabels:
    """Label files on disk, found per frame by stamp or by frame number."""

    def __init__(self, folder: str, match: str, cameras: Sequence[str]):
        if match not in MATCHES:
            raise InvalidValueError(f'--labels-match must be one of {", ".join(MATCHES)}, got '
                                    f'{match!r}')
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'label folder not found: {folder}')
        self.folder, self.match = folder, match
        self.files: Dict[Tuple[str, int], str] = {}      # (camera or '', key) -> path
        for camera in [''] + list(cameras):
            directory = os.path.join(folder, camera) if camera else folder
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                stem, suffix = os.path.splitext(name)
                if suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                key = self._key(stem, camera, cameras)
                if key is not None:
                    self.files[key] = os.path.join(directory, name)
        if not self.files:
            raise BagError(f'{folder}: no label images named by {match} '
                           f'({"<stamp ns>.png" if match == "stamp" else "frame0000.png"}) '
                           'in it or in its camera subfolders')
        self.used: set = set()

    def _key(self, stem: str, camera: str, cameras: Sequence[str]) -> Optional[Tuple[str, int]]:
        if self.match == 'stamp':
            if not camera:
                for name in cameras:      # <camera>_<stamp>.png
                    if stem.startswith(name + '_') and stem[len(name) + 1:].isdigit():
                        return name, int(stem[len(name) + 1:])
            return (camera, int(stem)) if stem.isdigit() else None
        digits = _DIGITS.search(stem)
        return (camera, int(digits.group(1))) if digits else None

    def lookup(self, camera: str, stamp: int, index: int) -> Optional[Tuple[np.ndarray, str]]:
        """(label, path) for a frame, or None when no file matches it."""
        key = stamp if self.match == 'stamp' else index
        path = self.files.get((camera, key)) or self.files.get(('', key))
        if path is None:
            return None
        label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if label is None:
            raise BagError(f'{path}: cannot read the label image')
        if label.ndim != 2 or label.dtype != np.uint8:
            raise BagError(f'{path}: label images must be 8-bit single-channel, got '
                           f'{label.dtype} with shape {label.shape}')
        self.used.add(path)
        return label, path

    def finish(self) -> Dict[str, int]:
        return {'labels_matched': len(self.used),
                'labels_unmatched': len(set(self.files.values()) - self.used)}


def camera_map(namespaces: Sequence[str]) -> Dict[str, str]:
    """namespace -> camera name for the evaluated cameras."""
    return {ns: ns.replace('/', '_') for ns in namespaces}


def metrics_of(scorer: Scorer) -> Dict[str, Dict]:
    """Per-camera metric summaries (NaN as None), keyed by camera name."""
    from seg_perception.evaluation.metrics import nan_to_none
    return {camera: nan_to_none(dict(matrix.summary(scorer.space['class_names'],
                                                    scorer.space['drivable_ids']),
                                     num_images=scorer.frames.get(camera, 0)))
            for camera, matrix in scorer.per_camera.items()}


__all__: List[str] = ['Scorer', 'TopicLabels', 'FolderLabels', 'resolve_kind', 'label_pixels',
                      'camera_map', 'metrics_of', 'KINDS', 'MATCHES', 'DRIVABLE_SPACE']
