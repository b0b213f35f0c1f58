"""segmentation_node's run-time model swap: ``model``, ``backend`` and ``precision`` set
while the node runs.

The set-parameters call waits until the new model segments (or is refused): a failed
load refuses the call with the reason and the old model keeps running. The load runs on
the executor thread of the parameter service; images keep arriving in their own callback
group and the worker keeps publishing with the old model. ROS-free halves (loading,
hand-over between two batches) are model_swap.py; this is the node's side: parameters,
publishers for the new model's outputs, the class map, the diagnostics' hardware id.
"""
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter

from seg_perception.ros import model_swap, outputs, params
from seg_perception.ros.diagnostics import backend_values
from seg_perception.ros.node_config import create_pipeline


class ModelSwap:
    """The model swap part of SegmentationNode (a mixin: it uses the node's config,
    worker, publishers and parameters)."""

    _swap_factory = staticmethod(create_pipeline)    # how a swap loads (tests replace it)

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        if self._updating_class_map:        # a swap's own class_map.* update
            return SetParametersResult(successful=True)
        refusal = self._refuse_parameters(parameters)
        if refusal:
            return SetParametersResult(successful=False, reason=refusal)
        changes = {p.name: p.value for p in parameters if p.name in params.SWAPPABLE}
        if not changes or self.worker is None:
            # use_sim_time; or nothing runs to swap (a lifecycle node reads the new
            # value at its next configure)
            return SetParametersResult(successful=True)
        try:
            self._swap_model(changes)
        except (params.ParameterError, model_swap.SwapRefused) as exc:
            self.get_logger().error(f'model swap refused: {exc}')
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _refuse_parameters(self, parameters) -> str:
        """Why these parameter changes cannot be taken now ('' = they can); read-only
        descriptors already refuse the plain node's other parameters."""
        return ''

    def _swap_model(self, changes: dict) -> None:
        """Load the model ``changes`` ask for and hand it to the worker between two
        batches; ParameterError or SwapRefused (nothing changed) when it cannot be used."""
        config = params.swapped_config(self.config, changes)
        pipeline = model_swap.load_pipeline(config, self._swap_factory, self.get_logger().info,
                                            check=lambda loaded: self._output_kinds(loaded.info))
        info = pipeline.info
        described = pipeline.describe()
        kinds = self._output_kinds(info)
        old_publishers = self.image_publishers
        publishers = {camera: self._image_publishers(camera, kinds, old_publishers[camera])
                      for camera in old_publishers}
        palette = outputs.palette_lut(info.class_names, info.palette)

        def on_swap():          # on the worker thread, between two batches
            self.pipeline, self.palette, self.image_publishers = pipeline, palette, publishers

        self._hand_over(pipeline, on_swap)
        for camera, old in old_publishers.items():
            for kind, publisher in old.items():
                if publishers[camera].get(kind) is not publisher:
                    self.destroy_publisher(publisher)
        self.config = config
        self._update_class_map(info, described['drivable_ids'])
        self._publish_label_info(info)
        self.backend_values = backend_values(described, self.config.model_path)
        if getattr(self, 'updater', None) is not None:
            self.updater.setHardwareID(self.backend_values.get('device', 'none'))
        self.get_logger().info(f'model swap: swapped to {config.model_path} '
                               f'[{self.backend_values["backend"]}]')

    def _hand_over(self, pipeline, on_swap) -> None:
        """Give the worker ``pipeline``; return once it segments with it."""
        if self.worker is None:
            on_swap()
            return
        processor = self.worker.processor
        done = processor.replace_pipeline(pipeline, on_swap)
        while not done.wait(0.1):
            if not self.worker.alive:   # a stopped worker takes nothing: swap here
                processor.hand_over()

    def _update_class_map(self, info, drivable_ids) -> None:
        """The read-only class_map.* parameters for a swapped-in model (rclpy's internal
        path with descriptors given is the one that may change read-only parameters)."""
        values = params.class_map_parameters(info.class_names, info.palette, drivable_ids,
                                             self.config.has_ego)
        descriptors = {name: ParameterDescriptor(read_only=self.read_only_parameters,
                                                 dynamic_typing=True,
                                                 description='class map of the model')
                       for name in values}
        self._updating_class_map = True     # past the lifecycle variant's lock
        try:
            self._set_parameters([Parameter(name, value=value)
                                  for name, value in values.items()], descriptors=descriptors)
        finally:
            self._updating_class_map = False
