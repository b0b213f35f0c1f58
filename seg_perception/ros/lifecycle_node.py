"""segmentation_lifecycle_node: segmentation_node as a managed (lifecycle) node.

The same node and the same phases (node.py); each runs on its ROS 2 transition instead
of all at start-up:

    configure   read the parameters, load the model, declare the class map
    activate    subscriptions, publishers, the inference worker, diagnostics on
    deactivate  all of those off again; the model stays loaded
    cleanup     the model and the class map released
    shutdown    from any state: what is on goes off, the model is released

It starts unconfigured. Its parameters are declared at once and read at each configure:
while unconfigured ``ros2 param set`` changes them (a model path that made configure fail,
say); while configured a change is refused with the reason. A configure that fails
(bad parameter, unusable model) logs the reason as one line and leaves the node
unconfigured. While active, ``model``, ``backend`` and ``precision`` swap the model as
on the plain node. node_process.py runs it (entry_point.py picks this class); one of the
few modules that import rclpy (the import-linter ROS contract names them).
"""
from rclpy.lifecycle import LifecycleNodeMixin, TransitionCallbackReturn

from seg_perception.ros import params
from seg_perception.ros.node import CLASS_MAP, SegmentationNode, StartupError, create_pipeline

EXECUTABLE = 'segmentation_lifecycle_node'
# What configure reads (camera parameters are named per camera), and the class map it declares.
_NODE_PARAMETERS = frozenset(spec.name for spec in params.NODE_PARAMS)
_PREFIXES = ('cameras.', f'{CLASS_MAP}.')


def read_at_configure(name: str) -> bool:
    """Whether parameter ``name`` is one configure reads or declares."""
    return name in _NODE_PARAMETERS or name.startswith(_PREFIXES)


class LifecycleSegmentationNode(LifecycleNodeMixin, SegmentationNode):
    """SegmentationNode whose phases are run by lifecycle transitions."""

    read_only_parameters = False    # read at each configure; _refuse_parameters locks them

    def __init__(self, pipeline_factory=create_pipeline, **node_kwargs):
        SegmentationNode.__init__(self, **node_kwargs)
        LifecycleNodeMixin.__init__(self)
        self.pipeline_factory = pipeline_factory
        self.configured = False
        try:
            self._declare_parameters()      # now: settable before the first configure
        except params.ParameterError:
            pass                            # configure reports it (and fails)

    def start(self) -> None:
        """Nothing to load yet: the node waits, unconfigured, for its transitions."""
        self.get_logger().info(
            f'unconfigured: configure with ros2 lifecycle set {self.get_fully_qualified_name()} '
            'configure (or a lifecycle manager)')

    # -- transitions ---------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition('configure', self._configure)

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition('activate', self.activate)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        return self._transition('deactivate', self.deactivate)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return self._transition('cleanup', self._cleanup)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        return self._transition('shutdown', self._release)

    def on_error(self, state) -> TransitionCallbackReturn:
        """A transition raised: release everything; the node goes back to unconfigured."""
        return self._transition('error recovery', self._release)

    def _transition(self, name: str, phase) -> TransitionCallbackReturn:
        """Run ``phase``; a failure is logged as one line (rclpy would log none)."""
        try:
            phase()
        except StartupError as exc:
            self.get_logger().error(f'{name} failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - ERROR: on_error releases what was made
            self.get_logger().error(f'{name} failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        self.configure(self.pipeline_factory)
        self.configured = True
        self.get_logger().info(f'configured: model {self.config.model_path} loaded '
                               f'[{self.backend_values["backend"]}]')

    def _cleanup(self) -> None:
        self.cleanup()
        self.configured = False

    def _release(self) -> None:
        """Off and unloaded, from whichever state (each step is a no-op if not needed)."""
        self.deactivate()
        self._cleanup()

    def _refuse_parameters(self, parameters) -> str:
        """Changes to what configure reads wait until the node is unconfigured again;
        while active, model, backend and precision swap the model as on the plain node."""
        active = self.worker is not None
        locked = [p.name for p in parameters if self.configured and read_at_configure(p.name)
                  and not (active and p.name in params.SWAPPABLE)]
        if locked:
            return (f'{", ".join(locked)}: read at configure; deactivate and clean up the '
                    'node, then set it and configure again'
                    + (' (or swap the model while active)' if not active and
                       set(locked) <= set(params.SWAPPABLE) else ''))
        return ''
