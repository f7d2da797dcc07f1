"""What a node leaves in its data directory for embedded readers: a manifest and a change signal.

An application on the PoP's machine (or in its pod) may open the node's RocksDB
as a read-only secondary (edgekv/client/embedded.py). It needs two things the
RocksDB files do not say, and the node writes both next to them:

``EDGEKV-EMBEDDED.json`` (the manifest), written atomically at every start:
the node id, its region, the cluster's regions and placement rules. The reader
applies the same residency rule as the node from it: a key this region may not
hold is never answered from the files, but sent to the network path.

``EDGEKV-SIGNAL`` (the change signal): 32 bytes, rewritten in place with one
``pwrite`` after every commit that changed data: the RocksDB sequence number
after the commit, the wall time of the commit (ns), the manifest's epoch, and
the sequence number again. A reader maps it read-only: it compares the
sequence number with the one it has caught up to (its staleness), wakes on the
write (inotify on Linux), and reloads the manifest when the epoch changes. The
repeated sequence number detects a torn read of the mapping (retry).

Why a file rewritten with ``pwrite`` and not a shared mapping the node writes
into: inotify does not see writes through a mapping, so readers would have to
poll; and why not a notification stream (a socket per reader): it would cost
the node a send per reader per commit and a connection to manage, where one
``pwrite`` serves any number of readers (3-8 µs per commit, measured by
bench/e2e/embedded.py on a loaded 2-core machine).

This module is shared by the node and the SDK, so it imports neither RocksDB
nor anything of the node's.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from edgekv.errors import FailedPrecondition

MANIFEST_NAME = "EDGEKV-EMBEDDED.json"
SIGNAL_NAME = "EDGEKV-SIGNAL"
MANIFEST_FORMAT = 1
# seq, commit wall time ns, manifest epoch, seq again (torn-read check). Big-endian like
# every integer edgekv stores (storage/record.py).
SIGNAL = struct.Struct(">QQQQ")


@dataclass(frozen=True, slots=True)
class Manifest:
    """Who wrote a data directory and which keys it may hold (the node's placement rules).

    ``epoch`` identifies one start of the node: the change signal carries it, so
    a reader notices a restart (with possibly changed rules) on its next read.
    ``placement`` is (prefix, allowed regions) per rule; ``regions`` every region.
    """

    node_id: str
    region: str
    cluster: str
    regions: tuple[str, ...]
    placement: tuple[tuple[bytes, tuple[str, ...]], ...]
    epoch: int
    # The node's request limits that a reader applies too (limits.py, config ``limits``).
    max_batch_ops: int
    max_scan_limit: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "node_id": self.node_id,
                "region": self.region,
                "cluster": self.cluster,
                "regions": list(self.regions),
                # Prefixes are bytes: hex keeps them exact whatever they contain.
                "placement": [
                    {"prefix": prefix.hex(), "regions": list(regions)}
                    for prefix, regions in self.placement
                ],
                "epoch": self.epoch,
                "max_batch_ops": self.max_batch_ops,
                "max_scan_limit": self.max_scan_limit,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        """Parse a manifest; FailedPrecondition naming ``where`` if it is not one."""
        try:
            doc = json.loads(text)
            if doc.get("format") != MANIFEST_FORMAT:
                raise FailedPrecondition(
                    f"{where}: manifest format {doc.get('format')!r}; this SDK reads "
                    f"{MANIFEST_FORMAT}"
                )
            return cls(
                node_id=str(doc["node_id"]),
                region=str(doc["region"]),
                cluster=str(doc["cluster"]),
                regions=tuple(str(r) for r in doc["regions"]),
                placement=tuple(
                    (bytes.fromhex(rule["prefix"]), tuple(str(r) for r in rule["regions"]))
                    for rule in doc["placement"]
                ),
                epoch=int(doc["epoch"]),
                max_batch_ops=int(doc["max_batch_ops"]),
                max_scan_limit=int(doc["max_scan_limit"]),
            )
        except FailedPrecondition:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FailedPrecondition(f"{where}: not an edgekv manifest ({exc})") from exc


def write_manifest(data_dir: Path, manifest: Manifest) -> None:
    """Replace ``data_dir``'s manifest atomically (write aside, fsync, rename)."""
    target = data_dir / MANIFEST_NAME
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    os.chmod(target, 0o644)  # readable by a reader running as another user of the group


def read_manifest(data_dir: Path) -> Manifest:
    """The manifest of ``data_dir``; FailedPrecondition if missing or unreadable."""
    path = data_dir / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FailedPrecondition(
            f"{data_dir} has no {MANIFEST_NAME}: not the data_dir of an edgekv node that "
            f"has started (with this version)"
        ) from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {path}: {exc}") from exc
    return Manifest.from_json(text, path)


class SignalWriter:
    """The node's side of the change signal: one ``pwrite`` of 32 bytes per publish.

    Safe to call from any thread (``pwrite`` at offset 0 is one syscall); the
    engine calls ``publish`` under its write lock, after the commit.
    """

    def __init__(self, data_dir: Path, epoch: int) -> None:
        self._epoch = epoch
        self._fd: int | None = os.open(data_dir / SIGNAL_NAME, os.O_RDWR | os.O_CREAT, 0o644)

    def publish(self, seq: int) -> None:
        """Tell readers that the data changed up to RocksDB sequence number ``seq``."""
        fd = self._fd
        if fd is not None:
            os.pwrite(fd, SIGNAL.pack(seq, time.time_ns(), self._epoch, seq), 0)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class SignalReader:
    """A reader's read-only mapping of the change signal. ``read`` costs a struct unpack."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / SIGNAL_NAME
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise FailedPrecondition(f"cannot open {path}: {exc}") from exc
        try:
            st = os.fstat(fd)
            if st.st_size < SIGNAL.size:
                raise FailedPrecondition(f"{path} is {st.st_size} bytes; expected {SIGNAL.size}")
            self._map = mmap.mmap(fd, SIGNAL.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.path = path
        self.inode = st.st_ino

    def read(self) -> tuple[int, int, int]:
        """(seq, commit wall time ns, epoch) as last published."""
        unpack = SIGNAL.unpack_from
        for _ in range(100):
            seq, wall_ns, epoch, again = unpack(self._map, 0)
            if seq == again:
                return seq, wall_ns, epoch
        return seq, wall_ns, epoch  # a writer storm: any consistent-enough answer will do

    def close(self) -> None:
        self._map.close()
