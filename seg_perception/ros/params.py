"""The segmentation node's parameters: one table, one validation step, no rclpy.

``NODE_PARAMS`` and ``camera_params(name)`` describe every parameter (default,
description, allowed values); the node declares them in one loop and hands the
values to :func:`build_config`, which checks them all and returns a
:class:`~.node_config.NodeConfig` or raises :class:`ParameterError` naming the parameter.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from seg_perception import model_info
from seg_perception.choices import (BACKEND_ALIASES, BACKENDS, OUTPUT_RESOLUTIONS,
                                    RUN_PRECISIONS)
from seg_perception.ground.ego import EgoMask
from seg_perception.ground.grid import FUSION_MODES, GridGeometry
from seg_perception.ground.projection import GroundPlane
from seg_perception.labels import EGO_ID, EGO_NAME
from seg_perception.ros.camera_health import HealthThresholds
from seg_perception.ros.node_config import (CameraConfig, GridConfig, GroundConfig, NodeConfig,
                                            QosConfig)
from seg_perception.ros import outputs
from seg_perception.errors import InvalidValueError
from seg_perception.ros.param_spec import ParameterError, ParamSpec, checked_values, expect_type
# Part of this module's interface for the node: the parameters it knows and those it does not.
from seg_perception.ros.param_spec import unknown_parameters  # noqa: F401

NODE_NAME = 'segmentation_node'
BACKENDS = BACKENDS + tuple(BACKEND_ALIASES)
TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = ('best_effort', 'reliable')
# The parameters that can change while the node runs (a model swap); the others are read-only.
SWAPPABLE = ('model', 'backend', 'precision')
# Camera names become topic and parameter name tokens.
_CAMERA_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')


NODE_PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec('cameras', ['camera'], 'Camera names; each has parameters '
              'cameras.<name>.topic, cameras.<name>.transport, cameras.<name>.camera_info'),
    ParamSpec('model', '', 'Exported ONNX model (a checkpoint for backend torch); empty = '
              'the model shipped with the package'),
    ParamSpec('backend', 'auto', 'Inference backend', BACKENDS),
    ParamSpec('precision', 'auto', 'Inference precision; auto = the INT8 form beside the '
              'model on a CPU with VNNI, fp16 on TensorRT, else fp32 (fp16/int8: TensorRT)',
              RUN_PRECISIONS),
    ParamSpec('engine_cache_dir', '', 'Directory for built TensorRT engines; empty = default'),
    ParamSpec('threads', 0, 'CPU threads for inference; 0 = backend default', min_value=0),
    ParamSpec('output_resolution', 'camera', 'Outputs at camera or network resolution',
              OUTPUT_RESOLUTIONS),
    ParamSpec('publish_drivable', True, 'Publish <camera>/segmentation/drivable_mask'),
    ParamSpec('publish_color', False, 'Publish <camera>/segmentation/color (rgb8)'),
    ParamSpec('publish_confidence', False, 'Publish <camera>/segmentation/confidence (mono8)'),
    ParamSpec('publish_probabilities', None, 'Classes whose probability (mono8, p x 255) '
              'goes to <camera>/segmentation/probability/<class>; each must be among the '
              "model's probability outputs. Unset or empty = none"),
    ParamSpec('drivable_classes', None, 'Drivable classes (names or ids) replacing the '
              "model's; unset or empty = the model's"),
    ParamSpec('max_frame_age_ms', 500.0, 'Drop frames whose header stamp is older than this '
              'when inference starts; 0 = keep all', min_value=0),
    ParamSpec('max_batch', 0, 'Cameras segmented in one batch at most, served round-robin; '
              '0 = every camera with a new frame (smaller batches: lower latency, on a CPU '
              'at little cost in total rate)', min_value=0),
    ParamSpec('qos.reliability', 'best_effort', 'Image subscriptions: reliability',
              RELIABILITIES),
    ParamSpec('qos.depth', 1, 'Image subscriptions: history depth', min_value=1),
    ParamSpec('output_qos.reliability', 'reliable', 'Output topics: reliability', RELIABILITIES),
    ParamSpec('output_qos.depth', 1, 'Output topics: history depth', min_value=1),
    ParamSpec('diagnostics.min_rate_hz', 5.0, 'Per camera: WARN below this output rate, '
              'ERROR at zero; 0 = no rate check', min_value=0),
    ParamSpec('diagnostics.latency_budget_ms', 200.0, 'Per camera: WARN when the p95 '
              'latency (header stamp to publish) exceeds it, ERROR when the p50 does',
              min_value=1),
    ParamSpec('diagnostics.window_s', 5.0, 'Window for rates and latency percentiles',
              min_value=0.5),
    ParamSpec('health.persist_s', 1.0, 'Camera health: a condition is reported (WARN) once '
              'it has held on every frame this long (s)', min_value=0),
    ParamSpec('health.error_s', 5.0, 'Camera health: ERROR once a condition has held this '
              'long (s); >= health.persist_s', min_value=0),
    ParamSpec('health.dark_luminance', 20.0, 'Camera health: dark when the brightest 1 % of '
              'pixels are below this luminance (0-255); 0 = no check', min_value=0),
    ParamSpec('health.saturated_fraction', 0.25, 'Camera health: over-exposed when more than '
              'this share of the pixels is saturated (0-1); 0 = no check', min_value=0),
    ParamSpec('health.blocked_fraction', 0.4, 'Camera health: blocked when one low-texture '
              'region staying in place covers this share of the image (0-1); 0 = no check',
              min_value=0),
    ParamSpec('health.blocked_texture', 1.0, 'Camera health: a 12x12 block (network pixels) '
              'is low-texture when its grey-level standard deviation is below this',
              min_value=0),
    ParamSpec('health.frozen_difference', 0.05, 'Camera health: frozen when the mean '
              'absolute grey-level difference to the previous frame is at most this',
              min_value=0),
    ParamSpec('health.stamp_min_step_ms', 0.0, 'Camera health: stamps frozen or out of order '
              'when a header stamp is not later than the previous one by more than this (ms)',
              min_value=0),
    ParamSpec('publish_ground_points', False, 'Publish <camera>/segmentation/ground_points '
              '(organised PointCloud2 in ground.frame, pixel-aligned with the labels) while '
              'someone subscribes; needs the camera\'s CameraInfo and tf'),
    ParamSpec('ground.frame', 'base_footprint', 'Frame whose plane z = ground.height is '
              'the ground (tf: camera optical frame -> this frame)'),
    ParamSpec('ground.height', 0.0, 'Height of the ground plane in ground.frame (m)'),
    ParamSpec('ground.max_range_m', 40.0, 'Ground points and grid cells farther than this '
              'from the point below the camera are unknown (m)', min_value=0.1),
    ParamSpec('ground.transform_tolerance_s', 0.5, 'A transform older than the image by '
              'more than this is stale: that camera gives no ground outputs', min_value=0),
    ParamSpec('grid.rate_hz', 5.0, 'Publish segmentation/drivable_grid (OccupancyGrid, all '
              'cameras fused) at most this often, when new labels came; 0 = no grid',
              min_value=0),
    ParamSpec('grid.frame', 'odom', 'Frame the grid is fixed in (tf: ground.frame -> this); '
              'ground.frame when that transform is not available'),
    ParamSpec('grid.size_m', 40.0, 'Width and height of the square grid, centred on the '
              'vehicle (m)', min_value=0.01),
    ParamSpec('grid.resolution_m', 0.1, 'Grid cell size (m)', min_value=0.001),
    ParamSpec('grid.fusion', 'log_odds', 'log_odds: evidence accumulates and decays over '
              'time; none: each update replaces the grid', FUSION_MODES),
    ParamSpec('grid.decay_s', 2.0, 'log_odds: time constant of the decay towards unknown (s)',
              min_value=0.01),
)


def camera_params(name: str) -> Tuple[ParamSpec, ...]:
    """The parameters of one camera."""
    prefix = f'cameras.{name}.'
    return (
        ParamSpec(prefix + 'topic', '', 'Image topic; empty = <name>/image_raw '
                  '(+ /compressed with compressed transport)'),
        ParamSpec(prefix + 'transport', 'raw', 'sensor_msgs Image or CompressedImage',
                  TRANSPORTS),
        ParamSpec(prefix + 'camera_info', '', 'Optional CameraInfo topic, republished as '
                  '<name>/segmentation/camera_info scaled to the outputs, and the intrinsics '
                  'of the ground outputs; empty = none'),
        ParamSpec(prefix + 'ego_mask', '', 'PNG of the ego vehicle in this camera (non-zero '
                  '= ego, any resolution); its pixels get label 255 and are never drivable'),
        ParamSpec(prefix + 'ego_polygon', None, 'The ego vehicle as a polygon: flat list of '
                  'x, y pairs in normalised image coordinates (0..1, floats)'),
    )


def camera_names(values: Dict[str, Any]) -> List[str]:
    """The validated ``cameras`` list."""
    spec = NODE_PARAMS[0]
    names = list(expect_type(spec, values.get('cameras', spec.default)))
    if not names:
        raise ParameterError("parameter 'cameras': needs at least one camera name")
    for name in names:
        if not _CAMERA_NAME.match(name):
            raise ParameterError(f"parameter 'cameras': {name!r} is not a valid camera name "
                                 '(letters, digits and _, starting with a letter)')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ParameterError(f"parameter 'cameras': {', '.join(duplicates)} listed twice")
    return names


def expand_topic_name(topic: str, namespace: str = '/', node_name: str = NODE_NAME) -> str:
    """ROS 2's expansion of a topic name, without remapping: a relative name is in the
    node's namespace, ``~`` is the node's own name."""
    if topic.startswith('/'):
        return topic
    prefix = namespace.rstrip('/')
    if topic == '~' or topic.startswith('~/'):
        return f'{prefix}/{node_name}{topic[1:]}'
    return f'{prefix}/{topic}'


def _check_distinct_topics(cameras: Sequence[CameraConfig],
                           resolve_topic: Callable[[str], str]) -> None:
    """One image topic per camera, compared as resolved (``/x`` and ``x`` can be one)."""
    by_topic: Dict[str, List[CameraConfig]] = {}
    for camera in cameras:
        try:
            resolved = resolve_topic(camera.topic)
        except (ValueError, RuntimeError):       # rclpy raises RCLError, a RuntimeError
            raise ParameterError(f"parameter 'cameras.{camera.name}.topic': {camera.topic!r} "
                                 'is not a valid topic name') from None
        by_topic.setdefault(resolved, []).append(camera)
    clashes = []
    for resolved, group in sorted(by_topic.items()):
        if len(group) > 1:
            written = sorted({c.topic for c in group})
            given = f' (given as {", ".join(written)})' if written != [resolved] else ''
            clashes.append(f'cameras {", ".join(c.name for c in group)} all subscribe to '
                           f'{resolved}{given}')
    if clashes:
        raise ParameterError('; '.join(clashes))


def resolve_model_path(path: str) -> str:
    """The model file to load: ``path``, or the shipped default when empty."""
    try:
        return model_info.resolve_model_path(path)
    except model_info.ModelNotFoundError as exc:
        if exc.path is None:
            raise ParameterError("parameter 'model' is empty and this install ships no default "
                                 'model: set it to an ONNX file made by `seg-perception '
                                 'export`') from None
        raise ParameterError(f"parameter 'model': file not found: {exc.path}") from None


def _drivable_classes(value: Any) -> Optional[Tuple[Any, ...]]:
    if value is None or value == '' or (isinstance(value, (list, tuple)) and not value):
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(',') if v.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or \
            not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ParameterError("parameter 'drivable_classes': expected class names or ids, "
                             f'got {value!r}')
    return tuple(value)


def _class_names(parameter: str, value: Any) -> Tuple[str, ...]:
    """A list of class names (or one comma-separated string); unset or empty: none."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(',') if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ParameterError(f'parameter {parameter!r}: expected class names, got {value!r}')
    return tuple(value)


