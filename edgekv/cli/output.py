"""How the CLI prints results: friendly text for people, JSON for scripts.

JSON conventions (``--json``): every command prints one JSON object per line
on stdout (``scan`` prints one line per item: JSON Lines, so it streams).
Bytes (keys and values) appear as UTF-8 text when they decode, with
``"<field>_encoding": "utf-8"``; otherwise base64 with ``"<field>_encoding":
"base64"``. Versions are ``{"timestamp": int, "origin": str}``.

Friendly output: ``get`` writes the value's raw bytes (so ``edgekv get k > f``
copies it exactly); ``scan`` prints ``key<TAB>value`` lines with invalid UTF-8
and control characters escaped (use ``--json`` for exact bytes); ``status``
prints aligned columns.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from edgekv.client._types import Entry, Member, NodeStatus, Version, WriteResult
from edgekv.consistency import token_text


def render_bytes(data: bytes) -> tuple[str, str]:
    """``(text, encoding)``: the UTF-8 text of ``data``, else its base64 and "base64"."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def decode_rendered(text: str, encoding: str) -> bytes:
    """The inverse of :func:`render_bytes` (for scripts and tests)."""
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {exc}") from None
    if encoding == "utf-8":
        return text.encode("utf-8")
    raise ValueError(f"unknown encoding {encoding!r}")


def bytes_fields(name: str, data: bytes) -> dict[str, str]:
    """``{name: ..., name_encoding: ...}`` for one bytes field."""
    text, encoding = render_bytes(data)
    return {name: text, f"{name}_encoding": encoding}


def version_json(version: Version) -> dict[str, Any]:
    return {"timestamp": version.timestamp, "origin": version.origin}


def entry_json(entry: Entry, *, keys_only: bool = False) -> dict[str, Any]:
    """One read result as a JSON-ready dict (``value`` omitted with ``keys_only``)."""
    out: dict[str, Any] = bytes_fields("key", entry.key)
    if not keys_only:
        out.update(bytes_fields("value", entry.value))
    out["version"] = version_json(entry.version)
    out["expires_at_ms"] = entry.expires_at_ms
    out["served_by"] = entry.served_by
    return out


def write_json(key: bytes, result: WriteResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        **bytes_fields("key", key),
        "version": version_json(result.version),
        "served_by": result.served_by,
    }
    if result.session_token:
        out["session_token"] = token_text(result.session_token)
    if result.receipts or result.not_applied_by:
        out["receipts"] = [dataclasses.asdict(r) for r in result.receipts]
        out["not_applied_by"] = list(result.not_applied_by)
    return out


# What ``status`` counts, said where it is shown: not the keys ``scan`` lists.
KEY_COUNT_MEANING = (
    "RocksDB's estimate of stored records: live keys plus tombstones, expired records not "
    "yet collected and overwritten versions not yet compacted"
)


def status_json(status: NodeStatus, members: Sequence[Member]) -> dict[str, Any]:
    """``status --json``: NodeStatus's fields, ``key_count_estimated`` (always true: see
    KEY_COUNT_MEANING) and ``members``."""
    return {
        **dataclasses.asdict(status),
        "key_count_estimated": True,
        "members": [dataclasses.asdict(m) for m in members],
    }


def dumps(obj: object) -> str:
    """One line of JSON, non-ASCII kept as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


# Control characters, the backslash itself, and (via surrogateescape) bytes that
# are not UTF-8 all print as backslash escapes, so one line stays one item.
_ESCAPES: dict[int, str] = {i: f"\\x{i:02x}" for i in range(32)}
_ESCAPES |= {0x7F: "\\x7f", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
_ESCAPES |= {ord("\\"): "\\\\"}
_ESCAPES |= {0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}


def show_bytes(data: bytes) -> str:
    """``data`` for a terminal: UTF-8, with invalid bytes and control characters escaped."""
    return data.decode("utf-8", "surrogateescape").translate(_ESCAPES)


def describe_write(what: str, key: bytes, result: WriteResult) -> str:
    v = result.version
    line = (
        f"{what} {show_bytes(key)} (version {v.timestamp}@{v.origin}, served by {result.served_by})"
    )
    if result.receipts:
        applied = ", ".join(
            f"{r.node_id} ({r.region}) after {r.applied_after_ms:.1f} ms" for r in result.receipts
        )
        line += f"; applied by {applied}"
    if result.not_applied_by:
        line += f"; NOT applied by {', '.join(result.not_applied_by)} when the wait ended"
    return line


def table(rows: Sequence[Sequence[str]], gap: str = "  ") -> list[str]:
    """Rows as left-aligned columns (the first row is the header); no trailing spaces."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        gap.join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def status_lines(status: NodeStatus, members: Sequence[Member]) -> list[str]:
    """The friendly ``edgekv status`` report (without the metrics summary)."""
    st = status
    durability = "fsync per write (group commit)" if st.sync_writes else "WAL, no fsync"
    lines = [
        f"node      {st.node_id} ({st.region}) in cluster {st.cluster}",
        f"version   edgekv {st.server_version}, read path {st.read_path}",
        f"uptime    {st.uptime_s:.0f} s, ~{st.key_count} records, last seq {st.last_seq}",
        f"durable   {durability}",
        f"records   ~{st.key_count} is {KEY_COUNT_MEANING}; `edgekv scan` lists live keys",
        "",
    ]
    rows = [("NODE", "REGION", "ENDPOINT", "STATE", "RTT ms", "LAG entries", "LAG s")]
    for m in members:
        state = "self" if m.is_self else ("up" if m.reachable else "DOWN")
        rtt = "-" if m.is_self else f"{m.rtt_ms:.2f}"
        lag_e = "-" if m.is_self else str(m.lag_entries)
        lag_s = "-" if m.is_self else f"{m.lag_seconds:.3f}"
        rows.append((m.node_id, m.region, m.endpoint, state, rtt, lag_e, lag_s))
    return lines + table(rows)
