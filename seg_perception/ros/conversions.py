"""sensor_msgs Image / CompressedImage <-> numpy, without importing rclpy.

The functions only read message fields (``height, width, encoding, step,
is_bigendian, data`` or ``format, data``), so they work alike with rclpy
messages, ``rosbags`` messages and any object that carries those fields.

Decoding returns a :class:`DecodedImage`: a uint8 array plus the encoding tag
the pipeline understands:

* ``'rgb8'``  H×W×3, ``'bgr8'`` H×W×3 (raw rgb8/bgr8 pass through, often as a
  zero-copy view of the message buffer, so do not write into it),
* ``'mono8'`` H×W (mono8, and mono16 scaled to 8 bit),
* every other encoding (rgba8, bgra8, yuv422, yuv422_yuy2, bayer_*8) is
  converted to ``'rgb8'``; JPEG and PNG decode to ``'bgr8'`` (or ``'mono8'``
  for grey images), as OpenCV returns them. JPEG goes through libjpeg-turbo
  in strict mode (simplejpeg): data that libjpeg only warns about, such as
  garbage in the middle of the stream, is rejected instead of segmented.

``min_size`` (height, width) asks for no more pixels than that: a JPEG is then
decoded at the smallest of libjpeg-turbo's DCT scales (k/8: 1/2, 3/8, 1/4, 1/8...)
that is still at least that size, which saves most of the inverse DCT, upsampling
and colour conversion work (benchmarks/JPEG.md); OpenCV, the fallback, scales by
1/2, 1/4 or 1/8. The camera's own size, read from the JPEG header, is kept
in :attr:`DecodedImage.camera_size`, so results can still be made at full size.
Other formats and raw images always decode in full.

:func:`image_to_rgb` gives H×W×3 RGB for every input. When ``cv_bridge`` is
importable it decodes the raw encodings it handles correctly (not the Bayer
ones, which it does not demosaic, nor big-endian data, nor rows padded by a
non-multiple of the pixel size); the package's own conversion does the rest
and gives the same pixels (tested).
Bad input raises :class:`ConversionError` naming the problem.
"""
from __future__ import annotations

import array
import sys
from typing import Any, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from seg_perception.errors import InvalidValueError

try:
    import simplejpeg
except ImportError:     # a runtime dependency; OpenCV decodes (less strictly) without it
    simplejpeg = None


class ConversionError(InvalidValueError):
    """An image message cannot be turned into pixels (the message says why)."""


class DecodedImage(NamedTuple):
    """Pixels of one message and the encoding they are in (rgb8, bgr8 or mono8).

    ``camera_size``: (height, width) of the image the camera sent, where the pixels are
    a reduced decode of it; None when the pixels are the full image.
    """

    pixels: np.ndarray
    encoding: str
    camera_size: Optional[Tuple[int, int]] = None

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width) of the camera's image: what results should be made at."""
        return self.camera_size or tuple(self.pixels.shape[:2])


# encoding -> (channels, bytes per channel)
RAW_ENCODINGS = {
    'rgb8': (3, 1), 'bgr8': (3, 1), 'mono8': (1, 1), 'rgba8': (4, 1), 'bgra8': (4, 1),
    'mono16': (1, 2), 'yuv422': (2, 1), 'yuv422_yuy2': (2, 1),
    'bayer_rggb8': (1, 1), 'bayer_bggr8': (1, 1), 'bayer_gbrg8': (1, 1), 'bayer_grbg8': (1, 1),
}
COMPRESSED_FORMATS = ('jpeg', 'png')
PIPELINE_ENCODINGS = ('rgb8', 'bgr8', 'mono8')

# OpenCV names Bayer patterns after the second row, so ROS "rggb" is OpenCV "BG".
_TO_RGB_CODES = {
    'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
    'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2,
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
}
# What cv_bridge decodes the same way as we do (checked by test_ros_conversions).
_CV_BRIDGE_ENCODINGS = ('rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', 'mono16',
                        'yuv422', 'yuv422_yuy2')
_HOST_IS_BIGENDIAN = sys.byteorder == 'big'
_bridge: Any = None          # None: not tried yet; False: not importable


def _cv_bridge():
    """The shared CvBridge, or None where cv_bridge (or its OpenCV runtime) is missing."""
    global _bridge
    if _bridge is None:
        try:
            from cv_bridge import CvBridge
            _bridge = CvBridge()
            _bridge.encoding_to_cvtype2('rgb8')     # loads the boost module
        except Exception:  # noqa: BLE001 - ImportError, or its native module failing to load
            _bridge = False
    return _bridge or None


