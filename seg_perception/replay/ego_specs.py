"""``--ego-mask [CAMERA=]PATH`` and ``--ego-polygon CAMERA=x1,y1,...`` of bag-eval and demo.

A bare PATH applies to every camera; CAMERA= names one by its name (``cam_front``) or
namespace (``camera/front``). A camera given twice keeps the last one. The masks
themselves are :class:`seg_perception.ground.ego.EgoMask`.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

from seg_perception.errors import InvalidValueError
from seg_perception.ground.ego import EgoMask


def ego_masks(mask_specs: Sequence[str], polygon_specs: Sequence[str],
              cameras) -> Dict[str, EgoMask]:
    """Camera name -> EgoMask for the run's ``cameras`` (cameras.Camera objects);
    InvalidValueError naming the option for an unknown camera or a bad polygon, EgoMaskError
    for an unreadable mask file."""
    names = {}
    for camera in cameras:
        names[camera.name] = names[camera.namespace] = camera.name
    masks: Dict[str, EgoMask] = {}
    for spec in mask_specs or ():
        if '=' not in spec or os.path.isfile(spec):
            mask = EgoMask.from_png(spec)
            masks.update({camera.name: mask for camera in cameras})
            continue
        camera, _, path = spec.partition('=')
        name = _camera(names, camera, f'--ego-mask {spec}')      # before reading the file
        masks[name] = EgoMask.from_png(path)
    for spec in polygon_specs or ():
        camera, equals, values = spec.partition('=')
        where = f'--ego-polygon {spec}'
        if not equals:
            raise InvalidValueError(f'{where}: expected CAMERA=x1,y1,x2,y2,... (normalised '
                                    'image coordinates)')
        name = _camera(names, camera, where)
        try:
            numbers = [float(value) for value in values.split(',')]
        except ValueError:
            raise InvalidValueError(f'{where}: the values must be numbers separated by '
                                    'commas') from None
        masks[name] = EgoMask.from_polygon(numbers, source=where)
    return masks


def _camera(names: Dict[str, str], camera: str, where: str) -> str:
    found = names.get(camera.strip('/'))
    if found is None:
        known = ', '.join(sorted(set(names.values()))) or 'none'
        raise InvalidValueError(f'{where}: no camera {camera!r} in this run; cameras: {known}')
    return found
