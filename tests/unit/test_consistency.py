"""Session tokens and read levels (edgekv/consistency.py), shared by the SDK and the node."""

from __future__ import annotations

import pytest

from edgekv.client._session import Session, await_message
from edgekv.consistency import (
    LOCAL,
    MAX_TOKEN_BYTES,
    SESSION,
    STRONG,
    decode_token,
    encode_token,
    level_of,
    merge_tokens,
    token_from_text,
    token_of_versions,
    token_text,
)
from edgekv.errors import InvalidArgument


def test_token_round_trips_and_is_deterministic() -> None:
    seen = {"fra-1": 5 << 16, "iad-1": 7 << 16}
    token = encode_token(seen)
    assert decode_token(token) == seen
    assert encode_token(dict(reversed(seen.items()))) == token
    assert encode_token({}) == b"" and decode_token(b"") == {}


def test_merge_takes_the_greater_timestamp_per_origin() -> None:
    a = encode_token({"fra-1": 5, "iad-1": 9})
    b = encode_token({"fra-1": 8, "nrt-1": 1})
    assert decode_token(merge_tokens(a, b)) == {"fra-1": 8, "iad-1": 9, "nrt-1": 1}
    assert merge_tokens(a, b"") == a and merge_tokens() == b""


def test_token_of_versions_merges_into_base() -> None:
    token = token_of_versions([(3, "fra-1"), (2, "fra-1"), (4, "iad-1")], {"fra-1": 1, "x": 9})
    assert decode_token(token) == {"fra-1": 3, "iad-1": 4, "x": 9}


def test_malformed_token_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"not a serialized edgekv\.v1\.SessionToken"):
        decode_token(b"\xff\xff\xff")


def test_oversized_token_rejected_naming_the_limit() -> None:
    with pytest.raises(InvalidArgument, match=f"the limit is {MAX_TOKEN_BYTES}"):
        decode_token(b"\x00" * (MAX_TOKEN_BYTES + 1))


def test_token_with_too_many_origins_rejected() -> None:
    token = encode_token({f"n{i}": 1 for i in range(257)})
    with pytest.raises(InvalidArgument, match="names 257 origins; the limit is 256"):
        decode_token(token)


def test_token_text_round_trips_base64url() -> None:
    token = encode_token({"fra-1": 123456789})
    text = token_text(token)
    assert "=" not in text and token_from_text(text) == token
    with pytest.raises(InvalidArgument, match="base64url"):
        token_from_text("not base64!")


@pytest.mark.parametrize(
    ("given", "level"),
    [(None, LOCAL), ("local", LOCAL), ("SESSION", SESSION), (" strong ", STRONG), (1, SESSION)],
)
def test_level_of_names_and_numbers(given: object, level: int) -> None:
    assert level_of(given) == level  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["eventual", 3, True, 1.0])
def test_level_of_unknown_rejected_naming_the_choices(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="local, session, strong"):
        level_of(bad)  # type: ignore[arg-type]


def test_sdk_session_merges_versions_and_tokens() -> None:
    session = Session("session", encode_token({"fra-1": 5}))
    session.observe_version(3, "fra-1")  # older: no change
    session.observe_version(4, "iad-1")
    session.observe(encode_token({"fra-1": 9}))
    assert decode_token(session.token) == {"fra-1": 9, "iad-1": 4}
    assert session.level == SESSION


def test_await_message_checks_its_arguments() -> None:
    assert await_message(None, (), None) is None
    msg = await_message(2, "eu-west", 100)
    assert msg is not None and (msg.count, list(msg.regions), msg.timeout_ms) == (
        2, ["eu-west"], 100,
    )  # fmt: skip
    with pytest.raises(InvalidArgument, match="await_replicas must be a count"):
        await_message(-1, (), None)
    with pytest.raises(InvalidArgument, match="await_timeout_ms needs"):
        await_message(None, (), 100)
