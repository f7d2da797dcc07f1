"""Record and digest functions: the compiled module and its Python twin match the spec.

Each test runs over both implementations through the ``impl`` fixture and compares
the result with a small oracle written here from the layout table in
edgekv/storage/record.py (and the hash description in native/digest.pyx). Two
implementations that each equal the oracle equal each other, outputs and
exception classes alike.
"""

from __future__ import annotations

import ast
import inspect
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgekv
from edgekv import _fallback
from edgekv.errors import CorruptRecord, InvalidArgument
from edgekv.limits import MAX_KEY_BYTES
from edgekv.storage import record

FUNCTIONS = ["decode_record", "encode_record", "record_version", "key_bucket", "version_hash",
             "record_hash", "stream_plain_get", "stream_get_answer"]  # fmt: skip
READER_METHODS = ["Reader.get", "Reader.get_many", "Reader.scan", "Reader.rebind"]
STUB = Path(edgekv.__file__).with_name("_speedups.pyi")
MAX_U64 = 2**64 - 1

# -- the oracle ---------------------------------------------------------------

# format version, flags, timestamp, expires_at_ms, origin length: record.py's table.
HEADER = struct.Struct(">BBQQB")


def spec_encode(
    tombstone: bool, timestamp: int, expires_at_ms: int, origin: bytes, value: bytes
) -> bytes:
    flags = (record.FLAG_TOMBSTONE if tombstone else 0) | (
        record.FLAG_EXPIRES if expires_at_ms else 0
    )
    header = HEADER.pack(record.FORMAT_VERSION, flags, timestamp, expires_at_ms, len(origin))
    return header + origin + value


def spec_fields(buf: bytes) -> tuple[bool, int, int, bytes, bytes] | None:
    """(tombstone, timestamp, expires_at_ms, origin bytes, value), or None if the
    header is invalid (including an origin id that is not ASCII)."""
    if len(buf) < HEADER.size + 1:
        return None
    fmt, flags, timestamp, expires_at_ms, origin_len = HEADER.unpack_from(buf)
    if fmt != record.FORMAT_VERSION or flags & ~record.KNOWN_FLAGS or origin_len == 0:
        return None
    if HEADER.size + origin_len > len(buf):
        return None
    origin = buf[HEADER.size : HEADER.size + origin_len]
    value = buf[HEADER.size + origin_len :]
    if not origin.isascii():
        return None
    if flags & record.FLAG_TOMBSTONE and value:
        return None
    return bool(flags & record.FLAG_TOMBSTONE), timestamp, expires_at_ms, origin, value


FNV_OFFSET, FNV_PRIME, M64 = 0xCBF29CE484222325, 0x100000001B3, MAX_U64


def fnv1a(h: int, data: bytes) -> int:
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & M64
    return h


def fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def spec_version_hash(key: bytes, timestamp: int, origin: bytes) -> int:
    h = fnv1a(fnv1a(FNV_OFFSET, key) ^ 0xFF, timestamp.to_bytes(8, "big"))
    return fmix64(fnv1a(h, origin))


def outcome(fn: Callable[..., Any], *args: Any) -> Any:
    """The result of ``fn(*args)``, or the class of the exception it raised."""
    try:
        return fn(*args)
    except Exception as exc:  # parity compares the class, whatever it is
        return type(exc)


# -- inputs -------------------------------------------------------------------

u64 = st.integers(0, MAX_U64)
origins = st.text(st.characters(max_codepoint=127), min_size=1, max_size=255).map(str.encode)
short_origins = st.text(st.characters(max_codepoint=127), min_size=1, max_size=12).map(str.encode)
record_args = st.tuples(st.booleans(), u64, u64, origins, st.binary(max_size=300)).map(
    lambda a: (a[0], a[1], a[2], a[3], b"" if a[0] else a[4])
)
# Mostly short origins and values so damage lands in the header often.
small_record_args = st.tuples(st.booleans(), u64, u64, short_origins, st.binary(max_size=12)).map(
    lambda a: (a[0], a[1], a[2], a[3], b"" if a[0] else a[4])
)


@st.composite
def damaged_records(draw: st.DrawFn) -> bytes:
    """A valid record, truncated, overwritten in a few places, or extended."""
    buf = bytearray(spec_encode(*draw(small_record_args)))
    how = draw(st.sampled_from(["truncate", "overwrite", "extend"]))
    if how == "truncate":
        del buf[draw(st.integers(0, len(buf) - 1)) :]
    elif how == "overwrite":
        for _ in range(draw(st.integers(1, 3))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    else:
        buf += draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


junk = st.one_of(st.binary(max_size=64), damaged_records())

# One bad argument at a time, with the exception class both implementations raise.
bad_u64 = st.one_of(
    st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64)).map(
        lambda v: (v, OverflowError)
    ),
    st.sampled_from(["1", None, b"1", [1]]).map(lambda v: (v, TypeError)),
)
bad_bytes = st.sampled_from(["x", None, bytearray(b"x"), memoryview(b"x"), 1]).map(
    lambda v: (v, TypeError)
)
bad_origin = st.one_of(
    bad_bytes,
    st.just((b"", InvalidArgument)),
    st.binary(min_size=256, max_size=300).map(lambda v: (v, InvalidArgument)),
)
ARG_INDEX = {"timestamp": 1, "expires_at_ms": 2, "origin": 3, "value": 4}
BAD_ARG = {"timestamp": bad_u64, "expires_at_ms": bad_u64, "origin": bad_origin, "value": bad_bytes}