def cv_bridge_available() -> bool:
    """Whether raw images can be decoded through cv_bridge here."""
    return _cv_bridge() is not None


def is_compressed(msg) -> bool:
    """True for CompressedImage-like messages (``format`` + ``data``, no ``encoding``)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def _data_buffer(data) -> np.ndarray:
    """The message's byte payload as a flat uint8 array, without copying when possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else \
            np.frombuffer(data.tobytes(), np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)     # a list of ints


def check_image(msg) -> None:
    """Raise ConversionError unless a raw Image message's fields describe valid pixels."""
    encoding = str(msg.encoding).lower()
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding not in RAW_ENCODINGS:
        raise ConversionError(
            f'unsupported image encoding {msg.encoding!r}; supported: '
            f'{", ".join(RAW_ENCODINGS)} (CompressedImage: {", ".join(COMPRESSED_FORMATS)})')
    if height <= 0 or width <= 0:
        raise ConversionError(f'zero-size image ({width}x{height}, encoding {encoding})')
    channels, depth = RAW_ENCODINGS[encoding]
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ConversionError(
            f'step {step} is smaller than width x bytes per pixel = {width} x '
            f'{channels * depth} = {row_bytes} ({encoding} {width}x{height})')
    size = len(msg.data)
    if size < step * height:
        raise ConversionError(
            f'image data holds {size} bytes, fewer than step x height = {step} x {height} '
            f'= {step * height} ({encoding} {width}x{height})')
    if encoding.startswith('yuv422') and width % 2:
        raise ConversionError(f'{encoding} needs an even width, got {width}')


def _raw_pixels(msg, encoding: str) -> np.ndarray:
    """A strided view of the image rows (padding skipped), in native byte order."""
    channels, depth = RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buffer = _data_buffer(msg.data)
    if depth == 1:
        dtype = np.dtype(np.uint8)
    else:
        dtype = np.dtype(np.uint16).newbyteorder('>' if msg.is_bigendian else '<')
    view = np.ndarray(shape=(height, width, channels), dtype=dtype, buffer=buffer,
                      strides=(step, channels * depth, depth))
    if depth > 1:
        view = view.astype(np.uint16)     # native order; astype swaps bytes when needed
    return view[:, :, 0] if channels == 1 else view


