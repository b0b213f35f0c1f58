"""Bags in and out for ``seg-perception bag-eval``, on top of ``rosbags``.

Reading (:func:`open_bag`): a rosbag2 folder (MCAP or sqlite3 storage, metadata
versions 1 to 9), a lone ``.mcap`` / ``.db3`` file, or ROS 1 ``.bag`` files, all
through ``rosbags.highlevel.AnyReader``. Quirks of real recordings handled here:

- a rosbag2 *folder* whose name ends in ``.bag`` (AnyReader takes every ``*.bag``
  path for a ROS 1 file);
- a rosbag2 folder without ``metadata.yaml`` (the recorder was killed before it
  wrote one): its storage files are read directly;
- bags without message definitions (rosbag2 sqlite3 before Iron): the ROS 2
  Humble types are used;
- relative topic names (no leading slash, common in ROS 1 bags): ``--topics``
  matches with or without the slash;
- a file that rosbags cannot open because it was cut short or damaged: it is read
  record by record up to the damage, and the damage is reported as a
  :class:`BagError` after the last readable message (:mod:`.salvage`).

Camera names (:func:`camera_namespace`): the image topic without a trailing
``compressed`` (image_transport) and then without a trailing ``image_raw``,
``image_rect_color``, ``image_color``, ``image_rect``, ``image_mono`` or ``image``
token: ``/cam_front/image_raw`` → ``cam_front``, ``/camera/front/image_raw/compressed``
→ ``camera/front``. The outputs go next to the camera, as the node publishes
them: ``/<namespace>/segmentation/labels`` (and ``drivable_mask``, ``color``). A
topic that is nothing but such tokens (``/image_raw``) is camera ``camera``.

Writing (:class:`OutputBag`): a rosbag2 (metadata version 8) in MCAP storage with
zstd-compressed chunks, or sqlite3, with the message types of ROS 2 Humble.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from seg_perception.errors import InvalidValueError, SegPerceptionError
from seg_perception.replay.salvage import salvage_reader, storage_files

LOG = logging.getLogger(__name__)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
TRANSPORT_TOKENS = ('compressed',)
IMAGE_TOKENS = ('image_raw', 'image_rect_color', 'image_color', 'image_rect', 'image_mono',
                'image')
DEFAULT_CAMERA = 'camera'
STORAGES = ('mcap', 'sqlite3')


class BagError(InvalidValueError):
    """A bag that cannot be read (fully), a topic it lacks, or a message it cannot hold."""


class OutputError(SegPerceptionError, OSError):
    """The output folder, bag or report cannot be written (a file in the way, no
    permission, a full disk); the message names the path, ``errno`` is the cause's."""


def output_error(what: str, path, cause: BaseException) -> OutputError:
    """OutputError 'cannot <what> <path>: <why>' for an OSError (or rosbags WriterError)."""
    why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    error = OutputError(f'cannot {what} {path}: {why}')
    error.errno = getattr(cause, 'errno', None)
    return error


def humble_typestore():
    """The ROS 2 Humble message types (what the output bag is written with)."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_HUMBLE)


# -- topics and cameras ---------------------------------------------------------------------

def _tokens(topic: str) -> List[str]:
    return [token for token in str(topic).split('/') if token]


def same_topic(a: str, b: str) -> bool:
    """Topic names equal up to leading/trailing slashes (relative ROS 1 names)."""
    return _tokens(a) == _tokens(b)


def camera_namespace(topic: str) -> str:
    """``/camera/front/image_raw/compressed`` → ``camera/front`` (see the module doc)."""
    tokens = _tokens(topic)
    if tokens and tokens[-1] in TRANSPORT_TOKENS:
        tokens.pop()
    if tokens and tokens[-1] in IMAGE_TOKENS:
        tokens.pop()
    return '/'.join(tokens) or DEFAULT_CAMERA


def output_topic(namespace: str, kind: str) -> str:
    """The absolute output topic of a camera, as the node names it (outputs.output_topic)."""
    from seg_perception.ros import outputs
    return '/' + outputs.output_topic(namespace.strip('/'), kind)


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: its message type and how many messages it holds."""

    name: str
    msgtype: str
    count: int


# -- reading ----------------------------------------------------------------------------------

def _has_metadata(folder: Path) -> bool:
    return (folder / 'metadata.yaml').is_file()


def _reader_paths(path: Path) -> Tuple[List[Path], str]:
    """The paths to hand to AnyReader, and a description of what the bag is."""
    if path.is_dir():
        if _has_metadata(path):
            return [path], 'rosbag2 folder'
        files = storage_files([path])
        if not files:
            raise BagError(f'{path}: a folder without metadata.yaml and without .mcap, .db3 '
                           'or .bag files: not a bag')
        LOG.warning('%s has no metadata.yaml (recording not closed?): reading %s directly',
                    path, ', '.join(f.name for f in files))
        if len({f.suffix for f in files}) > 1:
            raise BagError(f'{path}: no metadata.yaml and storage files of several kinds '
                           f'({", ".join(f.name for f in files)})')
        return files, 'rosbag2 folder without metadata.yaml'
    if path.suffix in ('.mcap', '.db3'):
        return [path], f'rosbag2 {path.suffix[1:]} file'
    if path.suffix == '.bag':
        return [path], 'ROS 1 bag'
    raise BagError(f'{path}: not a bag: expected a rosbag2 folder, a .mcap or .db3 file or a '
                   'ROS 1 .bag file')


