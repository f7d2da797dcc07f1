"""CLI output formatting: bytes in JSON, escaping for terminals, the status table."""

from __future__ import annotations

import json

import pytest

from edgekv.cli import output
from edgekv.client import Entry, Member, NodeStatus, Version, WriteResult


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [(b"hello", "hello", "utf-8"), ("é".encode(), "é", "utf-8"), (b"", "", "utf-8"),
     (b"\xff\x00", "/wA=", "base64")],
)  # fmt: skip
def test_render_bytes_text_when_utf8_else_base64(data: bytes, text: str, encoding: str) -> None:
    assert output.render_bytes(data) == (text, encoding)
    assert output.decode_rendered(text, encoding) == data


def test_decode_rendered_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not base64"):
        output.decode_rendered("@@", "base64")
    with pytest.raises(ValueError, match="unknown encoding"):
        output.decode_rendered("x", "hex")


def test_entry_json_has_encodings_version_and_expiry() -> None:
    entry = Entry(b"k", bytes(range(250, 256)), Version(42, "fra-1"), 1700, "fra-1")
    got = json.loads(output.dumps(output.entry_json(entry)))
    assert got == {
        "key": "k", "key_encoding": "utf-8",
        "value": "+vv8/f7/", "value_encoding": "base64",
        "version": {"timestamp": 42, "origin": "fra-1"},
        "expires_at_ms": 1700, "served_by": "fra-1",
    }  # fmt: skip
    assert "value" not in output.entry_json(entry, keys_only=True)


def test_dumps_is_one_line_and_keeps_non_ascii() -> None:
    line = output.dumps({"v": "é\nx"})
    assert "\n" not in line and "é" in line and json.loads(line) == {"v": "é\nx"}


def test_write_json_and_describe_write() -> None:
    result = WriteResult(Version(7, "n1"), "n1")
    assert output.write_json(b"a", result) == {
        "key": "a", "key_encoding": "utf-8",
        "version": {"timestamp": 7, "origin": "n1"}, "served_by": "n1",
    }  # fmt: skip
    assert output.describe_write("stored", b"a\n", result) == (
        "stored a\\n (version 7@n1, served by n1)"
    )


@pytest.mark.parametrize(
    ("data", "shown"),
    [(b"plain", "plain"), (b"tab\there", "tab\\there"), (b"two\nlines\r", "two\\nlines\\r"),
     (b"bell\x07", "bell\\x07"), (b"back\\slash", "back\\\\slash"), (b"\xff\xfe", "\\xff\\xfe"),
     ("café".encode(), "café"), (b"\x7f", "\\x7f"), (b"", "")],
)  # fmt: skip
def test_show_bytes_escapes_what_would_break_a_line(data: bytes, shown: str) -> None:
    assert output.show_bytes(data) == shown


def test_table_aligns_columns_without_trailing_spaces() -> None:
    lines = output.table([("A", "BB", "C"), ("long", "x", ""), ("y", "zzz", "w")])
    assert lines == ["A     BB   C", "long  x", "y     zzz  w"]
    assert output.table([]) == []


def test_status_lines_and_json() -> None:
    status = NodeStatus("fra-1", "eu-west", "prod", 12.4, 1000, "cython", "0.1.0", 55, False,
                        "", 99)  # fmt: skip
    members = [
        Member("fra-1", "eu-west", "10.0.0.1:7101", True, True, 0.0, 0, 0.0, ""),
        Member("iad-1", "us-east", "10.0.0.2:7101", False, False, 81.234, 12, 3.5, "refused"),
    ]
    lines = output.status_lines(status, members)
    assert lines[0] == "node      fra-1 (eu-west) in cluster prod"
    assert lines[1] == "version   edgekv 0.1.0, read path cython"
    assert "~1000 records, last seq 55" in lines[2] and "no fsync" in lines[3]
    header, me, other = lines[-3:]
    assert header.split() == ["NODE", "REGION", "ENDPOINT", "STATE", "RTT", "ms", "LAG",
                              "entries", "LAG", "s"]  # fmt: skip
    assert other.split() == ["iad-1", "us-east", "10.0.0.2:7101", "DOWN", "81.23", "12", "3.500"]
    assert me.split()[3:] == ["self", "-", "-", "-"]
    assert header.index("STATE") == other.index("DOWN")  # aligned
    data = output.status_json(status, members)
    assert data["hlc_timestamp"] == 99 and data["members"][1]["last_error"] == "refused"
    json.dumps(data)


def test_status_names_what_its_record_count_counts() -> None:
    status = NodeStatus("n1", "local", "test", 1.0, 10, "cython", "0.1.0", 12, False)
    lines = output.status_lines(status, [])
    assert lines[4] == (
        "records   ~10 is RocksDB's estimate of stored records: live keys plus tombstones, "
        "expired records not yet collected and overwritten versions not yet compacted; "
        "`edgekv scan` lists live keys"
    )
    data = output.status_json(status, [])
    assert data["key_count"] == 10 and data["key_count_estimated"] is True  # names kept
