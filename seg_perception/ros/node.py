"""segmentation_node: camera images in, class ids and drivable-area masks out.

Per camera (topics relative to the node namespace, remappable):
``<camera>/segmentation/labels`` (mono8 class ids), ``.../drivable_mask`` (mono8,
255 = drivable), optionally ``.../color`` (rgb8) and ``.../confidence`` (mono8),
and ``.../camera_info`` when a CameraInfo topic is configured; every output
carries its input image's header. The class map is published once on the latched
``segmentation/label_info`` (vision_msgs/LabelInfo) and mirrored in the read-only
parameters ``class_map.*``; with an ego-vehicle mask its pixels are label 255
``ego_vehicle``. Ground-plane outputs (ground points, the drivable grid) are made by
ground_node.py from CameraInfo and tf. Health per camera goes to /diagnostics.

Callbacks only keep the newest message per camera; one worker thread decodes,
segments (all cameras as one batch) and publishes (see worker.py). Parameters
are described in params.py and config/*.yaml.
"""
import functools
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import LabelInfo, VisionClass

from seg_perception.errors import SegPerceptionError
from seg_perception.ros import conversions, outputs, params
from seg_perception.ros.camera_health import CameraHealth
from seg_perception.ros.diagnostics import (ERROR, OK, WARN, CameraStats, camera_health, health,
                                            key_values)
from seg_perception.ros.ground_node import GroundPublishers
from seg_perception.signals import StopSignals
from seg_perception.ros.upstream import ReceiveBufferCheck, receive_buffer_ceiling
from seg_perception.ros.worker import (SUPERSEDED, Frame, FrameProcessor, FrameSlots,
                                       InferenceWorker, stamp_to_ns)

NODE_NAME = params.NODE_NAME
LABEL_INFO_TOPIC = 'segmentation/label_info'
# DiagnosticStatus.level is a bytes field in Humble: map our ints to its constants.
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class StartupError(SegPerceptionError):
    """The node cannot start: a parameter or the model is unusable (message says which)."""


def create_pipeline(config: params.NodeConfig):
    """The inference pipeline for ``config`` (imported late: it loads the backends)."""
    from seg_perception.runtime.pipeline import SegmentationPipeline
    return SegmentationPipeline(**config.pipeline_kwargs())


def qos_profile(qos: params.QosConfig, latched: bool = False) -> QoSProfile:
    """Keep-last QoS from the validated settings."""
    reliability = ReliabilityPolicy.RELIABLE if qos.reliability == 'reliable' \
        else ReliabilityPolicy.BEST_EFFORT
    durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
                      reliability=reliability, durability=durability)


