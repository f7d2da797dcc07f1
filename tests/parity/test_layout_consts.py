"""The compiled module's constants are record.py's: native/consts.pxi mirrors LAYOUT.

Checked against the values compiled into edgekv._speedups at runtime (its
RECORD_LAYOUT is built from the consts.pxi enum), and against what the
compiled functions do with bytes, so a constant changed on one side only fails
here instead of silently misreading records or bucketing keys differently.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from edgekv.limits import MAX_KEY_BYTES
from edgekv.storage import record

CONSTS_PXI = Path(__file__).resolve().parents[2] / "native" / "consts.pxi"


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    return pytest.importorskip("edgekv._speedups")


def test_compiled_layout_equals_record_layout(compiled: ModuleType) -> None:
    assert compiled.RECORD_LAYOUT == {**record.LAYOUT, "MAX_KEY_BYTES": MAX_KEY_BYTES}


def test_every_consts_pxi_constant_is_reported(compiled: ModuleType) -> None:
    # A constant added to consts.pxi but not to RECORD_LAYOUT would escape the check above.
    declared = dict(re.findall(r"^\s+([A-Z][A-Z0-9_]*) = (0x[0-9a-fA-F]+|\d+)\s*$",
                               CONSTS_PXI.read_text(), re.MULTILINE))  # fmt: skip
    assert declared, f"no constants found in {CONSTS_PXI}"
    assert {name: int(value, 0) for name, value in declared.items()} == compiled.RECORD_LAYOUT


def test_compiled_record_bytes_match_record_accessors(compiled: ModuleType) -> None:
    raw = compiled.encode_record(False, 0x0102030405060708, 1234, b"fra-1", b"value")
    assert raw[0] == record.FORMAT_VERSION
    assert raw[record.OFF_FLAGS] == record.FLAG_EXPIRES
    assert record.timestamp_of(raw) == 0x0102030405060708
    assert record.expiry_of(raw) == 1234
    assert not record.is_tombstone(raw)
    assert record.unpack_version(record.packed_version(raw)) == (0x0102030405060708, "fra-1")
    dead = compiled.encode_record(True, 7, 0, b"n", b"")
    assert record.is_tombstone(dead) and record.expiry_of(dead) is None
    assert len(dead) == record.HEADER_FIXED_BYTES + 1


def test_compiled_key_bucket_uses_bucket_bits(compiled: ModuleType) -> None:
    buckets = {compiled.key_bucket(b"k%d" % i) for i in range(4096)}
    assert max(buckets) < 1 << record.BUCKET_BITS
    assert max(buckets) >= 1 << (record.BUCKET_BITS - 1)  # the top bit is in use
