"""Reading what is left of a damaged bag file: MCAP, rosbag2 sqlite3 and ROS 1.

A recording cut short (recorder killed, disk full, a copy interrupted) lacks the
index or footer that rosbags needs to open it, so rosbags refuses the whole
file. These readers walk the records from the start instead and yield every
message that is complete, then report where and why they stopped:

- MCAP: top-level Schema / Channel / Message records and whole Chunk records
  (none, zstd or lz4 compressed); a chunk cut in the middle is lost entirely.
- sqlite3: the ``messages`` table in row order, read with ``writable_schema`` so
  that SQLite does not reject the file for an index page past its end.
- ROS 1: Connection and MessageData records, also inside bz2 / lz4 / plain chunks.

Each reader gives ``topics`` (name -> (message type, messages found)), a
``typestore`` built from the definitions in the file (Humble's when it has
none), ``messages(topics)`` yielding ``(topic, msgtype, log time ns, raw bytes)``
and ``problem``: why reading stopped early, or None when the file ended cleanly.
"""
from __future__ import annotations

import bz2
import io
import sqlite3
import struct
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from seg_perception.errors import InvalidValueError

MCAP_MAGIC = b'\x89MCAP0\r\n'
ROS1_MAGIC = b'#ROSBAG V2.0\n'

RawMessage = Tuple[str, str, int, bytes]


class _Truncated(Exception):
    """The file ends (or breaks) inside a record."""


def _zstd_decompress(data: bytes, size: int) -> bytes:
    import importlib
    try:        # the module rosbags uses: the standard library's from Python 3.14
        zstd = importlib.import_module('compression.zstd')
    except ImportError:
        zstd = importlib.import_module('backports.zstd')
    return zstd.decompress(data)


def _lz4_decompress(data: bytes, size: int) -> bytes:
    from lz4.frame import decompress
    return decompress(data)


_DECOMPRESS = {'': lambda data, size: data, 'none': lambda data, size: data,
               'zstd': _zstd_decompress, 'lz4': _lz4_decompress,
               'bz2': lambda data, size: bz2.decompress(data)}


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression not in _DECOMPRESS:
        raise _Truncated(f'unsupported chunk compression {compression!r}')
    try:
        raw = _DECOMPRESS[compression](data, size)
    except Exception as exc:  # noqa: BLE001 - each codec has its own error types
        raise _Truncated(f'{compression} chunk does not decompress: {exc}') from None
    if len(raw) != size:
        raise _Truncated(f'chunk holds {len(raw)} bytes after decompression, expected {size}')
    return raw


def _build_typestore(definitions: Dict[str, Tuple[str, str]]):
    """A typestore from {msgtype: (format 'msg'|'idl', text)}; Humble's types as the base."""
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
    typestore = get_typestore(Stores.EMPTY)
    types = dict(get_typestore(Stores.ROS2_HUMBLE).fielddefs)
    for msgtype, (fmt, text) in definitions.items():
        if not text:
            continue
        try:
            types.update(get_types_from_idl(text) if fmt == 'idl' else
                         get_types_from_msg(text, msgtype))
        except Exception:  # noqa: BLE001 - a bad definition: fall back to Humble's type
            continue
    typestore.register(types)
    return typestore


# -- MCAP ---------------------------------------------------------------------------------

