"""segmentation_node: camera images in, class ids and drivable-area masks out.

Per camera (topics relative to the node namespace, remappable):
``<camera>/segmentation/labels`` (mono8 class ids), ``.../drivable_mask`` (mono8,
255 = drivable), optionally ``.../color`` (rgb8) and ``.../confidence`` (mono8),
and ``.../camera_info`` when a CameraInfo topic is configured; every output
carries its input image's header. The class map is published once on the latched
``segmentation/label_info`` (vision_msgs/LabelInfo) and mirrored in the read-only
parameters ``class_map.*``; with an ego-vehicle mask its pixels are label 255
``ego_vehicle``. A model's extra outputs go to ``.../<mask name>`` (mono8, 255 = on)
and, for the classes in ``publish_probabilities``, ``.../probability/<class>`` (mono8,
p × 255). The colour image is made only while someone subscribes to it.

``model``, ``backend`` and ``precision`` can be set while the node runs (the other
parameters are read-only): the set call loads the new model and answers once it is
segmenting, or refuses with the reason and the old model keeps running
(node_model_swap.py). Ground-plane outputs (ground points, the drivable grid) are made by
ground_node.py from CameraInfo and tf. Health per camera goes to /diagnostics
(node_diagnostics.py); node_process.py runs the node in its process.

Callbacks only keep the newest message per camera; one worker thread decodes,
segments (all cameras as one batch) and publishes (see worker.py). Parameters
are described in params.py and config/*.yaml.
"""
import functools
import time
from dataclasses import replace

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import LabelInfo, VisionClass

from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.ros import conversions, node_diagnostics, outputs, params
from seg_perception.ros.camera_health import CameraHealth
from seg_perception.ros.diagnostics import CameraStats, backend_values
from seg_perception.ros.frame_slots import Frame, FrameSlots, stamp_to_ns
from seg_perception.ros.ground_node import GroundPublishers
from seg_perception.ros.node_config import NodeConfig, QosConfig, create_pipeline
from seg_perception.ros.node_model_swap import ModelSwap
from seg_perception.ros.upstream import ReceiveBufferCheck, receive_buffer_ceiling
from seg_perception.ros.worker import SUPERSEDED, FrameProcessor, InferenceWorker

NODE_NAME = params.NODE_NAME
LABEL_INFO_TOPIC = 'segmentation/label_info'
CLASS_MAP = 'class_map'     # prefix of the class map parameters (class_map.names...)


class StartupError(SegPerceptionError):
    """The node cannot start: a parameter or the model is unusable (message says which)."""


def qos_profile(qos: QosConfig, latched: bool = False) -> QoSProfile:
    """Keep-last QoS from the validated settings."""
    reliability = ReliabilityPolicy.RELIABLE if qos.reliability == 'reliable' \
        else ReliabilityPolicy.BEST_EFFORT
    durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
                      reliability=reliability, durability=durability)