def _mono16_to_mono8(mono16: np.ndarray) -> np.ndarray:
    """Scale 0..65535 to 0..255 with rounding (what cv_bridge does)."""
    return ((mono16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _own_decode(msg, encoding: str) -> DecodedImage:
    pixels = _raw_pixels(msg, encoding)
    if encoding in PIPELINE_ENCODINGS:
        return DecodedImage(pixels, encoding)
    if encoding == 'mono16':
        return DecodedImage(_mono16_to_mono8(pixels), 'mono8')
    # cvtColor wants contiguous rows; padded rows are copied once here.
    return DecodedImage(cv2.cvtColor(np.ascontiguousarray(pixels), _TO_RGB_CODES[encoding]),
                        'rgb8')


def _bridge_decode(bridge, msg, encoding: str) -> DecodedImage:
    if encoding in PIPELINE_ENCODINGS:
        return DecodedImage(bridge.imgmsg_to_cv2(msg, 'passthrough'), encoding)
    target = 'mono8' if encoding == 'mono16' else 'rgb8'
    return DecodedImage(bridge.imgmsg_to_cv2(msg, target), target)


def decode_image(msg, use_cv_bridge: Optional[bool] = None) -> DecodedImage:
    """Decode a raw sensor_msgs/Image-like message to pixels for the pipeline.

    ``use_cv_bridge``: None = cv_bridge where importable and correct for this
    message, False = always the package's own conversion, True = require it.
    """
    check_image(msg)
    encoding = str(msg.encoding).lower()
    bridge = _cv_bridge() if use_cv_bridge is not False else None
    if use_cv_bridge and bridge is None:
        raise ConversionError('cv_bridge was requested but cannot be imported here')
    channels, depth = RAW_ENCODINGS[encoding]
    swapped = bool(msg.is_bigendian) != _HOST_IS_BIGENDIAN and depth > 1
    # cv_bridge rounds step / pixel size down, which skews rows padded by a
    # non-multiple of the pixel size; such messages take the own path.
    whole_pixels = int(msg.step) % (channels * depth) == 0
    if bridge is not None and encoding in _CV_BRIDGE_ENCODINGS and not swapped and whole_pixels:
        return _bridge_decode(bridge, msg, encoding)
    return _own_decode(msg, encoding)


def _compressed_kind(msg, payload: np.ndarray) -> str:
    """'jpeg' or 'png' from the magic bytes, cross-checked with the format string."""
    fmt = str(msg.format).lower()
    if 'compresseddepth' in fmt:
        raise ConversionError(f'compressedDepth images are not supported (format {msg.format!r})')
    head = payload[:8].tobytes()
    kind = 'jpeg' if head[:2] == b'\xff\xd8' else 'png' if head == b'\x89PNG\r\n\x1a\n' else ''
    named = [k for k in ('jpeg', 'jpg', 'png') if k in fmt]
    if not kind:
        if fmt and not named:
            raise ConversionError(f'unsupported CompressedImage format {msg.format!r}; '
                                  f'supported: {", ".join(COMPRESSED_FORMATS)}')
        raise ConversionError(f'CompressedImage data ({payload.size} bytes, format '
                              f'{msg.format!r}) is neither JPEG nor PNG: corrupt header')
    return kind


# cv2.imdecode flags for a reduced colour decode, by DCT scale denominator.
_CV2_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def jpeg_scale(size: Tuple[int, int], min_size: Optional[Tuple[int, int]]) -> int:
    """The largest DCT scale denominator (1, 2, 4 or 8) that keeps an image of ``size``
    at least ``min_size`` (libjpeg rounds scaled sizes up)."""
    if not min_size:
        return 1
    for scale in (8, 4, 2):
        if all(-(-int(full) // scale) >= int(least) for full, least in zip(size, min_size)):
            return scale
    return 1


def _decode_jpeg(payload: np.ndarray,
                 min_size: Optional[Tuple[int, int]]) -> Optional[DecodedImage]:
    """A YCbCr or grey JPEG, decoded strictly; None for other colour spaces (CMYK) and
    where simplejpeg is missing.

    cv2.imdecode cannot be asked about libjpeg's warnings: it prints "Corrupt JPEG
    data: ..." to stderr and returns the damaged image. simplejpeg's strict mode
    turns those warnings into a ValueError; its pixels equal OpenCV's (same
    library, same default DCT and upsampling).
    """
    if simplejpeg is None:
        return None
    least = {'min_height': int(min_size[0]), 'min_width': int(min_size[1])} if min_size else {}
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(payload)
        if colorspace == 'Gray':
            pixels = simplejpeg.decode_jpeg(payload, colorspace='GRAY', strict=True, **least)
            return _sized(DecodedImage(pixels[:, :, 0], 'mono8'), (height, width))
        if colorspace in ('YCbCr', 'RGB'):
            pixels = simplejpeg.decode_jpeg(payload, colorspace='BGR', strict=True, **least)
            return _sized(DecodedImage(pixels, 'bgr8'), (height, width))
    except ValueError as exc:
        raise ConversionError(f'corrupt JPEG data ({payload.size} bytes): {exc}') from None
    return None         # CMYK/YCCK (never a camera's): OpenCV converts those


def _sized(decoded: DecodedImage, camera_size: Tuple[int, int]) -> DecodedImage:
    """``decoded`` with the camera size noted where the pixels are a reduced decode."""
    if tuple(decoded.pixels.shape[:2]) == tuple(camera_size):
        return decoded
    return decoded._replace(camera_size=(int(camera_size[0]), int(camera_size[1])))


def _jpeg_header_size(payload: np.ndarray) -> Optional[Tuple[int, int]]:
    """(height, width) from the JPEG header, None where it cannot be read here."""
    if simplejpeg is None:
        return None
    try:
        height, width = simplejpeg.decode_jpeg_header(payload)[:2]
    except ValueError:
        return None
    return int(height), int(width)


def decode_compressed(msg, min_size: Optional[Tuple[int, int]] = None) -> DecodedImage:
    """Decode a sensor_msgs/CompressedImage-like message (JPEG or PNG).

    ``min_size``: (height, width) the caller needs at least; a JPEG is decoded at the
    smallest DCT scale that keeps it (``camera_size`` then says the full size). Without
    simplejpeg, OpenCV decodes JPEGs in full and less strictly.
    """
    payload = _data_buffer(msg.data)
    if payload.size == 0:
        raise ConversionError(f'empty CompressedImage (format {msg.format!r})')
    kind = _compressed_kind(msg, payload)
    # libjpeg returns a half-grey image for a truncated stream instead of failing:
    # insist on the end markers so such frames are rejected, not segmented.
    if kind == 'jpeg' and payload[-64:].tobytes().rfind(b'\xff\xd9') < 0:
        raise ConversionError(f'truncated JPEG: no end-of-image marker in {payload.size} bytes')
    if kind == 'png' and payload[-64:].tobytes().rfind(b'IEND') < 0:
        raise ConversionError(f'truncated PNG: no IEND chunk in {payload.size} bytes')
    flags, camera_size = cv2.IMREAD_ANYCOLOR, None
    if kind == 'jpeg':
        decoded = _decode_jpeg(payload, min_size)
        if decoded is not None:
            return decoded
        camera_size = _jpeg_header_size(payload)
        if camera_size is not None and jpeg_scale(camera_size, min_size) > 1:
            flags = _CV2_REDUCED[jpeg_scale(camera_size, min_size)]
    pixels = cv2.imdecode(payload, flags)
    if pixels is None or pixels.size == 0:
        raise ConversionError(f'corrupt {kind.upper()} data ({payload.size} bytes): '
                              'OpenCV could not decode it')
    if pixels.ndim == 2:
        decoded = DecodedImage(pixels, 'mono8')
    elif pixels.shape[2] == 4:
        decoded = DecodedImage(cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR), 'bgr8')
    else:
        decoded = DecodedImage(pixels, 'bgr8')
    return decoded if camera_size is None else _sized(decoded, camera_size)


def decode(msg, use_cv_bridge: Optional[bool] = None,
           min_size: Optional[Tuple[int, int]] = None) -> DecodedImage:
    """Decode an Image or a CompressedImage message (``min_size``: see decode_compressed)."""
    if is_compressed(msg):
        return decode_compressed(msg, min_size)
    return decode_image(msg, use_cv_bridge)


def to_rgb(pixels: np.ndarray, encoding: str,
           size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Turn a decoded rgb8/bgr8/mono8 array into H×W×3 RGB, resized to ``size`` (height,
    width) when given: ``to_rgb(*decoded)`` is the camera's image at the camera's size."""
    if encoding == 'rgb8':
        rgb = pixels
    elif encoding == 'bgr8':
        rgb = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
    elif encoding == 'mono8':
        rgb = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_GRAY2RGB)
    else:
        raise ConversionError(f'to_rgb expects rgb8, bgr8 or mono8, got {encoding!r}')
    if size is None or tuple(size) == rgb.shape[:2]:
        return rgb
    return cv2.resize(rgb, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def image_to_rgb(msg, use_cv_bridge: Optional[bool] = None) -> np.ndarray:
    """Any supported Image/CompressedImage message as a uint8 H×W×3 RGB array."""
    return to_rgb(*decode(msg, use_cv_bridge))


# -- output messages -----------------------------------------------------------------
_OUTPUT_ENCODINGS = {'mono8': 1, 'rgb8': 3, 'bgr8': 3}


def image_fields(pixels: np.ndarray, encoding: str, header, *, as_array_module=False) -> dict:
    """The field values of an Image message holding ``pixels`` (mono8 H×W or rgb8 H×W×3).

    ``data`` is a flat uint8 numpy array (what rosbags wants), or an
    ``array.array('B')`` with ``as_array_module`` (what rclpy stores without a
    per-element check).
    """
    channels = _OUTPUT_ENCODINGS.get(encoding)
    if channels is None:
        raise ConversionError(f'cannot build an Image with encoding {encoding!r}; '
                              f'supported: {", ".join(_OUTPUT_ENCODINGS)}')
    pixels = np.asarray(pixels)
    expected = 2 if channels == 1 else 3
    if pixels.dtype != np.uint8 or pixels.ndim != expected or \
            (channels > 1 and pixels.shape[2] != channels) or pixels.size == 0:
        raise ConversionError(f'{encoding} needs a non-empty uint8 array of '
                              f'{"H×W" if channels == 1 else "H×W×3"}, '
                              f'got {pixels.dtype} {pixels.shape}')
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    if as_array_module:
        data = array.array('B')
        data.frombytes(memoryview(pixels).cast('B'))
    else:
        data = pixels.reshape(-1)
    return {'header': header, 'height': height, 'width': width, 'encoding': encoding,
            'is_bigendian': 0, 'step': width * channels, 'data': data}


def build_image(msg_type, pixels: np.ndarray, encoding: str, header):
    """An Image message of class ``msg_type`` (rclpy or rosbags) holding ``pixels``.

    ``header`` is shared, not copied; None leaves rclpy's default (rosbags needs one).
    """
    is_rclpy = hasattr(msg_type, 'get_fields_and_field_types')
    fields = image_fields(pixels, encoding, header, as_array_module=is_rclpy)
    if header is None:
        del fields['header']
    return msg_type(**fields)
