"""A build lock between processes: one builds, the others wait for its result.

Used by the engine cache so that two nodes starting together on a vehicle do not both
spend minutes building the same TensorRT engine. Standard library only (POSIX flock).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from typing import Optional

from seg_perception.errors import SegPerceptionError

LOG = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 1800.0     # a TensorRT build on a Jetson can take many minutes


class LockTimeoutError(SegPerceptionError, TimeoutError):
    """Another process held the build lock for longer than the timeout."""


class BuildLock:
    """An exclusive ``fcntl.flock`` on a lock file, waited for up to ``timeout`` seconds.

    The holder writes its pid and host into the file so that a waiting process can
    say who it waits for. The lock dies with its process, so a crashed build never
    leaves a stale lock behind (the file itself stays, unlocked).
    """

    def __init__(self, path: str, timeout: float = DEFAULT_LOCK_TIMEOUT_S, what: str = '',
                 poll_s: float = 0.1):
        self.path = path
        self.timeout = float(timeout)
        self.what = what or path
        self.poll_s = poll_s
        self.waited_s = 0.0
        self.contended = False           # another process held the lock when we came
        self._fd: Optional[int] = None

    def holder(self) -> str:
        try:
            with open(self.path, encoding='utf-8') as stream:
                return stream.read().strip() or 'unknown'
        except OSError:
            return 'unknown'

    def __enter__(self) -> 'BuildLock':
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            waited = time.monotonic() - start
            if waited >= self.timeout:
                os.close(fd)
                raise LockTimeoutError(
                    f'gave up after {waited:.0f} s waiting for the build lock {self.path} '
                    f'(held by {self.holder()}) for {self.what}; another process is building '
                    'it. Wait for it to finish, or stop it, then retry')
            self.contended = True
            if not announced:
                LOG.info('waiting for %s, which another process (%s) is building',
                         self.what, self.holder())
                announced = True
            time.sleep(self.poll_s)
        self.waited_s = time.monotonic() - start
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()} since '
                     f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n'.encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