def _ego_mask(name: str, cam: Dict[str, Any]) -> Optional[EgoMask]:
    """The camera's ego mask from ``ego_mask`` (a PNG) or ``ego_polygon``, if either is set."""
    prefix = f'cameras.{name}.'
    path, polygon = cam[prefix + 'ego_mask'].strip(), cam[prefix + 'ego_polygon']
    if path and polygon:
        raise ParameterError(f'camera {name}: set {prefix}ego_mask or {prefix}ego_polygon, '
                             'not both')
    try:
        if path:
            return EgoMask.from_png(path)
        if polygon is None or (isinstance(polygon, (list, tuple)) and not polygon):
            return None
        return EgoMask.from_polygon(polygon, 'polygon')
    except InvalidValueError as exc:
        raise ParameterError(f"parameter '{prefix}{'ego_mask' if path else 'ego_polygon'}': "
                             f'{exc}') from None


def _ground_configs(node: Dict[str, Any]) -> Tuple[GroundConfig, GridConfig]:
    """The ground and grid settings; ParameterError naming the parameter group if unusable."""
    for key in ('ground.frame', 'grid.frame'):
        if not node[key].strip() or node[key].strip().startswith('/'):
            raise ParameterError(f'parameter {key!r}: expected a tf frame id (no leading /), '
                                 f'got {node[key]!r}')
    try:
        plane = GroundPlane(node['ground.height'], node['ground.max_range_m'])
    except InvalidValueError as exc:
        raise ParameterError(f"parameters 'ground.*': {exc}") from None
    try:
        geometry = GridGeometry(node['grid.size_m'], node['grid.resolution_m'])
    except InvalidValueError as exc:
        raise ParameterError(f"parameters 'grid.size_m', 'grid.resolution_m': {exc}") from None
    ground = GroundConfig(node['ground.frame'].strip(), plane,
                          node['ground.transform_tolerance_s'], node['publish_ground_points'])
    grid = GridConfig(node['grid.rate_hz'], node['grid.frame'].strip(), geometry,
                      node['grid.fusion'], node['grid.decay_s'])
    return ground, grid


