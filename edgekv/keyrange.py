"""Key-range arithmetic shared by storage, routing, auth and the request layer.

A leaf module: it imports only edgekv.errors, so every layer may use it. A range
is ``[lo, hi)`` over raw key bytes, and ``b""`` as an upper bound means unbounded.
"""

from __future__ import annotations

from edgekv.errors import InvalidArgument


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``.

    Returns b"" (no upper bound) when no such key exists (prefix is all 0xff).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b""
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """The key range [prefix, end) that ``prefix`` covers (end b"" = unbounded)."""
    return prefix, prefix_end(prefix)


def within(start: bytes, end: bytes, lo: bytes, hi: bytes) -> bool:
    """Whether [start, end) lies entirely inside [lo, hi)."""
    return start >= lo and (not hi or (bool(end) and end <= hi))


def scan_bounds(prefix: bytes, start: bytes, end: bytes) -> tuple[bytes, bytes]:
    """The effective [start, end) of a scan request; end b"" means unbounded.

    Raises InvalidArgument when start/end fall outside the prefix's range in a
    way that leaves nothing to scan, or when start >= end.
    """
    lo, hi = start, end
    if prefix:
        lo = max(prefix, start)
        pend = prefix_end(prefix)
        hi = pend if not end else (min(end, pend) if pend else end)
    if hi and lo >= hi:
        raise InvalidArgument(
            f"scan range is empty: start {lo[:64]!r} is not below end {hi[:64]!r}"
        )
    return lo, hi