class BagSource:
    """An open bag: its topics, its messages and a deserializer for them."""

    def __init__(self, path, *, allow_salvage: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f'bag not found: {self.path}')
        paths, self.description = _reader_paths(self.path)
        self._reader = None
        self._salvage = []
        self.damage: Optional[str] = None
        try:
            self._open_reader(paths)
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds for a bad file
            if not allow_salvage:
                raise BagError(f'{self.path}: cannot open the bag: {exc}') from None
            self._open_salvage(paths, exc)

    def _open_reader(self, paths: List[Path]) -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.rosbag2 import Reader as Rosbag2Reader
        reader = AnyReader(paths, default_typestore=humble_typestore())
        if self.path.is_dir() and self.path.suffix == '.bag' and _has_metadata(self.path):
            # A rosbag2 folder named *.bag: AnyReader took it for a ROS 1 file.
            reader.is2 = True
            reader.readers = [Rosbag2Reader(self.path)]
        reader.open()
        self._reader = reader
        self.is_ros1 = not reader.is2
        self.typestore = reader.typestore
        self.topics = {name: TopicSummary(name, info.msgtype or '', int(info.msgcount))
                       for name, info in reader.topics.items()}

    def _open_salvage(self, paths: List[Path], error: Exception) -> None:
        files = storage_files(paths)
        try:
            self._salvage = [salvage_reader(f) for f in files]
        except (ValueError, OSError) as exc:
            raise BagError(f'{self.path}: cannot open the bag ({error}); reading it record '
                           f'by record failed too: {exc}') from None
        if not self._salvage:
            raise BagError(f'{self.path}: cannot open the bag: {error}') from None
        problems = '; '.join(f'{s.path.name}: {s.problem}' for s in self._salvage if s.problem)
        self.damage = problems or f'rosbags cannot open it ({error})'
        if not any(s.topics for s in self._salvage):
            self.close()
            raise BagError(f'{self.path}: the bag is damaged and no message in it can be read: '
                           f'{self.damage}')
        LOG.warning('%s: %s; reading what is readable', self.path, self.damage)
        self.description += ', damaged: read record by record'
        self.is_ros1 = self._salvage[0].kind == 'ros1'
        self.typestore = self._salvage[0].typestore
        topics: Dict[str, TopicSummary] = {}
        for salvage in self._salvage:
            for name, (msgtype, count) in salvage.topics.items():
                before = topics.get(name)
                topics[name] = TopicSummary(name, msgtype, count + (before.count if before else 0))
        self.topics = topics

    # -- messages ------------------------------------------------------------------------
    def messages(self, topics: Sequence[str]) -> Iterator[Tuple[str, str, int, bytes]]:
        """(topic, message type, log time ns, raw bytes) of ``topics``, in log-time order.

        Raises BagError naming the bag when the data turns out damaged; the
        messages before the damage have been yielded by then.
        """
        if self._salvage:
            yield from self._salvaged_messages(topics)
            return
        connections = [c for c in self._reader.connections if c.topic in set(topics)]
        if not connections:
            return
        count = 0
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, log_time, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - sqlite3, struct, zstd, rosbags errors
                raise BagError(f'{self.path}: the bag is damaged after {count} messages: '
                               f'{type(exc).__name__}: {exc}') from None
            count += 1
            yield connection.topic, connection.msgtype, int(log_time), raw

    def _salvaged_messages(self, topics):
        count = 0
        for salvage in self._salvage:
            for message in salvage.messages(topics):
                count += 1
                yield message
            if salvage.problem:
                raise BagError(f'{salvage.path}: {salvage.problem}; {count} messages of the '
                               'chosen topics were read before it')

    def deserialize(self, raw: bytes, msgtype: str):
        """The message object of ``raw`` (CDR for rosbag2, ROS 1 serialization for ROS 1)."""
        try:
            if self.is_ros1:
                return self.typestore.deserialize_ros1(raw, msgtype)
            return self.typestore.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001 - SerdeError, KeyError, struct.error
            raise BagError(f'{self.path}: a {msgtype} message cannot be deserialized: '
                           f'{type(exc).__name__}: {exc}') from None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for salvage in self._salvage:
            if hasattr(salvage, 'close'):
                salvage.close()
        self._salvage = []

    def __enter__(self) -> 'BagSource':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_bag(path, *, allow_salvage: bool = True) -> BagSource:
    """Open a bag for reading (see the module doc for what is accepted)."""
    return BagSource(path, allow_salvage=allow_salvage)


# -- messages for the output bag --------------------------------------------------------------

