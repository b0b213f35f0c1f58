"""Writing files so that a crash, a full disk or a failed check never leaves half of one.

Every file the package writes for someone else to read (models, checkpoints, reports,
TensorRT engines, caches) goes through ``replaced_atomically``: the bytes go to a
temporary file beside the target, and only a finished, checked file replaces it, in one
rename. Readers see the old file or the new one, never a mix; a failure leaves the old
file as it was and no temporary behind. Standard library only (the vehicle path uses it).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


def make_readable(path: str) -> None:
    """Give a file the mode a plain open() would have (0666 minus the umask).

    mkstemp creates 0600 files; models, reports and checkpoints are for everyone who can
    read the folder (a model shipped in a package, a report on a shared drive).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def replaced_atomically(path: str, *, durable: bool = False,
                        readable: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path``; the file written there becomes ``path``.

    The rename happens only when the block finishes without an exception (so a check
    inside the block, such as opening the file in ONNX Runtime, can still refuse it).
    ``durable``: fsync the data before the rename, so that a power loss cannot leave
    the new name on an empty file (checkpoints, engines). ``readable``: the mode of a
    plain open() instead of mkstemp's 0600. The folder is created when missing.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.',
                                         suffix='.tmp')
    os.close(handle)
    try:
        yield temporary
        if durable:
            descriptor = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        if readable:
            make_readable(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        # A failed write (ENOSPC, EIO) names no file, and one on the temporary names a
        # file the user never asked for: name the file being written.
        if exc.filename is None or exc.filename == temporary:
            raise _naming(exc, path) from exc
        raise
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _naming(exc: OSError, path: str) -> OSError:
    """``exc`` again (the same errno, so the same OSError subclass) with ``path`` as its file."""
    if exc.errno is None:
        return OSError(f'{exc}: {path!r}')
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), path)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically (see replaced_atomically)."""
    with replaced_atomically(path) as temporary:
        with open(temporary, 'w', encoding='utf-8') as stream:
            stream.write(text)


def write_bytes(path: str, data: bytes, *, durable: bool = False,
                readable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see replaced_atomically)."""
    with replaced_atomically(path, durable=durable, readable=readable) as temporary:
        with open(temporary, 'wb') as stream:
            stream.write(data)
