"""What SegmentationPipeline.process() accepts, checked before any work is done.

A frame, ego mask or output size it cannot take raises InputError naming the frame and
the problem; nothing has run yet, so the pipeline stays usable for the next call.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError

# encoding -> (channels, OpenCV conversion to RGB or None)
ENCODINGS: Dict[str, Tuple[int, Optional[int]]] = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
}


class InputError(InvalidValueError):
    """A frame the pipeline cannot take: wrong dtype, shape, channels or encoding."""


def check_frames(frames, encodings) -> Tuple[List[np.ndarray], List[str]]:
    """The frames as a list (H×W×1 mono squeezed) and one encoding per frame."""
    if isinstance(frames, np.ndarray) or not isinstance(frames, (list, tuple)):
        raise InputError(f'frames must be a list of numpy arrays (one per camera), got '
                         f'{type(frames).__name__}')
    if encodings is None or isinstance(encodings, str):
        encodings = [encodings or 'rgb8'] * len(frames)
    encodings = list(encodings)
    if len(encodings) != len(frames):
        raise InputError(f'{len(encodings)} encodings for {len(frames)} frames')
    checked = []
    for index, (frame, encoding) in enumerate(zip(frames, encodings)):
        where = f'frame {index}'
        if encoding not in ENCODINGS:
            raise InputError(f'{where}: unknown encoding {encoding!r}; supported: '
                             f'{", ".join(ENCODINGS)}')
        if not isinstance(frame, np.ndarray):
            raise InputError(f'{where}: expected a numpy array, got {type(frame).__name__}')
        if frame.dtype != np.uint8:
            raise InputError(f'{where}: dtype {frame.dtype}, expected uint8 for {encoding}')
        channels = ENCODINGS[encoding][0]
        if frame.ndim == 3 and frame.shape[2] == 1 and channels == 1:
            frame = frame[:, :, 0]
        if frame.ndim != (2 if channels == 1 else 3) or \
                (channels > 1 and frame.shape[2] != channels):
            raise InputError(f'{where}: shape {frame.shape} does not fit {encoding} '
                             f'(expected H×W' + (f'×{channels}' if channels > 1 else '')
                             + ')')
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise InputError(f'{where}: zero-size image {frame.shape}')
        checked.append(frame)
    return checked, encodings


def check_ego_masks(ego_masks, count: int) -> List[Optional[np.ndarray]]:
    """One ego mask or None per frame."""
    if ego_masks is None:
        return [None] * count
    ego_masks = list(ego_masks)
    if len(ego_masks) != count:
        raise InputError(f'{len(ego_masks)} ego masks for {count} frames')
    for index, mask in enumerate(ego_masks):
        if mask is not None and (not isinstance(mask, np.ndarray) or mask.ndim != 2
                                 or mask.size == 0):
            raise InputError(f'frame {index}: an ego mask must be a non-empty H×W array, '
                             f'got {getattr(mask, "shape", type(mask).__name__)}')
    return ego_masks


def check_output_sizes(output_sizes, frames) -> List[Tuple[int, int]]:
    """One (height, width) per frame: the given one, or the frame's own."""
    if output_sizes is None:
        return [frame.shape[:2] for frame in frames]
    output_sizes = list(output_sizes)
    if len(output_sizes) != len(frames):
        raise InputError(f'{len(output_sizes)} output sizes for {len(frames)} frames')
    checked = []
    for index, (size, frame) in enumerate(zip(output_sizes, frames)):
        if size is None:
            checked.append(frame.shape[:2])
            continue
        try:
            height, width = (int(v) for v in size)
        except (TypeError, ValueError):
            height = width = 0
        if height < 1 or width < 1:
            raise InputError(f'frame {index}: an output size must be (height, width) of '
                             f'at least 1 pixel, got {size!r}')
        checked.append((height, width))
    return checked