def convert_message(msg, msgtype: str, typestore):
    """``msg`` (from any typestore, e.g. a ROS 1 bag's) rebuilt with ``typestore``'s classes.

    Fields the target type lacks (ROS 1 ``Header.seq``) are dropped; names are
    matched ignoring case (ROS 1 CameraInfo has ``K``, ROS 2 ``k``).
    """
    from rosbags.typesys.store import Nodetype
    _, fields = typestore.fielddefs[msgtype]
    source_fields = {name.lower(): name for name in getattr(msg, '__dataclass_fields__', {})}
    values = {}
    for name, (node, detail) in fields:
        source_name = name if hasattr(msg, name) else source_fields.get(name.lower())
        if source_name is None:
            raise BagError(f'a {msgtype} message has no field {name!r}')
        value = getattr(msg, source_name)
        if node == Nodetype.NAME:
            value = convert_message(value, detail, typestore)
        elif node in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.NAME:
            value = [convert_message(v, detail[0][1], typestore) for v in value]
        values[name] = value
    return typestore.types[msgtype](**values)


def header_for_output(header, typestore):
    """The input header as a Humble std_msgs/Header: same stamp and frame_id."""
    types = typestore.types
    stamp = types['builtin_interfaces/msg/Time'](sec=int(header.stamp.sec),
                                                 nanosec=int(header.stamp.nanosec))
    return types['std_msgs/msg/Header'](stamp=stamp, frame_id=str(header.frame_id))


def stamp_ns(header) -> int:
    """Header stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class OutputBag:
    """A rosbag2 being written: one connection per topic, added on first use.

    Any OSError (or rosbags WriterError) while creating, writing or closing it is
    raised as an OutputError naming the bag.
    """

    def __init__(self, path, storage: str = 'mcap', *, overwrite: bool = False):
        from rosbags.rosbag2 import (CompressionFormat, CompressionMode, StoragePlugin, Writer,
                                     WriterError)
        if storage not in STORAGES:
            raise InvalidValueError(f'--storage must be one of {", ".join(STORAGES)}, got '
                                    f'{storage!r}')
        self.path = Path(path)
        self.storage = storage
        self.closed = False
        self.closed_cleanly = False     # closed with its index and metadata.yaml
        self._connections: Dict[str, object] = {}
        self.counts: Dict[str, int] = {}
        self.typestore = humble_typestore()
        try:
            if self.path.exists():
                if not overwrite:
                    raise BagError(f'output bag {self.path} exists already; remove it or choose '
                                   'another output folder')
                _remove_bag_folder(self.path)
            plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
            self._writer = Writer(self.path, version=8, storage_plugin=plugin)
            if storage == 'mcap':   # labels and masks are long runs of one value: they compress
                self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            self._writer.open()
        except (OSError, WriterError) as exc:
            raise output_error('create the output bag', self.path, exc) from None

    @property
    def file(self) -> Path:
        """The storage file inside the bag folder."""
        return self.path / f'{self.path.name}.{"mcap" if self.storage == "mcap" else "db3"}'

    def write(self, topic: str, msg, log_time_ns: int) -> None:
        """Serialize ``msg`` (a Humble typestore message) to ``topic`` at ``log_time_ns``."""
        msgtype = msg.__msgtype__
        data = self.typestore.serialize_cdr(msg, msgtype)
        try:
            connection = self._connections.get(topic)
            if connection is None:
                connection = self._writer.add_connection(topic, msgtype,
                                                         typestore=self.typestore)
                self._connections[topic] = connection
                self.counts[topic] = 0
            self._writer.write(connection, int(log_time_ns), data)
        except OSError as exc:
            raise output_error('write the output bag', self.file, exc) from None
        self.counts[topic] += 1

    def image(self, pixels, encoding: str, header):
        """A Humble sensor_msgs/Image holding ``pixels`` with ``header``."""
        from seg_perception.ros.conversions import build_image
        return build_image(self.typestore.types[IMAGE], pixels, encoding, header)

    def close(self) -> None:
        """Finish the bag (index, metadata.yaml); safe to call twice.

        OutputError when that fails (a full disk): the storage file is let go of and
        the bag stays without metadata.yaml, as a recording cut short.
        """
        from rosbags.rosbag2 import WriterError
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.close()
        except (OSError, WriterError) as exc:
            with contextlib.suppress(Exception):
                self._writer.abort()
            raise output_error('close the output bag', self.path, exc) from None
        self.closed_cleanly = True


def _remove_bag_folder(path: Path) -> None:
    """Remove an earlier output bag, refusing folders that do not look like one."""
    import shutil
    if not path.is_dir() or not _has_metadata(path) and not storage_files([path]):
        raise BagError(f'{path} exists and is not a bag folder; not removing it')
    unexpected = [p.name for p in path.iterdir()
                  if p.name != 'metadata.yaml' and p.suffix not in ('.mcap', '.db3', '.zstd')]
    if unexpected:
        raise BagError(f'{path} holds files that are not part of a bag '
                       f'({", ".join(sorted(unexpected)[:5])}); not removing it')
    shutil.rmtree(path)
