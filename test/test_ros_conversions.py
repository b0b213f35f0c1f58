"""Image/CompressedImage <-> numpy conversions (seg_perception.ros.conversions).

Runs without ROS: messages are plain objects and rosbags' Humble message classes
(serialised and deserialised as CDR). Where rclpy is importable the same checks run
on rclpy's sensor_msgs, and cv_bridge must agree with the package's own conversion.
"""
import types

import cv2
import numpy as np
import pytest

from seg_perception.ros import conversions as conv
from seg_perception.ros.conversions import ConversionError

from conftest import require_ros

RNG = np.random.default_rng(7)
H, W = 6, 8


def make_rgb(height=H, width=W, pairs=False):
    """A random RGB image; with ``pairs`` each horizontal pixel pair shares one colour."""
    rgb = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if pairs:
        rgb[:, 1::2] = rgb[:, 0::2]
    return rgb


def raw_msg(pixels, encoding, pad=0, bigendian=False):
    """A duck-typed Image: rows of ``pixels`` bytes followed by ``pad`` junk bytes."""
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8)
    junk = np.full((height, pad), 0xAB, np.uint8)
    data = np.concatenate([rows, junk], axis=1).tobytes()
    return types.SimpleNamespace(height=height, width=width, encoding=encoding,
                                 step=rows.shape[1] + pad, is_bigendian=int(bigendian),
                                 data=data)