class SegmentationNode(Node):
    """The ROS side: parameters, subscriptions, publishers, diagnostics."""

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.worker = None
        self.ground = None

    # -- start-up ----------------------------------------------------------------------
    def start(self, pipeline_factory=create_pipeline) -> None:
        """Read parameters, load the model, wire topics; StartupError on bad settings."""
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
        self.backend_values = self._backend_values(described)
        # The pipeline resolved (and checked) drivable_classes while loading.
        self._declare_class_map(info, described['drivable_ids'])
        self._warn_all_ego()
        self._create_topics(info)
        self._create_worker()
        self._create_diagnostics()
        names = ', '.join(f'{c.name} <- {self.resolve_topic_name(c.topic)} ({c.transport})'
                          for c in self.config.cameras)
        values = self.backend_values
        why = f' ({values["precision_reason"]})' if 'precision_reason' in values else ''
        self.get_logger().info(f'segmenting {names} with {values["model"]} '
                               f'[{values["backend"]}, {values["precision"]}{why}]')

    def _declare(self, specs):
        values = {}
        for spec in specs:
            descriptor = ParameterDescriptor(
                description=spec.description, additional_constraints=spec.constraints(),
                read_only=True,     # read once at start-up: refuse changes that would not apply
                dynamic_typing=spec.default is None or isinstance(spec.default, float))
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default,
                                                           descriptor).value
            except Exception as exc:  # noqa: BLE001 - rclpy raises several exception types
                raise params.ParameterError(f'parameter {spec.name!r}: {exc}') from None
        return values

    def _read_parameters(self) -> params.NodeConfig:
        values = self._declare(params.NODE_PARAMS)
        for name in params.camera_names(values):
            values.update(self._declare(params.camera_params(name)))
        # rclpy ignores overrides nobody declares: name the likely typos.
        given = getattr(self, '_parameter_overrides', {})
        for name in params.unknown_parameters(list(given), list(values)):
            self.get_logger().warning(f'ignoring unknown parameter {name!r}')
        return params.build_config(values, resolve_topic=self.resolve_topic_name)

    def _declare_class_map(self, info, drivable_ids) -> None:
        self.palette = outputs.palette_lut(info.class_names, info.palette)
        read_only = ParameterDescriptor(read_only=True, description='class map of the model')
        for name, value in params.class_map_parameters(info.class_names, info.palette,
                                                       drivable_ids, self.config.has_ego).items():
            self.declare_parameter(name, value, read_only)

    def _warn_all_ego(self) -> None:
        for camera in self.config.cameras:
            if camera.ego is not None and camera.ego.covers_everything():
                self.get_logger().warning(
                    f'{camera.name}: ego mask {camera.ego.source} covers the whole image: '
                    'nothing this camera sees can be drivable')

    def _create_topics(self, info) -> None:
        cfg = self.config
        self.options = outputs.OutputOptions(cfg.publish_drivable, cfg.publish_color,
                                             cfg.publish_confidence)
        out_qos = qos_profile(cfg.output_qos)
        kinds = [outputs.LABELS] + [kind for kind, wanted in (
            (outputs.DRIVABLE, cfg.publish_drivable), (outputs.COLOR, cfg.publish_color),
            (outputs.CONFIDENCE, cfg.publish_confidence)) if wanted]
        self.image_publishers = {}
        self.camera_infos = {}
        self.info_publishers = {}
        for camera in cfg.cameras:
            self.image_publishers[camera.name] = {
                kind: self.create_publisher(Image, outputs.output_topic(camera.name, kind),
                                            out_qos) for kind in kinds}
            msg_type = CompressedImage if camera.transport == 'compressed' else Image
            self.create_subscription(msg_type, camera.topic,
                                     functools.partial(self._on_image, camera.name),
                                     qos_profile(cfg.input_qos))
            if camera.camera_info_topic:
                self.info_publishers[camera.name] = self.create_publisher(
                    CameraInfo, outputs.output_topic(camera.name, outputs.CAMERA_INFO), out_qos)
                self.create_subscription(
                    CameraInfo, camera.camera_info_topic,
                    functools.partial(self.camera_infos.__setitem__, camera.name),
                    qos_profile(cfg.input_qos))
        self.label_info_publisher = self.create_publisher(
            LabelInfo, LABEL_INFO_TOPIC, qos_profile(params.QosConfig('reliable', 1), True))
        label_info = LabelInfo(threshold=0.0, class_map=[
            VisionClass(class_id=i, class_name=n)
            for i, n in outputs.label_info_classes(info.class_names, cfg.has_ego)])
        label_info.header.stamp = self.get_clock().now().to_msg()
        self.label_info_publisher.publish(label_info)
        self.ground = GroundPublishers(self, cfg, out_qos) if cfg.uses_ground else None

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
        self.slots = FrameSlots(names)
        processor = FrameProcessor(
            self.pipeline, self.stats, self._publish,
            lambda: self.get_clock().now().nanoseconds,
            max_frame_age_ms=cfg.max_frame_age_ms, warn=self.get_logger().warning,
            ego_masks={c.name: c.ego for c in cfg.cameras if c.ego is not None},
            health=self.health)
        self.worker = InferenceWorker(self.slots, processor, self._on_worker_error)
        self.worker.start()

    def _create_diagnostics(self) -> None:
        import diagnostic_updater
        self.updater = diagnostic_updater.Updater(self)
        # The updater times itself on the node clock: on sim time /diagnostics would stop
        # with /clock (a bag paused or played to its end) and keep counts from before the
        # last frames. Its rates and latencies are wall-clock ones: so is its period.
        self.destroy_timer(self.updater.timer)
        self.updater.timer = self.create_timer(self.updater.period, self.updater.update,
                                               clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.updater.setHardwareID(self.backend_values.get('device', 'none'))
        for camera in self.config.cameras:
            self.updater.add(f'{camera.name} segmentation',
                             functools.partial(self._diagnose, camera.name))
            self.updater.add(f'{camera.name} camera',
                             functools.partial(self._diagnose_camera, camera.name))

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
        for kind, pixels, encoding in outputs.result_images(result, self.options, self.palette):
            publishers[kind].publish(conversions.build_image(Image, pixels, encoding, header))
        camera_info = self.camera_infos.get(frame.camera)
        if camera_info is not None:
            self.info_publishers[frame.camera].publish(
                self._scaled_info(camera_info, header, result.labels.shape))
        if self.ground is not None:
            self.ground.on_result(frame, result, camera_info)

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

    def _backend_values(self, described: dict) -> dict:
        """Backend name, precision, device and model (from describe()), for logs and diagnostics."""
        # 'auto' may run another file than the model named (its INT8 form): say which.
        values = {'backend': str(described['name']), 'precision': str(described['precision']),
                  'model': str(described.get('model') or self.config.model_path)}
        if described.get('precision_reason'):
            values['precision_reason'] = str(described['precision_reason'])
        if described['device']:
            values['device'] = str(described['device'])
        return values

    def _diagnose(self, camera: str, stat):
        snapshot = self.stats[camera].snapshot()
        level, message = health(snapshot, self.config.min_rate_hz,
                                self.config.latency_budget_ms)
        if self.worker is not None and not self.worker.alive:
            level, message = ERROR, 'inference thread stopped'
        stat.summary(_LEVELS[level], message)
        for key, value in key_values(snapshot, self.backend_values):
            stat.add(key, value)
        if self.ground is not None:
            stat.add('ground', self.ground.outputs.status(camera))
        return stat

    def _diagnose_camera(self, camera: str, stat):
        state = self.health[camera]
        level, message = camera_health(state.report(), self.stats[camera].received)
        stat.summary(_LEVELS[level], message)
        stat.add('stamps_out_of_order', str(state.stamps_out_of_order))
        return stat

    def destroy_node(self):
        if self.worker is not None:
            self.worker.stop()
        return super().destroy_node()


def spin_until_stopped(node: Node, stop: StopSignals, period_s: float = 0.1) -> None:
    """Spin the node until a stop signal arrives or something shuts rclpy down."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while stop.received is None and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=period_s)
    finally:
        executor.remove_node(node)
        executor.shutdown()


def run(stop: StopSignals, args=None) -> int:
    """Run the node until ``stop`` is signalled; return the exit code.

    A signal that arrived before (during the imports) ends it before the model
    is loaded.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    try:
        node = SegmentationNode()
        if stop.received is None:
            node.start()
            spin_until_stopped(node, stop)
        if stop.received:
            node.get_logger().info(f'{stop.received}: shutting down')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        code = 1
        print(f'[{NODE_NAME}] cannot start: {exc}', file=sys.stderr, flush=True)
    finally:
        # Further signals (Ctrl-C in a terminal reaches a node under ros2 launch
        # twice: the group's and launch's forwarded one) only set the flag again.
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
