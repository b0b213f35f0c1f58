"""Which of a bag's topics are cameras, what each is called, and what was measured on it."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from seg_perception.replay.bag_io import (CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES,
                                          BagError, camera_namespace, same_topic)

LOG = logging.getLogger(__name__)
# Image topics with one of these tokens are ground truth or an earlier run's output.
SKIP_TOKENS = ('ground_truth', 'segmentation')


@dataclass
class Camera:
    """One evaluated image topic and what was measured on it."""

    topic: str
    msgtype: str
    namespace: str
    expected: int
    info_topic: Optional[str] = None
    frames: int = 0
    skipped: int = 0
    skip_reasons: List[str] = field(default_factory=list)
    records: List[Dict[str, float]] = field(default_factory=list)
    overlay_at: set = field(default_factory=set)
    overlay_notes: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.namespace.replace('/', '_')


def camera_topics(source, exclude: Sequence[str] = ()) -> List[str]:
    """The bag's image topics that are cameras: not ``exclude``d (label topics), no
    ground truth and no earlier segmentation output (SKIP_TOKENS)."""
    return sorted(t for t, s in source.topics.items() if s.msgtype in IMAGE_TYPES
                  and not any(same_topic(t, e) for e in exclude)
                  and not set(SKIP_TOKENS) & set(t.split('/')))


def plan_cameras(source, topics: Optional[Sequence[str]], exclude: Sequence[str],
                 overlays: int) -> List[Camera]:
    """The cameras to evaluate: ``topics`` checked against the bag, or its image topics."""
    available = source.topics
    image_topics = sorted(t for t, s in available.items() if s.msgtype in IMAGE_TYPES)
    chosen = []
    if topics:
        for wanted in topics:
            found = [t for t in available if same_topic(t, wanted)]
            if not found:
                raise BagError(f'topic {wanted} is not in {source.path}; its image topics: '
                               f'{", ".join(image_topics) or "none"}')
            summary = available[found[0]]
            if summary.msgtype not in IMAGE_TYPES:
                raise BagError(f'topic {found[0]} holds {summary.msgtype or "unknown"} messages; '
                               f'bag-eval reads {IMAGE} and {COMPRESSED_IMAGE}')
            chosen.append(found[0])
    else:
        chosen = camera_topics(source, exclude)
        if not chosen:
            found = ", ".join(f"{t} ({s.msgtype})" for t, s in available.items()) or 'none'
            if source.damage:       # the damage, not the missing cameras, is the news
                raise BagError(f'{source.path} is damaged ({source.damage}); the part before '
                               f'the damage holds no camera image topics, only: {found}')
            raise BagError(f'{source.path} has no camera image topics ({IMAGE} or '
                           f'{COMPRESSED_IMAGE}); its topics: {found}')
    by_namespace: Dict[str, str] = {}
    for topic in chosen:
        namespace = camera_namespace(topic)
        other = by_namespace.get(namespace)
        if other is None:
            by_namespace[namespace] = topic
        elif topics:
            raise BagError(f'topics {other} and {topic} are the same camera {namespace!r}; '
                           'evaluate one of them')
        elif available[topic].msgtype == IMAGE:    # raw and compressed of one camera: raw
            LOG.info('%s and %s are one camera; evaluating %s', other, topic, topic)
            by_namespace[namespace] = topic
    cameras = []
    for namespace, topic in sorted(by_namespace.items()):
        count = available[topic].count
        camera = Camera(topic, available[topic].msgtype, namespace, count)
        info = [t for t, s in available.items() if s.msgtype == CAMERA_INFO
                and same_topic(t, namespace + '/camera_info')]
        camera.info_topic = info[0] if info else None
        if overlays > 0 and count > 0:
            camera.overlay_at = {int(round(i)) for i in
                                 np.linspace(0, count - 1, min(overlays, count))}
        cameras.append(camera)
    return cameras
