"""Test-side ROS client for test_ros_live.py: publishers, collecting subscribers, frames.

rclpy is imported inside RosClient only, so importing this module needs no ROS.
"""
import time

import cv2
import numpy as np

# ColourNet classes (runtime_models): what a flat frame half is segmented as.
RED, BLUE = (255, 0, 0), (0, 0, 255)          # road (0, drivable), sky (2)
ROAD, SKY, CAR, BUILDING = 0, 2, 3, 4


def halves_frame(height, width, kind):
    """A frame with a flat top and bottom half, in the layout ``kind`` publishes.

    Colour kinds: blue sky over red road; mono8: white building over black car.
    rgb8 is RGB; bgr8, jpeg and png are BGR (what cv2.imencode expects).
    """
    if kind == 'mono8':
        frame = np.zeros((height, width), np.uint8)
        frame[:height // 2] = 255
        return frame
    frame = np.empty((height, width, 3), np.uint8)
    frame[:height // 2], frame[height // 2:] = BLUE, RED
    return frame if kind == 'rgb8' else np.ascontiguousarray(frame[..., ::-1])


def expected_halves(kind):
    """(top class, bottom class) for halves_frame(kind)."""
    return (BUILDING, CAR) if kind == 'mono8' else (SKY, ROAD)


def wait_until(predicate, timeout, interval=0.1, alive=None):
    """Poll ``predicate`` until truthy (returned) or timeout / ``alive()`` false (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            return None
        time.sleep(interval)
    return None


class _Publisher:
    def __init__(self, client, msg_type, topic):
        self.client = client
        self.publisher = client.node.create_publisher(msg_type, topic, 10)

    def header(self, frame_id, stamp):
        from std_msgs.msg import Header
        header = Header(frame_id=frame_id)
        if stamp is None:
            header.stamp = self.client.node.get_clock().now().to_msg()
        else:
            header.stamp.sec, header.stamp.nanosec = int(stamp), int(round(stamp % 1 * 1e9))
        return header


class ImagePublisher(_Publisher):
    """Publishes frames as raw Image (rgb8/bgr8/mono8) or CompressedImage (jpeg/png)."""

    def __init__(self, client, topic, kind):
        from sensor_msgs.msg import CompressedImage, Image
        self.kind = kind
        self.compressed = kind in ('jpeg', 'png')
        super().__init__(client, CompressedImage if self.compressed else Image, topic)

    def send(self, pixels, frame_id='camera', stamp=None):
        """Publish; return the header stamp as (sec, nanosec) (always truthy)."""
        header = self.header(frame_id, stamp)
        if self.compressed:
            ok, encoded = cv2.imencode('.jpg' if self.kind == 'jpeg' else '.png', pixels)
            assert ok
            self._send_compressed(header, encoded.tobytes())
        else:
            self.send_raw(pixels, header=header)
        return header.stamp.sec, header.stamp.nanosec

    def send_raw(self, pixels, step=None, header=None):
        from sensor_msgs.msg import Image
        pixels = np.ascontiguousarray(pixels)
        msg = Image(header=header or self.header('camera', None), height=pixels.shape[0],
                    width=pixels.shape[1], encoding=self.kind, is_bigendian=0,
                    step=step if step is not None else pixels[0].nbytes)
        msg.data.frombytes(pixels.tobytes())
        self.publisher.publish(msg)

    def send_bytes(self, data):
        self._send_compressed(self.header('camera', None), data)

    def _send_compressed(self, header, data):
        from sensor_msgs.msg import CompressedImage
        msg = CompressedImage(header=header, format=self.kind)
        msg.data.frombytes(data)
        self.publisher.publish(msg)


class CameraInfoPublisher(_Publisher):
    def __init__(self, client, topic):
        from sensor_msgs.msg import CameraInfo
        super().__init__(client, CameraInfo, topic)

    def send(self, width, height):
        from sensor_msgs.msg import CameraInfo
        focal = float(width)
        msg = CameraInfo(header=self.header('camera', None), width=width, height=height)
        msg.k = [focal, 0.0, width / 2, 0.0, focal, height / 2, 0.0, 0.0, 1.0]
        msg.p = [focal, 0.0, width / 2, 0.0, 0.0, focal, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        self.publisher.publish(msg)
        return True


class ClockPublisher(_Publisher):
    def __init__(self, client):
        from rosgraph_msgs.msg import Clock
        super().__init__(client, Clock, '/clock')

    def send(self, seconds):
        from rosgraph_msgs.msg import Clock
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = int(seconds), int(round(seconds % 1 * 1e9))
        self.publisher.publish(msg)


class RosClient:
    """An rclpy node in its own context and domain, spun by a background thread."""

    def __init__(self, domain_id):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from seg_perception.ros.background_spin import BackgroundSpin
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('live_test_client', context=self.context)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        self.spinner = BackgroundSpin(executor)

    @staticmethod
    def _type(name):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from vision_msgs.msg import LabelInfo
        return {'Image': Image, 'CompressedImage': CompressedImage, 'CameraInfo': CameraInfo,
                'DiagnosticArray': DiagnosticArray, 'LabelInfo': LabelInfo}[name]

    def subscribe(self, type_name, topic, latched=False):
        """A list that fills with the messages received on ``topic``."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        qos = QoSProfile(depth=1 if latched else 10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                         else DurabilityPolicy.VOLATILE)
        received = []
        self.node.create_subscription(self._type(type_name), topic, received.append, qos)
        return received

    def image_publisher(self, topic, kind):
        return ImagePublisher(self, topic, kind)

    def camera_info_publisher(self, topic):
        return CameraInfoPublisher(self, topic)

    def clock_publisher(self):
        return ClockPublisher(self)

    def get_parameters(self, node_name, names, timeout=15.0):
        """Values of another node's parameters, through its get_parameters service."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        client = self.node.create_client(GetParameters, f'{node_name}/get_parameters')
        assert client.wait_for_service(timeout), f'{node_name}/get_parameters not available'
        future = client.call_async(GetParameters.Request(names=list(names)))
        assert wait_until(future.done, timeout), 'get_parameters timed out'
        return [list(v) if isinstance(v, (list, tuple)) or hasattr(v, 'tolist') else v
                for v in (parameter_value_to_python(p) for p in future.result().values)]

    def close(self):
        import rclpy
        self.spinner.stop()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
