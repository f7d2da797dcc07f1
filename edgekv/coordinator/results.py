"""Plain results of the request layer: what every front door turns into its own wire form.

A found value is a ``storage.record.Item``-shaped tuple ``(value, timestamp,
origin, expires_at_ms)`` exactly as the native reader returns it, so the local
read path allocates nothing extra.
"""

from __future__ import annotations

from typing import NamedTuple

from edgekv.replication.receipts import Receipt
from edgekv.storage.record import Item, ScanItem, Version

# (value, timestamp, origin, expires_at_ms), or None when absent, deleted or expired.
Found = Item | tuple[bytes, int, str, int] | None


class GetResult(NamedTuple):
    """One key's value (``found`` None when absent) and the node that answered.

    ``session_token`` is set when the call asked for a level or carried a token
    (coordinator/session.py): the call's token merged with the version read.
    """

    found: Found
    served_by: str
    session_token: bytes = b""


class BatchGetResult(NamedTuple):
    """Values in request order (None where absent) and the node that assembled them.

    ``read_by`` names, per position, the node that read that key when the batch was
    split over placements; None when ``served_by`` read every key.
    """

    found: list[Found]
    served_by: str
    read_by: list[str] | None = None
    session_token: bytes = b""  # as GetResult's


class WriteAck(NamedTuple):
    """An acknowledged Put, Delete or Write: its version and the node that applied it.

    With ``await_replicas``: the PoPs that applied it in the order they did
    (``receipts``), and the awaited ones that had not when the wait ended.
    """

    version: Version
    served_by: str
    receipts: tuple[Receipt, ...] = ()
    not_applied_by: tuple[str, ...] = ()


class ScanResult(NamedTuple):
    """A page of a scan; ``next_page_token`` b"" when the range is done.

    ``held_by`` names, per item, the node that served it when the range was
    stitched from several PoPs; None when ``served_by`` served every item.
    """

    items: list[ScanItem]  # value b"" in a keys-only scan
    next_page_token: bytes
    served_by: str
    held_by: list[str] | None = None
    session_token: bytes = b""  # as GetResult's
    watch_token: bytes = b""  # a Watch resume token taken before the page was read


class ChangeEvent(NamedTuple):
    """One change seen by a Watch: a put or a delete (tombstone) of ``key``.

    ``local`` is whether the serving node accepted the write itself (not
    replicated from a peer); ``served_by`` is the node whose feed saw it.
    ``resume_token`` resumes a Watch after this event (b"" where the Watch
    cannot be resumed); a ``progress`` event carries only a fresh token.
    """

    key: bytes
    value: bytes
    timestamp: int
    origin: str
    deleted: bool
    expires_at_ms: int
    local: bool
    served_by: str
    resume_token: bytes = b""
    progress: bool = False