@st.composite
def encode_bad_args(draw: st.DrawFn) -> tuple[list[Any], type[Exception]]:
    args = list(draw(small_record_args))
    name = draw(st.sampled_from([*BAD_ARG, "tombstone_value"]))
    if name == "tombstone_value":
        args[0], args[4] = True, draw(st.binary(min_size=1, max_size=8))
        return args, InvalidArgument
    bad, exc = draw(BAD_ARG[name])
    args[ARG_INDEX[name]] = bad
    return args, exc


# -- signatures and layout ----------------------------------------------------


def bare(sig: inspect.Signature) -> inspect.Signature:
    """``sig`` without annotations: Cython keeps none, the stub carries them."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty)


def stub_signatures() -> dict[str, tuple[list[tuple[str, Any, str]], str]]:
    """name -> ([(param, default, annotation)], return annotation) from _speedups.pyi."""
    out = {}
    tree = ast.parse(STUB.read_text())
    nodes = [(n.name, n) for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        nodes += [(f"{cls.name}.{n.name}", n) for n in cls.body if isinstance(n, ast.FunctionDef)]
    for name, node in nodes:
        args = node.args.args
        defaults = [inspect.Parameter.empty] * (len(args) - len(node.args.defaults))
        defaults += [ast.literal_eval(d) for d in node.args.defaults]
        params = [
            (a.arg, d, ast.unparse(a.annotation) if a.annotation else "")
            for a, d in zip(args, defaults, strict=True)
        ]
        out[name] = (params, ast.unparse(node.returns) if node.returns else "")
    return out


def annotated(fn: Callable[..., Any]) -> tuple[list[tuple[str, Any, str]], str]:
    """The same shape as stub_signatures() for a Python function."""

    def norm(annotation: Any) -> str:
        if annotation is inspect.Parameter.empty:
            return ""
        return ast.unparse(ast.parse(annotation, mode="eval").body)

    sig = inspect.signature(fn)
    params = [(p.name, p.default, norm(p.annotation)) for p in sig.parameters.values()]
    return params, norm(sig.return_annotation)


def lookup(module: ModuleType, dotted: str) -> Any:
    obj: Any = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", [*FUNCTIONS, *READER_METHODS])
def test_signature_equal_across_impls(name: str) -> None:
    from edgekv import _speedups

    compiled = inspect.signature(lookup(_speedups, name))
    assert bare(compiled) == bare(inspect.signature(lookup(_fallback, name)))


@pytest.mark.parametrize("name", [*FUNCTIONS, "Reader.__init__", *READER_METHODS])
def test_stub_signature_matches_fallback(name: str) -> None:
    assert stub_signatures()[name] == annotated(lookup(_fallback, name))


def test_stub_names_equal_native_exports() -> None:
    from edgekv import _speedups, native

    tree = ast.parse(STUB.read_text())
    stub_names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stub_names |= {
        n.target.id for n in tree.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }  # fmt: skip
    exported = set(native.__all__) - {"ACTIVE"}
    assert stub_names == exported
    assert all(hasattr(_speedups, n) and hasattr(_fallback, n) for n in exported)


def test_record_layout_equals_record_module(impl: ModuleType) -> None:
    layout = dict(impl.RECORD_LAYOUT)
    assert layout.pop("MAX_KEY_BYTES") == MAX_KEY_BYTES
    assert layout == {name: getattr(record, name) for name in layout}
    assert set(layout) == {"FORMAT_VERSION", "FLAG_TOMBSTONE", "FLAG_EXPIRES", "OFF_TIMESTAMP",
                           "OFF_EXPIRES", "OFF_ORIGIN_LEN", "OFF_ORIGIN",
                           "KNOWN_FLAGS", "OFF_FLAGS", "BUCKET_BITS"}  # fmt: skip
    assert HEADER.size == record.OFF_ORIGIN == record.HEADER_FIXED_BYTES


# -- encode / decode ----------------------------------------------------------


@settings(max_examples=200)
@given(args=record_args)
def test_encode_valid_args_matches_spec(impl: ModuleType, args: tuple[Any, ...]) -> None:
    assert impl.encode_record(*args) == spec_encode(*args)


@settings(max_examples=200)
@given(args=record_args)
def test_decode_valid_record_round_trips(impl: ModuleType, args: tuple[Any, ...]) -> None:
    tombstone, timestamp, expires_at_ms, origin, value = args
    buf = spec_encode(*args)
    assert impl.decode_record(buf) == (tombstone, timestamp, expires_at_ms, origin.decode(), value)
    assert impl.record_version(buf) == (timestamp, origin.decode())
    assert impl.record_hash(b"key", buf) == spec_version_hash(b"key", timestamp, origin)


@settings(max_examples=500)
@given(buf=junk)
def test_decode_junk_matches_spec(impl: ModuleType, buf: bytes) -> None:
    fields = spec_fields(buf)
    if fields is None:
        assert outcome(impl.decode_record, buf) is CorruptRecord
        assert outcome(impl.record_version, buf) is CorruptRecord
        assert outcome(impl.record_hash, b"k", buf) is CorruptRecord
        return
    tombstone, timestamp, expires_at_ms, origin, value = fields
    assert impl.record_hash(b"k", buf) == spec_version_hash(b"k", timestamp, origin)
    assert impl.decode_record(buf) == (tombstone, timestamp, expires_at_ms, origin.decode(), value)
    assert impl.record_version(buf) == (timestamp, origin.decode())


@settings(max_examples=300)
@given(case=encode_bad_args())
def test_encode_bad_args_raise_spec_error(
    impl: ModuleType, case: tuple[list[Any], type[Exception]]
) -> None:
    args, expected = case
    with pytest.raises(expected):
        impl.encode_record(*args)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, v: m.decode_record(v),
        lambda m, v: m.record_version(v),
        lambda m, v: m.key_bucket(v),
        lambda m, v: m.record_hash(v, spec_encode(False, 1, 0, b"n", b"")),
        lambda m, v: m.record_hash(b"k", v),
        lambda m, v: m.version_hash(v, 1, b"n"),
        lambda m, v: m.version_hash(b"k", 1, v),
    ],
    ids=["decode", "version", "bucket", "rhash-key", "rhash-record", "vhash-key", "vhash-origin"],
)
@pytest.mark.parametrize(
    "value",
    ["text", None, bytearray(b"\x01"), memoryview(b"\x01"), type("Sub", (bytes,), {})(b"\x01")],
    ids=["str", "none", "bytearray", "memoryview", "bytes-subclass"],
)
def test_non_bytes_argument_raises_type_error(
    impl: ModuleType, call: Callable[[ModuleType, Any], Any], value: Any
) -> None:
    with pytest.raises(TypeError):
        call(impl, value)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.encode_record(False, 1.5, 0, b"n", b"v"),
        lambda m: m.encode_record(False, 1, 2.5, b"n", b"v"),
        lambda m: m.version_hash(b"k", 1.5, b"n"),
    ],
    ids=["encode-timestamp", "encode-expires", "version-hash-timestamp"],
)
def test_float_for_integer_argument_raises_type_error(
    impl: ModuleType, call: Callable[[ModuleType], Any]
) -> None:
    with pytest.raises(TypeError):
        call(impl)


def test_encode_non_ascii_origin_raises_invalid_argument(impl: ModuleType) -> None:
    with pytest.raises(InvalidArgument):
        impl.encode_record(False, 1, 0, b"n\xe9", b"v")


@pytest.mark.parametrize("fn", ["decode_record", "record_version"])
def test_decode_non_ascii_origin_raises_corrupt_record(impl: ModuleType, fn: str) -> None:
    with pytest.raises(CorruptRecord):
        getattr(impl, fn)(spec_encode(False, 1, 0, b"n\xe9", b"v"))


def test_encode_two_bad_args_same_error_across_impls() -> None:
    from edgekv import _speedups

    args = (False, 2**64, 0, "origin-as-str", b"v")
    assert outcome(_speedups.encode_record, *args) is outcome(_fallback.encode_record, *args)


# -- digest hashes -----------------------------------------------------------

# Pinned: nodes of different builds and platforms compare these during anti-entropy.
GOLDEN = [
    (b"", 61392, 0x93B29336EA30B312),
    (b"a", 33442, 0x3E4A5ADBAA91936B),
    (b"user/42", 43857, 0x09C7BE60DC37472F),
    (bytes(range(256)), 8295, 0x1EE9874C341A5416),
]


@pytest.mark.parametrize(("key", "bucket", "vhash"), GOLDEN)
def test_hashes_equal_golden_values(impl: ModuleType, key: bytes, bucket: int, vhash: int) -> None:
    assert impl.key_bucket(key) == bucket
    assert impl.version_hash(key, 123456789 << 16, b"fra-1") == vhash


@settings(max_examples=300)
@given(key=st.binary(max_size=MAX_KEY_BYTES), timestamp=u64, origin=origins)
def test_hashes_match_spec(impl: ModuleType, key: bytes, timestamp: int, origin: bytes) -> None:
    assert impl.key_bucket(key) == fmix64(fnv1a(FNV_OFFSET, key)) >> 48
    assert impl.version_hash(key, timestamp, origin) == spec_version_hash(key, timestamp, origin)


@pytest.mark.parametrize(("timestamp", "exc"), [(-1, OverflowError), (2**64, OverflowError),
                                                ("1", TypeError), (None, TypeError)])  # fmt: skip
def test_version_hash_bad_timestamp_raises(impl: ModuleType, timestamp: Any, exc: type) -> None:
    with pytest.raises(exc):
        impl.version_hash(b"k", timestamp, b"n")
