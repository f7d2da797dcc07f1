"""KV.Stream's LOCAL get on the wire: both implementations agree with protobuf.

``stream_plain_get`` must never read a request differently from protobuf: it
returns (id, timeout_ms, key) only for a StreamRequest protobuf decodes into a
get that sets nothing but its key, and None for everything else (the node then
decodes with protobuf). ``stream_get_answer`` must write the very bytes protobuf
writes for the answer KVMessages fills, so a client cannot tell them apart.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv.coordinator import GetResult
from edgekv.server.kv_messages import KVMessages
from edgekv.v1 import kv_pb2

MAX_U64 = 2**64 - 1
ids = st.integers(0, MAX_U64)
timeouts = st.integers(0, 2**32 - 1)
keys = st.binary(min_size=1, max_size=1100)
node_ids = st.text(min_size=0, max_size=40)
Op = kv_pb2.StreamRequest


def plain(request_id: int, timeout_ms: int, key: bytes) -> bytes:
    get = kv_pb2.GetRequest(key=key)
    return kv_pb2.StreamRequest(id=request_id, timeout_ms=timeout_ms, get=get).SerializeToString()


def protobuf_reading(raw: bytes) -> tuple[int, int, bytes] | None:
    """What protobuf makes of ``raw``, as (id, timeout_ms, key) when it is a plain get."""
    try:
        request = kv_pb2.StreamRequest.FromString(raw)
    except DecodeError:
        return None
    if request.WhichOneof("op") != "get" or request.get.consistency or request.get.session_token:
        return None
    return request.id, request.timeout_ms, request.get.key


other_ops = st.one_of(
    st.builds(lambda k, c: Op(id=1, get=kv_pb2.GetRequest(key=k, consistency=c)),
              keys, st.integers(1, 3)),
    st.builds(lambda k, t: Op(id=2, get=kv_pb2.GetRequest(key=k, session_token=t)),
              keys, st.binary(min_size=1, max_size=30)),
    st.builds(lambda k, v: kv_pb2.StreamRequest(id=3, put=kv_pb2.PutRequest(key=k, value=v)),
              keys, st.binary(max_size=30)),
    st.builds(lambda i: kv_pb2.StreamRequest(id=4, cancel=i), ids),
    st.builds(lambda ks: kv_pb2.StreamRequest(id=5, batch_get=kv_pb2.BatchGetRequest(keys=ks)),
              st.lists(keys, max_size=3)),
    st.just(kv_pb2.StreamRequest(id=6)),
)  # fmt: skip


@settings(max_examples=300)
@given(request_id=ids, timeout_ms=timeouts, key=keys)
def test_plain_get_is_read_as_protobuf_reads_it(
    impl: ModuleType, request_id: int, timeout_ms: int, key: bytes
) -> None:
    expected = (request_id, timeout_ms, key)
    assert impl.stream_plain_get(plain(request_id, timeout_ms, key)) == expected


@settings(max_examples=200)
@given(message=other_ops)
def test_every_other_operation_is_left_to_protobuf(
    impl: ModuleType, message: kv_pb2.StreamRequest
) -> None:
    assert impl.stream_plain_get(message.SerializeToString()) is None


@settings(max_examples=500)
@given(raw=st.one_of(
    st.binary(max_size=64),
    # a plain get with bytes spliced in: duplicated, unknown or truncated fields
    st.builds(lambda r, at, junk: r[:at] + junk + r[at:],
              st.builds(plain, ids, timeouts, st.binary(max_size=20)),
              st.integers(0, 40), st.binary(max_size=12)),
))  # fmt: skip
def test_any_bytes_are_never_read_differently_from_protobuf(impl: ModuleType, raw: bytes) -> None:
    ours = impl.stream_plain_get(raw)
    if ours is not None:
        assert ours == protobuf_reading(raw)


def test_what_it_leaves_to_protobuf() -> None:
    from edgekv import _fallback, _speedups

    ok = plain(7, 250, b"k")
    cases = {
        "an empty get (no key)": bytes.fromhex("0807") + b"\x1a\x00",
        "no operation": bytes.fromhex("0807"),
        "the id twice": bytes.fromhex("0807") + ok,
        "a timeout over 32 bits (protobuf truncates it)": bytes.fromhex("0807")
        + b"\x10\x80\x80\x80\x80\x10" + b"\x1a\x03\x0a\x01k",
        "a truncated key": ok[:-1],
        "an unknown field": ok + b"\x78\x01",
        # padded varints in tags and lengths, which upb refuses (helper-38's review)
        "a 6-byte id tag": bytes.fromhex("888080808000051a030a016b"),
        "a 6-byte get length": bytes.fromhex("1a8380808080000a016b"),
        "a 6-byte key tag": bytes.fromhex("1a088a8080808000016b"),
        "a 6-byte key length": bytes.fromhex("1a080a8180808080006b"),
        "a padded 2-byte key length": bytes.fromhex("1a040a81006b"),
    }  # fmt: skip
    for impl in (_speedups, _fallback):
        assert impl.stream_plain_get(ok) == (7, 250, b"k")
        for why, raw in cases.items():
            assert impl.stream_plain_get(raw) is None, why


found_items = st.one_of(
    st.none(),
    st.tuples(st.binary(max_size=300), st.integers(0, MAX_U64),
              st.text(max_size=40), st.integers(0, MAX_U64)),
)  # fmt: skip


@settings(max_examples=400)
@given(request_id=ids, found=found_items, served_by=node_ids)
def test_answer_is_the_bytes_protobuf_writes(
    impl: ModuleType,
    request_id: int,
    found: tuple[bytes, int, str, int] | None,
    served_by: str,
) -> None:
    expected = kv_pb2.StreamResponse(id=request_id)
    KVMessages._fill_get(GetResult(found, served_by), expected.get)
    assert impl.stream_get_answer(request_id, found, served_by) == expected.SerializeToString()


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((-1, None, "n"), OverflowError),
        ((2**64, None, "n"), OverflowError),
        ((1.0, None, "n"), TypeError),
        ((1, None, b"n"), TypeError),
        ((1, (None, 1, "o", 0), "n"), TypeError),
        ((1, (b"v", 1, b"o", 0), "n"), TypeError),
        ((1, (b"v", -1, "o", 0), "n"), OverflowError),
        ((1, (b"v", 1, "o"), "n"), ValueError),
    ],
)
def test_answer_bad_arguments_raise(impl: ModuleType, args: tuple[object, ...], exc: type) -> None:
    with pytest.raises(exc):
        impl.stream_get_answer(*args)
