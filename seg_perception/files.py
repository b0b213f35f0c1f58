"""Writing files so that a crash, a full disk or a failed check never leaves half of one.

Every file the package writes for someone else to read (models, checkpoints, reports,
TensorRT engines, caches) goes through ``replaced_atomically``: the bytes go to a
temporary file beside the target, and only a finished, checked file replaces it, in one
rename. Readers see the old file or the new one, never a mix; a failure leaves the old
file as it was and no temporary behind. Only a killed process (kill -9, power loss) leaves
its temporary: ``remove_stale_temporaries`` clears those once their writer is gone.
Standard library only (the vehicle path uses it).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from typing import Iterator, List, Sequence

# A temporary is ".<target>.<writer's PID>.<8 random characters>.tmp" (mkstemp's random part);
# earlier versions wrote ".<target>.<8 random characters>.tmp", without the PID.
_RANDOM = r'[a-z0-9_]{8}\.tmp'
_WITH_PID = re.compile(r'(\d+)\.' + _RANDOM)
_WITHOUT_PID = re.compile(_RANDOM)
# A temporary untouched this long whose writer's PID is gone is stale. The wait covers a
# writer on another machine sharing the folder, whose PID means nothing here: a live one
# keeps touching its file.
STALE_AFTER_S = 60.0
# Without a PID only the age tells: no write of ours takes an hour without touching its file.
STALE_UNNAMED_AFTER_S = 3600.0


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
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f'.{os.path.basename(path)}.{os.getpid()}.', suffix='.tmp')
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


def _process_is_gone(pid: int) -> bool:
    if pid <= 0:
        return False                    # not a process ID (0 and -1 signal groups)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:                     # alive, but another user's (EPERM)
        return False
    return False


def _stale(name: str, target: str, age: float) -> bool:
    """Whether ``name`` is a temporary of ``target`` left by a writer that is gone."""
    rest = name[len(target) + 2:] if name.startswith(f'.{target}.') else None
    if rest is None:
        return False
    with_pid = _WITH_PID.fullmatch(rest)
    if with_pid:
        return age >= STALE_AFTER_S and _process_is_gone(int(with_pid.group(1)))
    return _WITHOUT_PID.fullmatch(rest) is not None and age >= STALE_UNNAMED_AFTER_S


def remove_stale_temporaries(folder: str, targets: Sequence[str]) -> List[str]:
    """Delete the temporaries that writes of ``targets`` (file names in ``folder``) left
    behind when their process was killed; return their paths.

    Only names of this module's form for those targets count, and only once their writer
    is gone: a temporary whose PID is alive (another run writing now) is left alone.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    now = time.time()
    for name in names:
        path = os.path.join(folder, name)
        try:
            age = now - os.lstat(path).st_mtime
        except FileNotFoundError:        # its writer just renamed or removed it
            continue
        if any(_stale(name, target, age) for target in targets) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


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