def bt601_limited_rgb(y, u, v):
    """Reference YUV (BT.601, video range) -> RGB, as OpenCV's YUV422 codes define it."""
    y = 1.164 * (y.astype(float) - 16)
    u = u.astype(float) - 128
    v = v.astype(float) - 128
    rgb = np.stack([y + 1.596 * v, y - 0.813 * v - 0.391 * u, y + 2.018 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def yuv422_bytes(yuv_y, yuv_u, yuv_v, layout):
    """Pack per-pixel Y and per-pair U/V into UYVY ('yuv422') or YUY2 byte order."""
    height, width = yuv_y.shape
    packed = np.zeros((height, width * 2), np.uint8)
    if layout == 'yuv422':
        packed[:, 0::4], packed[:, 1::4] = yuv_u, yuv_y[:, 0::2]
        packed[:, 2::4], packed[:, 3::4] = yuv_v, yuv_y[:, 1::2]
    else:
        packed[:, 0::4], packed[:, 1::4] = yuv_y[:, 0::2], yuv_u
        packed[:, 2::4], packed[:, 3::4] = yuv_y[:, 1::2], yuv_v
    return packed.reshape(height, width, 2)


# -- pass-through and simple colour encodings ------------------------------------------
@pytest.mark.parametrize('pad', [0, 3])
def test_rgb8_bgr8_mono8_pass_through_with_encoding_tag(pad):
    rgb = make_rgb()
    out = conv.decode_image(raw_msg(rgb, 'rgb8', pad), use_cv_bridge=False)
    assert out.encoding == 'rgb8' and np.array_equal(out.pixels, rgb)
    out = conv.decode_image(raw_msg(rgb[..., ::-1], 'bgr8', pad), use_cv_bridge=False)
    assert out.encoding == 'bgr8' and np.array_equal(conv.to_rgb(*out), rgb)
    grey = rgb[..., 1]
    out = conv.decode_image(raw_msg(grey, 'mono8', pad), use_cv_bridge=False)
    assert out.encoding == 'mono8' and out.pixels.shape == (H, W)
    assert np.array_equal(out.pixels, grey)
    assert np.array_equal(conv.to_rgb(*out), np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize('encoding,order', [('rgba8', [0, 1, 2]), ('bgra8', [2, 1, 0])])
@pytest.mark.parametrize('pad', [0, 5])
def test_four_channel_encodings_drop_alpha(encoding, order, pad):
    rgb = make_rgb()
    alpha = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)
    four = np.concatenate([rgb[..., order], alpha], axis=2)
    out = conv.decode_image(raw_msg(four, encoding, pad), use_cv_bridge=False)
    assert out.encoding == 'rgb8' and np.array_equal(out.pixels, rgb)


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('pad', [0, 2])
def test_mono16_scaled_to_mono8_in_either_byte_order(bigendian, pad):
    values = np.array([[0, 1, 128, 129, 256, 40000, 65534, 65535]], np.uint16)
    expected = np.array([[0, 0, 0, 1, 1, 156, 255, 255]], np.uint8)   # round(v * 255 / 65535)
    stored = values.astype('>u2' if bigendian else '<u2')
    out = conv.decode_image(raw_msg(stored, 'mono16', pad, bigendian), use_cv_bridge=False)
    assert out.encoding == 'mono8'
    assert np.array_equal(out.pixels, expected)


@pytest.mark.parametrize('encoding', ['yuv422', 'yuv422_yuy2'])
@pytest.mark.parametrize('pad', [0, 4])
def test_yuv422_layouts_match_bt601_reference(encoding, pad):
    yuv_y = RNG.integers(16, 236, (H, W), dtype=np.uint8)
    yuv_u = RNG.integers(16, 241, (H, W // 2), dtype=np.uint8)
    yuv_v = RNG.integers(16, 241, (H, W // 2), dtype=np.uint8)
    msg = raw_msg(yuv422_bytes(yuv_y, yuv_u, yuv_v, encoding), encoding, pad)
    out = conv.decode_image(msg, use_cv_bridge=False)
    expected = bt601_limited_rgb(yuv_y, np.repeat(yuv_u, 2, axis=1), np.repeat(yuv_v, 2, axis=1))
    assert out.encoding == 'rgb8' and out.pixels.shape == (H, W, 3)
    assert np.abs(out.pixels.astype(int) - expected).max() <= 2


def test_yuv422_byte_orders_are_not_interchangeable():
    yuv_y = np.tile(np.array([40, 220], np.uint8), (2, 2))           # dark, bright, ...
    chroma = np.full((2, 2), 128, np.uint8)
    msg = raw_msg(yuv422_bytes(yuv_y, chroma, chroma, 'yuv422'), 'yuv422')
    right = conv.image_to_rgb(msg, use_cv_bridge=False)
    assert right[0, 0, 0] < 60 and right[0, 1, 0] > 230
    msg.encoding = 'yuv422_yuy2'
    wrong = conv.image_to_rgb(msg, use_cv_bridge=False)
    assert not np.array_equal(wrong, right)


BAYER_OFFSETS = {   # position of R, G (on R rows), G (on B rows), B in the 2x2 tile
    'bayer_rggb8': ((0, 0), (0, 1), (1, 0), (1, 1)),
    'bayer_bggr8': ((1, 1), (1, 0), (0, 1), (0, 0)),
    'bayer_gbrg8': ((1, 0), (1, 1), (0, 0), (0, 1)),
    'bayer_grbg8': ((0, 1), (0, 0), (1, 1), (1, 0)),
}


@pytest.mark.parametrize('encoding', sorted(BAYER_OFFSETS))
@pytest.mark.parametrize('pad', [0, 3])
def test_bayer_patterns_demosaic_to_the_right_colour(encoding, pad):
    colour = (210, 90, 30)
    mosaic = np.zeros((8, 10), np.uint8)
    (ry, rx), (g1y, g1x), (g2y, g2x), (by, bx) = BAYER_OFFSETS[encoding]
    mosaic[ry::2, rx::2] = colour[0]
    mosaic[g1y::2, g1x::2] = colour[1]
    mosaic[g2y::2, g2x::2] = colour[1]
    mosaic[by::2, bx::2] = colour[2]
    out = conv.decode_image(raw_msg(mosaic, encoding, pad))
    assert out.encoding == 'rgb8' and out.pixels.shape == (8, 10, 3)
    interior = out.pixels[2:-2, 2:-2].reshape(-1, 3)
    assert (np.abs(interior.astype(int) - colour) <= 1).all()


def test_list_data_and_uppercase_encoding_are_accepted():
    rgb = make_rgb(2, 3)
    msg = raw_msg(rgb, 'RGB8')
    msg.data = list(msg.data)
    assert np.array_equal(conv.image_to_rgb(msg, use_cv_bridge=False), rgb)


# -- compressed --------------------------------------------------------------------
def compressed_msg(pixels_bgr, ext, fmt=None):
    ok, encoded = cv2.imencode(ext, pixels_bgr)
    assert ok
    return types.SimpleNamespace(format=fmt if fmt is not None else ext[1:],
                                 data=encoded.tobytes())


def test_png_decodes_losslessly_colour_and_grey():
    rgb = make_rgb()
    out = conv.decode(compressed_msg(rgb[..., ::-1].copy(), '.png', 'bgr8; png compressed bgr8'))
    assert out.encoding == 'bgr8' and np.array_equal(conv.to_rgb(*out), rgb)
    out = conv.decode(compressed_msg(rgb[..., 0].copy(), '.png'))
    assert out.encoding == 'mono8' and np.array_equal(out.pixels, rgb[..., 0])


def test_jpeg_decodes_close_to_the_original():
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 48, dtype=np.uint8)[None, :]
    smooth[..., 1] = 120
    smooth[..., 2] = np.linspace(255, 0, 32, dtype=np.uint8)[:, None]
    rgb = conv.image_to_rgb(compressed_msg(smooth[..., ::-1].copy(), '.jpg', 'jpeg'))
    assert rgb.shape == smooth.shape
    assert np.abs(rgb.astype(int) - smooth).mean() < 4


@pytest.mark.parametrize('mangle,match', [
    (lambda d: b'\xff\xd8' + b'\x00' * 40 + b'\xff\xd9', 'corrupt JPEG'),
    (lambda d: d[:len(d) // 2], 'truncated JPEG'),
    (lambda d: b'hello world, not an image', 'neither JPEG nor PNG'),
    (lambda d: b'', 'empty CompressedImage'),
])
def test_bad_jpeg_data_raises_conversion_error(mangle, match):
    msg = compressed_msg(make_rgb(16, 16), '.jpg', 'jpeg')
    msg.data = mangle(msg.data)
    with pytest.raises(ConversionError, match=match):
        conv.decode(msg)


def textured_bgr(height=120, width=160):
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3)


@pytest.mark.parametrize('sampling', [cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
                                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
def test_jpeg_pixels_equal_opencvs(sampling):
    bgr = textured_bgr()
    ok, encoded = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling])
    out = conv.decode(types.SimpleNamespace(format='jpeg', data=encoded.tobytes()))
    assert out.encoding == 'bgr8'
    assert np.array_equal(out.pixels, cv2.imdecode(encoded, cv2.IMREAD_ANYCOLOR))
    grey = compressed_msg(bgr[..., 0].copy(), '.jpg', 'jpeg')
    out = conv.decode(grey)
    assert out.encoding == 'mono8'
    assert np.array_equal(out.pixels, cv2.imdecode(np.frombuffer(grey.data, np.uint8),
                                                   cv2.IMREAD_ANYCOLOR))


@pytest.mark.parametrize('position', ['overwritten', 'inserted'])
def test_jpeg_with_garbage_in_the_middle_is_corrupt(position):
    msg = compressed_msg(textured_bgr(), '.jpg', 'jpeg')
    garbage = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    middle = len(msg.data) // 2
    end = middle + len(garbage) if position == 'overwritten' else middle
    msg.data = msg.data[:middle] + garbage + msg.data[end:]
    # OpenCV returns an image for it (and prints libjpeg's warning): what was segmented.
    assert cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_ANYCOLOR) is not None
    with pytest.raises(ConversionError, match=r'corrupt JPEG data \(\d+ bytes\): Corrupt JPEG'):
        conv.decode(msg)


def test_truncated_png_and_unsupported_formats_are_named():
    msg = compressed_msg(make_rgb(16, 16), '.png')
    msg.data = msg.data[:-20]
    with pytest.raises(ConversionError, match='truncated PNG'):
        conv.decode(msg)
    with pytest.raises(ConversionError, match='compressedDepth'):
        conv.decode(types.SimpleNamespace(format='16UC1; compressedDepth', data=b'\x00' * 20))
    with pytest.raises(ConversionError, match="format 'tiff'"):
        conv.decode(types.SimpleNamespace(format='tiff', data=b'II*\x00' + b'\x00' * 20))


# -- bad raw images ----------------------------------------------------------------
def test_unsupported_encoding_lists_the_supported_ones():
    msg = raw_msg(np.zeros((2, 2), np.float32), '32FC1')
    with pytest.raises(ConversionError, match=r"unsupported image encoding '32FC1'.*rgb8"):
        conv.decode(msg)


def test_step_smaller_than_a_row_is_rejected():
    msg = raw_msg(make_rgb(), 'rgb8')
    msg.step = W * 3 - 1
    with pytest.raises(ConversionError, match=r'step 23 is smaller than width x bytes per pixel'):
        conv.decode(msg)


def test_short_data_is_rejected():
    msg = raw_msg(make_rgb(), 'rgb8', pad=2)
    msg.data = msg.data[:-1]
    with pytest.raises(ConversionError, match=r'fewer than step x height = 26 x 6'):
        conv.decode(msg)


@pytest.mark.parametrize('height,width', [(0, 4), (4, 0)])
def test_zero_size_image_is_rejected(height, width):
    msg = types.SimpleNamespace(height=height, width=width, encoding='rgb8', step=width * 3,
                                is_bigendian=0, data=b'')
    with pytest.raises(ConversionError, match='zero-size image'):
        conv.decode(msg)


def test_odd_width_yuv422_is_rejected():
    msg = raw_msg(np.zeros((2, 3, 2), np.uint8), 'yuv422')
    with pytest.raises(ConversionError, match='even width'):
        conv.decode(msg)


# -- output messages ---------------------------------------------------------------
def test_image_fields_for_mono8_and_rgb8():
    header = object()
    labels = RNG.integers(0, 19, (H, W), dtype=np.uint8)
    fields = conv.image_fields(labels, 'mono8', header)
    assert fields['header'] is header and fields['encoding'] == 'mono8'
    assert (fields['height'], fields['width'], fields['step']) == (H, W, W)
    assert np.array_equal(fields['data'].reshape(H, W), labels)
    colour = make_rgb()[:, ::-1]          # non-contiguous input is copied
    fields = conv.image_fields(colour, 'rgb8', header, as_array_module=True)
    assert fields['step'] == W * 3 and fields['data'].typecode == 'B'
    assert bytes(fields['data']) == np.ascontiguousarray(colour).tobytes()


@pytest.mark.parametrize('pixels,encoding,match', [
    (np.zeros((2, 2), np.uint16), 'mono8', 'uint8'),
    (np.zeros((2, 2, 3), np.uint8), 'mono8', 'H×W'),
    (np.zeros((2, 2), np.uint8), 'rgb8', 'H×W×3'),
    (np.zeros((0, 2), np.uint8), 'mono8', 'non-empty'),
    (np.zeros((2, 2), np.uint8), '32FC1', "encoding '32FC1'"),
])
def test_image_fields_reject_wrong_arrays(pixels, encoding, match):
    with pytest.raises(ConversionError, match=match):
        conv.image_fields(pixels, encoding, None)


# -- real message classes: rosbags (always) and rclpy (with ROS) --------------------
@pytest.fixture(scope='module')
def typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_HUMBLE)


def rosbags_header(store, frame_id='cam'):
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    return Header(stamp=Time(sec=12, nanosec=345), frame_id=frame_id)


def cdr_round_trip(store, msg):
    raw = store.serialize_cdr(msg, msg.__msgtype__)
    return store.deserialize_cdr(raw, msg.__msgtype__)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'rgba8', 'mono16', 'yuv422',
                                      'bayer_grbg8'])
def test_rosbags_images_decode_after_cdr_round_trip(typestore, encoding):
    channels, depth = conv.RAW_ENCODINGS[encoding]
    reference = raw_msg(RNG.integers(0, 256, (H, W, channels * depth), dtype=np.uint8)
                        .reshape(H, W, -1), encoding, pad=4)
    Image = typestore.types['sensor_msgs/msg/Image']
    msg = Image(header=rosbags_header(typestore), height=H, width=W, encoding=encoding,
                is_bigendian=0, step=reference.step,
                data=np.frombuffer(reference.data, np.uint8).copy())
    decoded = conv.decode(cdr_round_trip(typestore, msg), use_cv_bridge=False)
    expected = conv.decode(reference, use_cv_bridge=False)
    assert decoded.encoding == expected.encoding
    assert np.array_equal(decoded.pixels, expected.pixels)


def test_rosbags_compressed_and_output_images(typestore):
    rgb = make_rgb()
    CompressedImage = typestore.types['sensor_msgs/msg/CompressedImage']
    encoded = compressed_msg(rgb[..., ::-1].copy(), '.png')
    msg = CompressedImage(header=rosbags_header(typestore), format='png',
                          data=np.frombuffer(encoded.data, np.uint8).copy())
    assert np.array_equal(conv.image_to_rgb(cdr_round_trip(typestore, msg)), rgb)

    Image = typestore.types['sensor_msgs/msg/Image']
    labels = RNG.integers(0, 11, (H, W), dtype=np.uint8)
    for pixels, encoding in ((labels, 'mono8'), (rgb, 'rgb8')):
        out = cdr_round_trip(typestore, conv.build_image(Image, pixels, encoding,
                                                         rosbags_header(typestore, 'front')))
        assert out.header.frame_id == 'front' and out.header.stamp.nanosec == 345
        assert np.array_equal(conv.decode(out, use_cv_bridge=False).pixels, pixels)


RCLPY_ENCODINGS = ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', 'mono16', 'yuv422',
                   'yuv422_yuy2', 'bayer_rggb8']


def rclpy_image(encoding, pad=0, bigendian=False):
    require_ros()
    from sensor_msgs.msg import Image
    channels, depth = conv.RAW_ENCODINGS[encoding]
    reference = raw_msg(RNG.integers(0, 256, (H, W, channels * depth), dtype=np.uint8),
                        encoding, pad, bigendian)
    msg = Image(height=H, width=W, encoding=encoding, step=reference.step,
                is_bigendian=int(bigendian))
    msg.data.frombytes(reference.data)
    msg.header.frame_id = 'cam'
    return msg, reference


@pytest.mark.ros
@pytest.mark.parametrize('encoding', RCLPY_ENCODINGS)
def test_rclpy_images_decode_after_serialisation(encoding):
    msg, reference = rclpy_image(encoding, pad=2)
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    received = deserialize_message(serialize_message(msg), Image)
    decoded = conv.decode(received, use_cv_bridge=False)
    expected = conv.decode(reference, use_cv_bridge=False)
    assert decoded.encoding == expected.encoding
    assert np.array_equal(decoded.pixels, expected.pixels)


@pytest.mark.ros
def test_rclpy_output_images_and_compressed():
    require_ros()
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header
    header = Header(frame_id='front_left')
    header.stamp.sec, header.stamp.nanosec = 5, 6
    labels = RNG.integers(0, 19, (H, W), dtype=np.uint8)
    msg = conv.build_image(Image, labels, 'mono8', header)
    received = deserialize_message(serialize_message(msg), Image)
    assert received.header == header and received.step == W
    assert np.array_equal(conv.decode(received).pixels, labels)
    rgb = make_rgb()
    compressed = CompressedImage(format='jpeg')
    compressed.data.frombytes(cv2.imencode('.png', rgb[..., ::-1])[1].tobytes())
    assert np.array_equal(conv.image_to_rgb(compressed), rgb)


@pytest.mark.ros
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', 'mono16',
                                      'yuv422', 'yuv422_yuy2'])
