"""Small disks for local nodes: a tmpfs of a few MiB on a data directory, and filling it.

The torture suite's disk fault and the full-disk regression test use these to
run a real node out of space (ENOSPC from RocksDB's own writes). Mounting needs
root, outside a sandbox that forbids it; ``mount_tmpfs`` raises QuotaUnavailable
(with the reason) where it cannot, so callers skip or leave the fault out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

FILLER = "edgekv-disk-filler"


class QuotaUnavailable(RuntimeError):
    """A tmpfs cannot be mounted here; the message says why."""


def can_mount() -> bool:
    """Whether this process may try to mount file systems (root, with ``mount``)."""
    return os.geteuid() == 0 and shutil.which("mount") is not None


def mount_tmpfs(directory: Path, size_mb: int) -> Path:
    """Mount a ``size_mb`` tmpfs on ``directory`` (created); raises QuotaUnavailable."""
    if not can_mount():
        raise QuotaUnavailable("mounting a tmpfs needs root and the mount command")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise QuotaUnavailable(f"mount -t tmpfs on {directory} failed: {done.stderr.strip()}")
    return directory


def unmount(directories: Iterable[Path]) -> None:
    """Lazily unmount each directory (a node may still hold files open there)."""
    for directory in directories:
        subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True)


def fill(directory: Path) -> int:
    """Write a file that takes every free byte of ``directory``'s file system; its size."""
    fd = os.open(directory / FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for size in (2**20, 2**12, 1):  # then the last bytes
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    written += os.write(fd, block)
    finally:
        os.close(fd)
    return written


def unfill(directory: Path) -> None:
    """Remove what ``fill`` wrote."""
    (directory / FILLER).unlink(missing_ok=True)
