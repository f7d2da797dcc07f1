"""edgekv.keyrange: key-range arithmetic."""

from __future__ import annotations

from edgekv.keyrange import prefix_end


def test_prefix_end_is_smallest_greater_key() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b""
    assert prefix_end(b"") == b""