@pytest.mark.parametrize('pad', [0, 3])
def test_cv_bridge_agrees_with_own_conversion(encoding, pad):
    msg, _ = rclpy_image(encoding, pad=pad)
    if not conv.cv_bridge_available():
        pytest.skip('cv_bridge (or its OpenCV runtime) is not installed')
    bridged = conv.decode_image(msg, use_cv_bridge=True)
    own = conv.decode_image(msg, use_cv_bridge=False)
    assert bridged.encoding == own.encoding
    assert np.abs(bridged.pixels.astype(int) - own.pixels).max() <= 1


@pytest.mark.ros
def test_big_endian_mono16_bypasses_cv_bridge():
    msg, reference = rclpy_image('mono16', bigendian=True)
    out = conv.decode_image(msg)            # cv_bridge's byte swap breaks on NumPy 2
    expected = conv.decode_image(reference, use_cv_bridge=False)
    assert np.array_equal(out.pixels, expected.pixels)


@pytest.mark.ros
def test_rows_padded_by_part_of_a_pixel_decode_correctly_by_default():
    msg, reference = rclpy_image('rgba8', pad=3)      # cv_bridge would skew these rows
    expected = conv.decode_image(reference, use_cv_bridge=False)
    assert np.array_equal(conv.decode_image(msg).pixels, expected.pixels)