class SegmentationNode(ModelSwap, Node):
    """The ROS side: parameters, subscriptions, publishers, diagnostics."""

    # Read once at start-up: refuse changes that would not apply. The lifecycle variant
    # reads them at each configure instead (and guards them itself).
    read_only_parameters = True

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.worker = None
        self.ground = None
        self.pipeline = None
        self._activated = set()
        self._updating_class_map = False
        # One set-parameters callback: the model swap, and the lifecycle variant's lock.
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- start-up ----------------------------------------------------------------------
    def start(self, pipeline_factory=create_pipeline) -> None:
        """Read parameters, load the model, wire topics; StartupError on bad settings."""
        self.configure(pipeline_factory)
        self.activate()

    # -- phases: start() runs the first two, lifecycle_node.py each on its transition ----
    def configure(self, pipeline_factory=create_pipeline) -> None:
        """Read parameters, load the model, declare the class map; StartupError on bad ones."""
        try:
            self.config = self._read_parameters()
        except params.ParameterError as exc:
            raise StartupError(str(exc)) from None
        try:
            self.pipeline = pipeline_factory(self.config)
        except Exception as exc:  # noqa: BLE001 - any loader/backend failure ends start-up
            # The message names the cause: unreadable file, missing confidence output,
            # an unknown drivable class, an unavailable backend...
            raise StartupError(f'cannot use model {self.config.model_path}: {exc}') from None
        info = self.pipeline.info
        described = self.pipeline.describe()
        self.backend_values = backend_values(described, self.config.model_path)
        # The pipeline resolved (and checked) drivable_classes while loading.
        self._declare_class_map(info, described['drivable_ids'])
        self._warn_all_ego()

    def activate(self) -> None:
        """Subscriptions, publishers, the worker and diagnostics on (the configured model)."""
        before = self._entities()
        try:
            self._create_topics(self.pipeline.info)
            self._create_worker()
            self._create_diagnostics()
        finally:
            # Whatever activation made (the ground outputs' tf listener and grid timer
            # included; also when it failed half-way), not a list kept by hand:
            # deactivate() destroys exactly these.
            self._activated = self._entities() - before
        names = ', '.join(f'{c.name} <- {self.resolve_topic_name(c.topic)} ({c.transport})'
                          for c in self.config.cameras)
        values = self.backend_values
        why = f' ({values["precision_reason"]})' if 'precision_reason' in values else ''
        self.get_logger().info(f'segmenting {names} with {values["model"]} '
                               f'[{values["backend"]}, {values["precision"]}{why}]')

    def deactivate(self) -> None:
        """Everything activate() started goes off again; the model stays loaded."""
        if self.worker is not None:
            self.worker.stop()      # first: it publishes on what is destroyed below
            self.worker = None
        for entity, destroy in self._activated:
            destroy(entity)
        self._activated = set()
        self.ground = None
        # The diagnostic updater declares its period parameter each time it is made.
        period = getattr(getattr(self, 'updater', None), 'period_parameter', None)
        if period is not None and self.has_parameter(period):
            self.undeclare_parameter(period)

    def cleanup(self) -> None:
        """Release the model and its class map: the next configure() reads everything again.

        Only for a node whose parameters are not read-only (rclpy keeps those for good).
        """
        backend = getattr(self.pipeline, 'backend', None)
        self.pipeline = None
        if backend is not None:
            backend.close()
        for name in self.get_parameters_by_prefix(CLASS_MAP):
            self.undeclare_parameter(f'{CLASS_MAP}.{name}')

    def _entities(self) -> set:
        """This node's publishers, subscriptions and timers, each with what destroys it."""
        return ({(publisher, self.destroy_publisher) for publisher in self.publishers}
                | {(subscription, self.destroy_subscription)
                   for subscription in self.subscriptions}
                | {(timer, self.destroy_timer) for timer in self.timers})

    def _declare(self, specs):
        values = {}
        for spec in specs:
            if self.has_parameter(spec.name):   # declared by an earlier configure()
                values[spec.name] = self.get_parameter(spec.name).value
                continue
            descriptor = ParameterDescriptor(
                description=spec.description, additional_constraints=spec.constraints(),
                # (but a model swap: model, backend, precision)
                read_only=self.read_only_parameters and spec.name not in params.SWAPPABLE,
                dynamic_typing=spec.default is None or isinstance(spec.default, float))
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default,
                                                           descriptor).value
            except Exception as exc:  # noqa: BLE001 - rclpy raises several exception types
                raise params.ParameterError(f'parameter {spec.name!r}: {exc}') from None
        return values

    def _read_parameters(self) -> NodeConfig:
        values = self._declare_parameters()
        # rclpy ignores overrides nobody declares: name the likely typos.
        given = getattr(self, '_parameter_overrides', {})
        for name in params.unknown_parameters(list(given), list(values)):
            self.get_logger().warning(f'ignoring unknown parameter {name!r}')
        return params.build_config(values, resolve_topic=self.resolve_topic_name)

    def _declare_parameters(self) -> dict:
        """Declare the node's and each camera's parameters; their values by name."""
        values = self._declare(params.NODE_PARAMS)
        for name in params.camera_names(values):
            values.update(self._declare(params.camera_params(name)))
        return values

    def _declare_class_map(self, info, drivable_ids) -> None:
        self.palette = outputs.palette_lut(info.class_names, info.palette)
        descriptor = ParameterDescriptor(read_only=self.read_only_parameters,
                                         description='class map of the model')
        for name, value in params.class_map_parameters(info.class_names, info.palette,
                                                       drivable_ids, self.config.has_ego).items():
            self.declare_parameter(name, value, descriptor)

    def _warn_all_ego(self) -> None:
        for camera in self.config.cameras:
            if camera.ego is not None and camera.ego.covers_everything():
                self.get_logger().warning(
                    f'{camera.name}: ego mask {camera.ego.source} covers the whole image: '
                    'nothing this camera sees can be drivable')

    def _create_topics(self, info) -> None:
        cfg = self.config
        self.options = outputs.OutputOptions(cfg.publish_drivable, cfg.publish_color,
                                             cfg.publish_confidence, cfg.publish_probabilities)
        try:
            kinds = self._output_kinds(info)
        except InvalidValueError as exc:
            raise StartupError(f'cannot use model {cfg.model_path}: {exc}') from None
        out_qos = qos_profile(cfg.output_qos)
        self.image_publishers = {}
        self.camera_infos = {}
        self.info_publishers = {}
        # Images arrive in a group of their own: they keep coming while a model swap
        # (a set-parameters call, default group) loads the new model.
        self.intake_group = MutuallyExclusiveCallbackGroup()
        for camera in cfg.cameras:
            self.image_publishers[camera.name] = self._image_publishers(camera.name, kinds)
            msg_type = CompressedImage if camera.transport == 'compressed' else Image
            self.create_subscription(msg_type, camera.topic,
                                     functools.partial(self._on_image, camera.name),
                                     qos_profile(cfg.input_qos), callback_group=self.intake_group)
            if camera.camera_info_topic:
                self.info_publishers[camera.name] = self.create_publisher(
                    CameraInfo, outputs.output_topic(camera.name, outputs.CAMERA_INFO), out_qos)
                self.create_subscription(
                    CameraInfo, camera.camera_info_topic,
                    functools.partial(self.camera_infos.__setitem__, camera.name),
                    qos_profile(cfg.input_qos), callback_group=self.intake_group)
        self.label_info_publisher = self.create_publisher(
            LabelInfo, LABEL_INFO_TOPIC, qos_profile(QosConfig('reliable', 1), True))
        self._publish_label_info(info)
        self.ground = GroundPublishers(self, cfg, out_qos) if cfg.uses_ground else None

    def _output_kinds(self, info):
        """The image topic kinds for a model (InvalidValueError if it lacks an output)."""
        # (getattr: stand-in pipelines of the tests describe only the classes)
        params.check_probabilities(self.options.probabilities,
                                   getattr(info, 'probabilities', ()))
        return outputs.output_kinds(self.options, getattr(info, 'masks', ()))

    def _image_publishers(self, camera: str, kinds, reuse=None) -> dict:
        """kind -> Image publisher of ``camera``, taken from ``reuse`` where it has one."""
        reuse = reuse or {}
        out_qos = qos_profile(self.config.output_qos)
        return {kind: reuse.get(kind) or self.create_publisher(
            Image, outputs.output_topic(camera, kind), out_qos) for kind in kinds}

    def _publish_label_info(self, info) -> None:
        label_info = LabelInfo(threshold=0.0, class_map=[
            VisionClass(class_id=i, class_name=n)
            for i, n in outputs.label_info_classes(info.class_names, self.config.has_ego)])
        label_info.header.stamp = self.get_clock().now().to_msg()
        self.label_info_publisher.publish(label_info)

    def _create_worker(self) -> None:
        cfg = self.config
        names = [c.name for c in cfg.cameras]
        self.stats = {name: CameraStats(cfg.diagnostics_window_s) for name in names}
        # Checked at the network's input size: what the model sees, and a fixed cost
        # (stand-in pipelines without one get the default model's).
        size = tuple(self.pipeline.info.input_size)
        self.health = {name: CameraHealth(name, size, cfg.health) for name in names}
        self.raw_cameras = {c.name for c in cfg.cameras if c.transport == 'raw'}
        self.receive_buffer = ReceiveBufferCheck(receive_buffer_ceiling())
        self.slots = FrameSlots(names, cfg.max_batch)
        processor = FrameProcessor(
            self.pipeline, self.stats, self._publish,
            lambda: self.get_clock().now().nanoseconds,
            max_frame_age_ms=cfg.max_frame_age_ms, warn=self.get_logger().warning,
            ego_masks={c.name: c.ego for c in cfg.cameras if c.ego is not None},
            health=self.health)
        self.worker = InferenceWorker(self.slots, processor, self._on_worker_error)
        self.worker.start()

    def _create_diagnostics(self) -> None:
        self.updater = node_diagnostics.create_updater(self)

    # -- runtime -------------------------------------------------------------------------
    def _on_image(self, camera: str, msg) -> None:
        frame = Frame(camera, msg, stamp_to_ns(msg.header.stamp), time.perf_counter())
        self.stats[camera].record_input(frame.stamp_ns)
        if camera in self.raw_cameras:
            warning = self.receive_buffer.check(camera, len(msg.data))
            if warning:
                self.get_logger().warning(warning)
        if self.slots.put(frame) is not None:
            self.stats[camera].record_drop(SUPERSEDED)

    def _publish(self, frame: Frame, result) -> None:
        """Publish one result with the input's header (runs on the worker thread)."""
        header = frame.msg.header
        publishers = self.image_publishers[frame.camera]
        options = self.options
        if options.color:
            options = replace(options, color=self._color_wanted(frame.camera, result))
        for kind, pixels, encoding in outputs.result_images(result, options, self.palette):
            publishers[kind].publish(conversions.build_image(Image, pixels, encoding, header))
        camera_info = self.camera_infos.get(frame.camera)
        if camera_info is not None:
            self.info_publishers[frame.camera].publish(
                self._scaled_info(camera_info, header, result.labels.shape))
        if self.ground is not None:
            self.ground.on_result(frame, result, camera_info)

    def _color_wanted(self, camera: str, result) -> bool:
        """Whether to publish ``camera``'s colour image now: only while someone subscribes.

        The pipeline colourises the next batch only if some camera's colour image has a
        subscriber; a result made without colour is published without it.
        """
        subscribed = {name: publishers[outputs.COLOR].get_subscription_count() > 0
                      for name, publishers in self.image_publishers.items()}
        if hasattr(self.pipeline, 'want_color'):
            self.pipeline.want_color = any(subscribed.values())
            return subscribed[camera] and result.color is not None
        return subscribed[camera]      # stand-in pipelines: outputs.result_images colours

    @staticmethod
    def _scaled_info(info: CameraInfo, header, shape) -> CameraInfo:
        height, width = int(shape[0]), int(shape[1])
        out = CameraInfo(header=header, height=height, width=width,
                         distortion_model=info.distortion_model, d=info.d, r=info.r,
                         binning_x=info.binning_x, binning_y=info.binning_y)
        if info.width and info.height:
            out.k, out.p = outputs.scale_camera_info(info.width, info.height, info.k, info.p,
                                                     width, height)
        return out

    def _on_worker_error(self, exc: BaseException) -> None:
        if rclpy.ok():      # after Ctrl-C publishers fail by design: stay quiet
            self.get_logger().error(f'inference worker: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=5.0)

    def destroy_node(self):
        if self.worker is not None:
            self.worker.stop()
        return super().destroy_node()
