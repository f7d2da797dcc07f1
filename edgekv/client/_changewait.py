"""Waiting for a file to change: inotify on Linux, a 1 ms poll elsewhere.

The embedded reader's catch-up thread sleeps here between catch-ups: it wakes
when the node rewrites its change signal (storage/replica_files.py), when the
interval runs out, or when ``close`` is called. inotify costs nothing while
the node is idle and wakes within microseconds of a write; it is reached
through ctypes, so the SDK needs no extra dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_POLL_S = 0.001


class ChangeWaiter:
    """Blocks in ``wait`` until ``path`` is written, ``timeout_s`` passes, or ``close``.

    ``changed`` (used when inotify is unavailable) says whether the file changed
    since the last call; it is polled every millisecond. One thread waits; any
    thread may call ``close``.
    """

    def __init__(self, path: Path, changed: Callable[[], bool]) -> None:
        self._path = path
        self._changed = changed
        self._wake_r, self._wake_w = os.pipe()
        self._fd = -1
        self._inode = -1
        self.inotify = False
        if sys.platform.startswith("linux"):
            self._arm()

    def _arm(self) -> None:
        """(Re)start watching ``path``: after a start, or once the file was replaced."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            if self._fd < 0:
                fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "inotify_init1 failed")
                self._fd = fd
            mask = _IN_MODIFY | _IN_ATTRIB | _IN_DELETE_SELF | _IN_MOVE_SELF
            if libc.inotify_add_watch(self._fd, os.fsencode(self._path), mask) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {self._path} failed")
            self._inode = os.stat(self._path).st_ino
            self.inotify = True
        except (OSError, AttributeError) as exc:  # AttributeError: no inotify in this libc
            log.info("edgekv embedded: no inotify on %s (%s); polling every 1 ms", self._path, exc)
            self.inotify = False

    def wait(self, timeout_s: float) -> bool:
        """Wait; True when woken by a change (or close), False when the timeout ran out."""
        if self.inotify:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout_s)
            if self._fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._fd, 65536)  # drain: one catch-up covers every write so far
            elif not ready:
                self._rearm_if_replaced()
            return bool(ready)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._changed():
                return True
            ready, _, _ = select.select([self._wake_r], [], [], _POLL_S)
            if ready:
                return True
        return False

    def _rearm_if_replaced(self) -> None:
        try:
            if os.stat(self._path).st_ino != self._inode:
                self._arm()
        except OSError:
            pass

    def close(self) -> None:
        """Wake the waiting thread; release the descriptors once it is gone (``release``)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def release(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
