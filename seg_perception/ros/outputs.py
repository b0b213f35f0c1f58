"""What the node publishes for one result, as plain data (no rclpy).

The node turns these into messages with :func:`conversions.build_image` and its
own message classes; bag tools can do the same with rosbags classes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError
from seg_perception.labels import EGO_ID, EGO_NAME, LabelSpace

LABELS = 'labels'
DRIVABLE = 'drivable_mask'
COLOR = 'color'
CONFIDENCE = 'confidence'
CAMERA_INFO = 'camera_info'
PROBABILITY = 'probability'
# Topic kinds of the node (and ground_node.py's ground_points): a model's mask cannot take one.
RESERVED_KINDS = (LABELS, DRIVABLE, COLOR, CONFIDENCE, CAMERA_INFO, PROBABILITY, 'ground_points')


def output_topic(camera: str, kind: str) -> str:
    """``<camera>/segmentation/<kind>``, relative to the node's namespace (remappable)."""
    return f'{camera}/segmentation/{kind}'


def mask_kind(name: str) -> str:
    """The topic kind of a model's extra mask ``name`` (ModelInfo.masks)."""
    return _topic_token(name)


def probability_kind(class_name: str) -> str:
    """The topic kind of one class's probability image: ``probability/<class>``."""
    return f'{PROBABILITY}/{_topic_token(class_name)}'


def _topic_token(name: str) -> str:
    # A ROS name token holds letters, digits and underscores ('traffic light' -> traffic_light).
    return re.sub(r'[^A-Za-z0-9_]', '_', str(name))


def check_probabilities(wanted: Sequence[str], available: Sequence[str], field: str) -> None:
    """InvalidValueError naming ``field`` when a class in ``wanted`` is not among the
    model's probability outputs ``available`` (the node's parameter, bag-eval's option)."""
    missing = [name for name in wanted if name not in available]
    if missing:
        has = ', '.join(available) if available else 'none'
        raise InvalidValueError(
            f"{field}: {', '.join(missing)} not among the model's probability outputs "
            f'(it has: {has}); `seg-perception export --probabilities` or the import '
            "contract's probabilities: add them")


@dataclass(frozen=True)
class OutputOptions:
    """Which optional images to publish."""

    drivable: bool = True
    color: bool = False
    confidence: bool = False
    # Classes whose probability image to publish (each among the model's probabilities).
    probabilities: Tuple[str, ...] = ()


def result_images(result, options: OutputOptions,
                  palette: Optional[np.ndarray] = None) -> List[Tuple[str, np.ndarray, str]]:
    """(topic kind, pixels, encoding) for each image to publish from one SegResult.

    ``palette``: a 256×3 lookup table used when colour is wanted but the pipeline
    did not colourise. Confidence is skipped when the model has no confidence output.
    Every mask of the result is published (kind: the mask's name), and the probability
    of each class in ``options.probabilities`` that the result has (kind:
    :func:`probability_kind`).
    """
    images = [(LABELS, result.labels, 'mono8')]
    if options.drivable:
        images.append((DRIVABLE, result.drivable_mask, 'mono8'))
    if options.color:
        color = getattr(result, 'color', None)
        if color is None:
            if palette is None:
                raise InvalidValueError('publish_color needs the result colour image or a palette')
            # applyColorMap with a user table beats palette[labels] by far (benchmarks/DESIGN.md).
            color = cv2.applyColorMap(np.ascontiguousarray(result.labels),
                                      palette.reshape(256, 1, 3))
        images.append((COLOR, color, 'rgb8'))
    if options.confidence and getattr(result, 'confidence', None) is not None:
        images.append((CONFIDENCE, result.confidence, 'mono8'))
    for name, pixels in (getattr(result, 'masks', None) or {}).items():
        images.append((mask_kind(name), pixels, 'mono8'))
    probabilities = getattr(result, 'probabilities', None) or {}
    for name in options.probabilities:
        if name in probabilities:
            images.append((probability_kind(name), probabilities[name], 'mono8'))
    return images


def output_kinds(options: OutputOptions, masks: Sequence[str] = ()) -> List[str]:
    """The topic kinds :func:`result_images` can give for a model with these ``masks``
    (the publishers to create); InvalidValueError for a mask named like another output."""
    clashes = [name for name in masks if mask_kind(name) in RESERVED_KINDS]
    if clashes:
        raise InvalidValueError(f'model mask {", ".join(clashes)}: the name of another '
                                f'output topic ({", ".join(RESERVED_KINDS)}); rename the mask')
    kinds = [LABELS] + [kind for kind, wanted in (
        (DRIVABLE, options.drivable), (COLOR, options.color),
        (CONFIDENCE, options.confidence)) if wanted]
    return kinds + [mask_kind(name) for name in masks] + \
        [probability_kind(name) for name in options.probabilities]


def palette_lut(class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> np.ndarray:
    """256×3 uint8 lookup table class id -> RGB."""
    space = LabelSpace('model', tuple(class_names), tuple(tuple(c) for c in palette), ())
    return space.palette_array()


def label_info_classes(class_names: Sequence[str], ego: bool = False) -> List[Tuple[int, str]]:
    """(class id, name) pairs for vision_msgs/LabelInfo.class_map; with ``ego`` (a camera
    has an ego-vehicle mask) also EGO_ID, which LabelInfo's convention reads as unlabelled."""
    classes = [(i, str(name)) for i, name in enumerate(class_names)]
    if ego:
        classes.append((EGO_ID, EGO_NAME))
    return classes


def scale_camera_info(width: int, height: int, k: Sequence[float], p: Sequence[float],
                      out_width: int, out_height: int) -> Tuple[List[float], List[float]]:
    """K (3×3) and P (3×4), row-major, for the image resized to out_width × out_height."""
    sx, sy = out_width / float(width), out_height / float(height)
    k = [float(v) for v in k]
    p = [float(v) for v in p]
    k[0], k[1], k[2] = k[0] * sx, k[1] * sx, k[2] * sx
    k[4], k[5] = k[4] * sy, k[5] * sy
    p[0], p[1], p[2], p[3] = p[0] * sx, p[1] * sx, p[2] * sx, p[3] * sx
    p[5], p[6], p[7] = p[5] * sy, p[6] * sy, p[7] * sy
    return k, p
