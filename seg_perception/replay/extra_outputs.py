"""A model's extra outputs in bag-eval: its binary masks and chosen class probabilities.

A model may carry extra uint8 heads (ModelInfo.masks: 255 = on; ModelInfo.probabilities:
p × 255, see :mod:`seg_perception.runtime.pipeline`). bag-eval writes every mask, per
camera, to ``/<camera>/segmentation/<mask name>`` (mono8), and the probability of the
classes asked for (``--probabilities``) to ``/<camera>/segmentation/probability/<class>``
(mono8), each with the input frame's header. The report lists the topics, their message
counts and, for a mask, the fraction of pixels on per camera.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from seg_perception.replay.bag_io import output_topic
from seg_perception.ros.outputs import check_probabilities, mask_kind, probability_kind

MASKS = 'masks'
PROBABILITIES = 'probabilities'


def chosen_probabilities(info, asked: Sequence[str]) -> List[str]:
    """The classes of ``asked`` (names, spaced or comma-separated), checked against the
    probability classes of the model; InvalidValueError naming the unknown ones."""
    names = [name.strip() for text in asked for name in str(text).split(',') if name.strip()]
    check_probabilities(names, list(info.probabilities), '--probabilities')
    return list(dict.fromkeys(names))


class ExtraOutputs:
    """Which masks and probabilities bag-eval writes, and counts of what it wrote."""

    def __init__(self, mask_names: Sequence[str], probabilities: Sequence[str]):
        self.mask_names, self.probabilities = list(mask_names), list(probabilities)
        # (what, name) -> camera namespace -> [messages, pixels on, pixels]
        self.counts: Dict[tuple, Dict[str, List[int]]] = {}

    def count(self, namespace: str, result) -> None:
        """Count one result's extra outputs as written (ros.outputs.result_images gives
        the images themselves)."""
        for what, name, pixels in self._planes(result):
            count = self.counts.setdefault((what, name), {}).setdefault(namespace, [0, 0, 0])
            count[0] += 1
            if what == MASKS:
                count[1] += int(np.count_nonzero(pixels == 255))
                count[2] += int(pixels.size)

    def _planes(self, result):
        for name in self.mask_names:
            if name in result.masks:
                yield MASKS, name, result.masks[name]
        for name in self.probabilities:
            if name in result.probabilities:
                yield PROBABILITIES, name, result.probabilities[name]

    def topics(self, namespace: str) -> List[str]:
        """The extra output topics of one camera."""
        return ([output_topic(namespace, mask_kind(n)) for n in self.mask_names] +
                [output_topic(namespace, probability_kind(n)) for n in self.probabilities])

    def summary(self, namespaces: Dict[str, str]) -> Dict:
        """metrics.json's ``extra_outputs``: per mask and per probability class, per camera
        (``namespaces``: camera name -> namespace) its topic, messages and (masks) the
        fraction of pixels on."""
        out: Dict[str, Dict] = {MASKS: {}, PROBABILITIES: {}}
        for what, names, kind_of in ((MASKS, self.mask_names, mask_kind),
                                     (PROBABILITIES, self.probabilities,
                                      probability_kind)):
            for name in names:
                per_camera = {}
                for camera, namespace in namespaces.items():
                    messages, on, pixels = self.counts.get((what, name), {}).get(
                        namespace, [0, 0, 0])
                    entry = {'topic': output_topic(namespace, kind_of(name)),
                             'messages': messages}
                    if what == MASKS:
                        entry['on_fraction'] = round(on / pixels, 6) if pixels else None
                    per_camera[camera] = entry
                out[what][name] = per_camera
        return out
