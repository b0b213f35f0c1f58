"""The rclpy side of the ground outputs: tf2, ground-point clouds, the drivable grid.

Besides node.py (and its managed variant lifecycle_node.py), the one module that imports
rclpy and ROS message packages (the import-linter ROS contract allows exactly these):
node.py keeps the segmentation topics, this one the ground outputs, so neither grows past
one job. Made when the node activates; its subscriptions, publishers and timer are among
what the node's deactivate() destroys. The logic is in
ground_state.py and ground_outputs.py, without rclpy.

Topics: ``<camera>/segmentation/ground_points`` (sensor_msgs/PointCloud2, organised,
pixel-aligned with the labels, x y z float32 in ``ground.frame``, NaN where no ground;
only while someone subscribes) and ``segmentation/drivable_grid`` (nav_msgs/OccupancyGrid
in ``grid.frame``, all cameras fused, at most ``grid.rate_hz``).
"""
import array

from nav_msgs.msg import OccupancyGrid
from rclpy.time import Time
from sensor_msgs.msg import PointCloud2, PointField
from tf2_ros import ExtrapolationException, TransformException
from tf2_ros.buffer import Buffer
from tf2_ros.transform_listener import TransformListener

from seg_perception.ros import ground_outputs, outputs
from seg_perception.ros.ground_state import GroundOutputs, TransformUnavailable, check_age
from seg_perception.ros.frame_slots import stamp_to_ns

GROUND_POINTS = 'ground_points'
GRID_TOPIC = 'segmentation/drivable_grid'


class GroundPublishers:
    """tf2 listener, ground-point publishers and the grid timer of one node."""

    def __init__(self, node, config, qos):
        self.node = node
        self.config = config
        self.buffer = Buffer()
        self.listener = TransformListener(self.buffer, node)
        self.outputs = GroundOutputs(config, self.lookup, node.get_logger().warning)
        self.point_publishers = {}
        if config.ground.publish_points:
            self.point_publishers = {
                c.name: node.create_publisher(
                    PointCloud2, outputs.output_topic(c.name, GROUND_POINTS), qos)
                for c in config.cameras if c.camera_info_topic}
        self.grid_publisher = None
        if config.grid.rate_hz > 0:
            self.grid_publisher = node.create_publisher(OccupancyGrid, GRID_TOPIC, qos)
            self.timer = node.create_timer(1.0 / config.grid.rate_hz, self.publish_grid)

    def lookup(self, target: str, source: str, stamp_ns: int):
        """4×4 transform of ``source`` points into ``target`` at the stamp; the newest one
        when tf has none that recent yet, unless it is stale."""
        what = f'{source} → {target}'
        try:
            found = self.buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns))
        except ExtrapolationException:
            try:
                found = self.buffer.lookup_transform(target, source, Time())
            except TransformException as exc:
                raise TransformUnavailable(f'no transform {what}: {exc}') from None
            check_age(stamp_to_ns(found.header.stamp), stamp_ns,
                      self.config.ground.transform_tolerance_s, what)
        except TransformException as exc:
            raise TransformUnavailable(f'no transform {what}: {exc}') from None
        return ground_outputs.transform_matrix(found.transform.translation,
                                               found.transform.rotation)

    def on_result(self, frame, result, camera_info) -> None:
        """Ground points (if wanted) and grid evidence of one published result."""
        publisher = self.point_publishers.get(frame.camera)
        want_points = publisher is not None and publisher.get_subscription_count() > 0
        header = frame.msg.header
        points = self.outputs.on_result(frame.camera, camera_info, header.frame_id,
                                        frame.stamp_ns, result, want_points)
        if points is not None:
            publisher.publish(self._cloud(points, header.stamp))

    def _cloud(self, points, stamp) -> PointCloud2:
        layout = ground_outputs.ground_cloud(points)
        msg = PointCloud2(height=layout.height, width=layout.width, is_bigendian=False,
                          point_step=layout.point_step, row_step=layout.row_step,
                          is_dense=False, fields=[
                              PointField(name=name, offset=offset, count=1,
                                         datatype=ground_outputs.FLOAT32)
                              for name, offset in ground_outputs.POINT_FIELDS])
        msg.header.stamp = stamp
        msg.header.frame_id = self.config.ground.frame
        data = array.array('B')
        data.frombytes(layout.data)
        msg.data = data
        return msg

    def publish_grid(self) -> None:
        """Fuse what came since the last tick and publish it (nothing new: nothing sent)."""
        fused = self.outputs.fuse()
        if fused is None:
            return
        frame, stamp_ns = fused
        layout = ground_outputs.grid_layout(self.outputs.grid)
        msg = OccupancyGrid()
        msg.header.frame_id = frame
        msg.header.stamp = msg.info.map_load_time = Time(nanoseconds=stamp_ns).to_msg()
        msg.info.resolution = layout.resolution
        msg.info.width, msg.info.height = layout.width, layout.height
        msg.info.origin.position.x, msg.info.origin.position.y = layout.origin
        msg.info.origin.orientation.w = 1.0
        data = array.array('b')
        data.frombytes(layout.data.tobytes())
        msg.data = data
        self.grid_publisher.publish(msg)