def _health_thresholds(node: Dict[str, Any]) -> HealthThresholds:
    """The camera-health thresholds; ParameterError naming the parameter if unusable."""
    for key, top in (('health.dark_luminance', 255.0), ('health.saturated_fraction', 1.0),
                     ('health.blocked_fraction', 1.0)):
        if node[key] > top:
            raise ParameterError(f'parameter {key!r}: {node[key]!r} is above the maximum '
                                 f'{top:g}')
    if node['health.error_s'] < node['health.persist_s']:
        raise ParameterError(f"parameter 'health.error_s': {node['health.error_s']!r} is "
                             f"below health.persist_s ({node['health.persist_s']!r})")
    return HealthThresholds(**{key[len('health.'):]: node[key] for key in node
                               if key.startswith('health.')})


def build_config(values: Dict[str, Any], *, check_model_file: bool = True,
                 resolve_topic: Optional[Callable[[str], str]] = None) -> NodeConfig:
    """Validate parameter values (name -> value, as declared) into a NodeConfig.

    ``resolve_topic`` turns a topic as written into the name it subscribes to (the
    node passes rclpy's, which also applies remappings); default
    :func:`expand_topic_name` in the root namespace.
    """
    names = camera_names(values)
    node = checked_values(NODE_PARAMS[1:], values)
    cameras = []
    for name in names:
        cam = checked_values(camera_params(name), values)
        prefix = f'cameras.{name}.'
        transport = cam[prefix + 'transport']
        topic = cam[prefix + 'topic'].strip() or f'{name}/image_raw' + \
            ('/compressed' if transport == 'compressed' else '')
        cameras.append(CameraConfig(name, topic, transport, cam[prefix + 'camera_info'].strip(),
                                    _ego_mask(name, cam)))
    _check_distinct_topics(cameras, resolve_topic or expand_topic_name)
    model = resolve_model_path(node['model']) if check_model_file else node['model']
    ground, grid = _ground_configs(node)
    return NodeConfig(
        cameras=tuple(cameras), model_path=model, backend=node['backend'],
        precision=node['precision'], engine_cache_dir=node['engine_cache_dir'],
        threads=node['threads'], output_resolution=node['output_resolution'],
        publish_drivable=node['publish_drivable'], publish_color=node['publish_color'],
        publish_confidence=node['publish_confidence'],
        drivable_classes=_drivable_classes(values.get('drivable_classes')),
        max_frame_age_ms=node['max_frame_age_ms'], max_batch=node['max_batch'],
        input_qos=QosConfig(node['qos.reliability'], node['qos.depth']),
        output_qos=QosConfig(node['output_qos.reliability'], node['output_qos.depth']),
        min_rate_hz=node['diagnostics.min_rate_hz'],
        latency_budget_ms=node['diagnostics.latency_budget_ms'],
        diagnostics_window_s=node['diagnostics.window_s'], ground=ground, grid=grid,
        health=_health_thresholds(node),
        publish_probabilities=_class_names('publish_probabilities',
                                           values.get('publish_probabilities')))