class _Cursor:
    """Reads little-endian fields from bytes or a binary file; _Truncated past the end."""

    def __init__(self, data, size: Optional[int] = None):
        self.stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        self.size = len(data) if size is None else size
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > self.size:
            raise _Truncated(f'a record of {size} bytes at byte {self.pos} runs past the end '
                             f'({self.size} bytes)')
        chunk = self.stream.read(size)
        self.pos += size
        return chunk

    def u16(self) -> int:
        return struct.unpack('<H', self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack('<I', self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack('<Q', self.take(8))[0]

    def string(self) -> str:
        return self.take(self.u32()).decode('utf-8', 'replace')

    def at_end(self) -> bool:
        return self.pos >= self.size


class _ScannedFile:
    """A salvage reader that walks the file's records from the start: ``_scan`` yields
    (channel id, log time, data) as the subclass's ``_scan_stream`` reads them."""

    path: Path

    def _scan(self, keep_data: bool) -> Iterator[Tuple[int, int, bytes]]:
        with open(self.path, 'rb') as stream:
            yield from self._scan_stream(stream, keep_data)

    def _scan_stream(self, stream, keep_data: bool) -> Iterator[Tuple[int, int, bytes]]:
        raise NotImplementedError


class McapSalvage(_ScannedFile):
    """The readable part of a damaged MCAP file (ros2 profile)."""

    kind = 'mcap'

    def __init__(self, path: Path):
        self.path = Path(path)
        self.problem: Optional[str] = None
        self.schemas: Dict[int, Tuple[str, str, str]] = {}     # id -> (name, encoding, text)
        self.channels: Dict[int, Tuple[str, str]] = {}          # id -> (topic, msgtype)
        counts: Dict[int, int] = {}
        for channel_id, _, _ in self._scan(keep_data=False):
            counts[channel_id] = counts.get(channel_id, 0) + 1
        self.topics: Dict[str, Tuple[str, int]] = {}
        for channel_id, (topic, msgtype) in self.channels.items():
            previous = self.topics.get(topic, (msgtype, 0))[1]
            self.topics[topic] = (msgtype, previous + counts.get(channel_id, 0))
        definitions = {name: ('idl' if encoding == 'ros2idl' else 'msg', text)
                       for name, encoding, text in self.schemas.values()}
        self.typestore = _build_typestore(definitions)

    def _records(self, cursor: _Cursor) -> Iterator[Tuple[int, bytes]]:
        while not cursor.at_end():
            opcode = cursor.take(1)[0]
            yield opcode, cursor.take(cursor.u64())

    def _handle(self, opcode: int, body: bytes, keep_data: bool):
        """Update schemas/channels; return (channel, log time, data) for a message."""
        record = _Cursor(body)
        if opcode == 0x03:
            schema_id = record.u16()
            name, encoding = record.string(), record.string()
            self.schemas[schema_id] = (name, encoding, record.take(record.u32()).decode(
                'utf-8', 'replace'))
        elif opcode == 0x04:
            channel_id, schema_id = record.u16(), record.u16()
            topic = record.string()
            msgtype = self.schemas.get(schema_id, ('',))[0]
            self.channels[channel_id] = (topic, msgtype)
        elif opcode == 0x05:
            channel_id = record.u16()
            record.u32()                                  # sequence
            log_time = record.u64()
            record.u64()                                  # publish time
            return channel_id, log_time, body[record.pos:] if keep_data else b''
        return None

    def _scan_stream(self, stream, keep_data: bool) -> Iterator[Tuple[int, int, bytes]]:
        cursor = _Cursor(stream, self.path.stat().st_size)
        if cursor.take(len(MCAP_MAGIC)) != MCAP_MAGIC:
            self.problem = 'not an MCAP file (bad magic bytes)'
            return
        try:
            for opcode, body in self._records(cursor):
                if opcode == 0x0F or opcode == 0x02:          # data end, footer
                    return
                if opcode == 0x06:
                    chunk = _Cursor(body)
                    chunk.u64(), chunk.u64()                  # message start, end time
                    size = chunk.u64()
                    chunk.u32()                               # crc
                    compression = chunk.string()
                    records = _decompress(chunk.take(chunk.u64()), compression, size)
                    for inner_opcode, inner in self._records(_Cursor(records)):
                        message = self._handle(inner_opcode, inner, keep_data)
                        if message:
                            yield message
                    continue
                message = self._handle(opcode, body, keep_data)
                if message:
                    yield message
            self.problem = 'the file ends without the MCAP footer (recording not closed?)'
        except _Truncated as exc:
            self.problem = f'damaged or cut short: {exc}'

    def messages(self, topics) -> Iterator[RawMessage]:
        wanted = set(topics)
        for channel_id, log_time, raw in self._scan(keep_data=True):
            topic, msgtype = self.channels.get(channel_id, ('', ''))
            if topic in wanted:
                yield topic, msgtype, log_time, raw


# -- sqlite3 ------------------------------------------------------------------------------

class Sqlite3Salvage:
    """The readable rows of a damaged rosbag2 sqlite3 database."""

    kind = 'sqlite3'

    def __init__(self, path: Path):
        self.path = Path(path)
        self.problem: Optional[str] = None
        try:
            self.connection = sqlite3.connect(f'file:{self.path}?mode=ro', uri=True)
            # The schema may name an index whose pages were cut off; without this
            # SQLite calls the whole file malformed.
            self.connection.execute('PRAGMA writable_schema=ON')
            rows = self.connection.execute('SELECT id, name, type FROM topics').fetchall()
        except sqlite3.Error as exc:
            raise _Truncated(f'the topics table cannot be read: {exc}') from None
        self.topic_ids = {row[0]: (row[1], row[2]) for row in rows}
        counts: Dict[int, int] = {}
        for topic_id, _, _ in self._rows('SELECT topic_id, timestamp, 0 FROM messages ORDER BY id'):
            counts[topic_id] = counts.get(topic_id, 0) + 1
        self.topics = {name: (msgtype, counts.get(topic_id, 0))
                       for topic_id, (name, msgtype) in self.topic_ids.items()}
        definitions = {}
        try:
            for msgtype, encoding, text in self.connection.execute(
                    'SELECT topic_type, encoding, encoded_message_definition '
                    'FROM message_definitions'):
                definitions[msgtype] = ('idl' if encoding == 'ros2idl' else 'msg', text)
        except sqlite3.Error:
            pass        # older bags have no definitions table
        self.typestore = _build_typestore(definitions)

    def _rows(self, query: str) -> Iterator[tuple]:
        try:
            for row in self.connection.execute(query):
                yield row
        except sqlite3.Error as exc:
            self.problem = f'the database is damaged (cut short?): {exc}'

    def messages(self, topics) -> Iterator[RawMessage]:
        wanted = set(topics)
        self.problem = None
        for topic_id, log_time, raw in self._rows(
                'SELECT topic_id, timestamp, data FROM messages ORDER BY id'):
            topic, msgtype = self.topic_ids.get(topic_id, ('', ''))
            if topic in wanted:
                yield topic, msgtype, int(log_time), bytes(raw)

    def close(self) -> None:
        self.connection.close()


# -- ROS 1 --------------------------------------------------------------------------------

def _ros1_fields(header: bytes) -> Dict[str, bytes]:
    fields, cursor = {}, _Cursor(header)
    while not cursor.at_end():
        name, _, value = cursor.take(cursor.u32()).partition(b'=')
        fields[name.decode('ascii', 'replace')] = value
    return fields


class Ros1Salvage(_ScannedFile):
    """The readable records of a damaged or unindexed ROS 1 bag."""

    kind = 'ros1'

    def __init__(self, path: Path):
        self.path = Path(path)
        self.problem: Optional[str] = None
        self.connections: Dict[int, Tuple[str, str, str]] = {}   # id -> topic, type, msgdef
        counts: Dict[int, int] = {}
        for conn, _, _ in self._scan(keep_data=False):
            counts[conn] = counts.get(conn, 0) + 1
        self.topics: Dict[str, Tuple[str, int]] = {}
        for conn, (topic, msgtype, _) in self.connections.items():
            previous = self.topics.get(topic, (msgtype, 0))[1]
            self.topics[topic] = (msgtype, previous + counts.get(conn, 0))
        self.typestore = _build_typestore({t: ('msg', d) for _, t, d in
                                           self.connections.values()})

    def _records(self, cursor: _Cursor) -> Iterator[Tuple[Dict[str, bytes], bytes]]:
        while not cursor.at_end():
            header = _ros1_fields(cursor.take(cursor.u32()))
            yield header, cursor.take(cursor.u32())

    def _handle(self, header, data, keep_data):
        from rosbags.typesys.msg import normalize_msgtype
        op = header.get('op', b'\x00')[:1]
        if op == b'\x07':
            conn = struct.unpack('<I', header['conn'])[0]
            fields = _ros1_fields(data)
            msgtype = normalize_msgtype(fields.get('type', b'').decode())
            self.connections[conn] = (header.get('topic', b'').decode(), msgtype,
                                      fields.get('message_definition', b'').decode())
        elif op == b'\x02':
            conn = struct.unpack('<I', header['conn'])[0]
            sec, nsec = struct.unpack('<II', header['time'])
            return conn, sec * 1_000_000_000 + nsec, data if keep_data else b''
        return None

    def _scan_stream(self, stream, keep_data: bool) -> Iterator[Tuple[int, int, bytes]]:
        cursor = _Cursor(stream, self.path.stat().st_size)
        if cursor.take(len(ROS1_MAGIC)) != ROS1_MAGIC:
            self.problem = 'not a ROS 1 bag (bad magic line)'
            return
        try:
            for header, body in self._records(cursor):
                if header.get('op', b'')[:1] == b'\x05':          # chunk
                    compression = header.get('compression', b'none').decode()
                    size = struct.unpack('<I', header['size'])[0]
                    records = _decompress(body, compression, size)
                    for inner_header, inner in self._records(_Cursor(records)):
                        message = self._handle(inner_header, inner, keep_data)
                        if message:
                            yield message
                    continue
                message = self._handle(header, body, keep_data)
                if message:
                    yield message
        except (_Truncated, KeyError, struct.error) as exc:
            self.problem = f'damaged or cut short: {exc}'

    def messages(self, topics) -> Iterator[RawMessage]:
        wanted = set(topics)
        for conn, log_time, raw in self._scan(keep_data=True):
            topic, msgtype, _ = self.connections.get(conn, ('', '', ''))
            if topic in wanted:
                yield topic, msgtype, log_time, raw


def salvage_reader(path: Path):
    """The salvage reader for one storage file, chosen by its content."""
    path = Path(path)
    with open(path, 'rb') as stream:
        head = stream.read(16)
    try:
        if head.startswith(MCAP_MAGIC):
            return McapSalvage(path)
        if head.startswith(ROS1_MAGIC):
            return Ros1Salvage(path)
        if head.startswith(b'SQLite format 3'):
            return Sqlite3Salvage(path)
    except _Truncated as exc:
        raise InvalidValueError(f'{path}: {exc}') from None
    raise InvalidValueError(f'{path}: neither MCAP, sqlite3 nor a ROS 1 bag (first bytes '
                            f'{head[:8]!r})')


def storage_files(paths: List[Path]) -> List[Path]:
    """The storage files among ``paths`` (folders are searched one level deep)."""
    files: List[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.suffix in ('.mcap', '.db3', '.bag') and p.is_file())
        else:
            files.append(path)
    return files


__all__ = ['McapSalvage', 'Sqlite3Salvage', 'Ros1Salvage', 'salvage_reader', 'storage_files']