def swapped_config(config: NodeConfig, changes: Dict[str, Any]) -> NodeConfig:
    """``config`` with the model parameters in ``changes`` (name -> value: model, backend,
    precision) checked and applied; ParameterError naming the parameter."""
    others = sorted(set(changes) - set(SWAPPABLE))
    if others:
        raise ParameterError(f'parameter {others[0]!r} is read-only while the node runs')
    specs = [spec for spec in NODE_PARAMS if spec.name in changes]
    checked = checked_values(specs, changes)
    updates = {}
    if 'model' in checked:
        updates['model_path'] = resolve_model_path(checked['model'])
    for name in ('backend', 'precision'):
        if name in checked:
            updates[name] = checked[name]
    return replace(config, **updates)


def check_probabilities(wanted: Sequence[str], available: Sequence[str]) -> None:
    """ParameterError when a class in ``wanted`` is not among the model's probabilities."""
    try:
        outputs.check_probabilities(wanted, available, "parameter 'publish_probabilities'")
    except InvalidValueError as exc:
        raise ParameterError(str(exc)) from None


def class_map_parameters(class_names: Sequence[str], palette: Sequence[Sequence[int]],
                         drivable_ids: Sequence[int], ego: bool = False) -> Dict[str, Any]:
    """Read-only parameters describing the class map (colours as '#rrggbb'); with ``ego``
    (a camera has an ego mask) also the ego vehicle's label id and name."""
    values = {
        'class_map.names': [str(n) for n in class_names],
        'class_map.colors': ['#%02x%02x%02x' % tuple(int(v) for v in c) for c in palette],
        'class_map.drivable_ids': [int(i) for i in drivable_ids],
    }
    if ego:
        values.update({'class_map.ego_id': EGO_ID, 'class_map.ego_name': EGO_NAME})
    return values
