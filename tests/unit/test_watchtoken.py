"""Watch resume tokens (coordinator/watchtoken.py): round trip, bounds, malformed input."""

from __future__ import annotations

import pytest

from edgekv.coordinator.watchtoken import (
    MAX_TOKEN_BYTES,
    MAX_TOKEN_ORIGINS,
    WatchToken,
    decode_token,
    encode_token,
)
from edgekv.errors import InvalidArgument

TOKEN = WatchToken("fra-1", b"\x01" * 8, 42, {"fra-1": 1 << 40, "iad-1": 7})


def test_token_roundtrip() -> None:
    assert decode_token(encode_token(TOKEN)) == TOKEN
    empty = TOKEN._replace(vector={})
    assert decode_token(encode_token(empty)) == empty


def test_oversized_token_rejected_naming_the_limit() -> None:
    with pytest.raises(InvalidArgument, match=f"5000 bytes; the limit is {MAX_TOKEN_BYTES}"):
        decode_token(b"\x01" * 5000)


def test_token_with_too_many_origins_rejected() -> None:
    many = TOKEN._replace(vector={f"n{i}": i for i in range(MAX_TOKEN_ORIGINS + 1)})
    with pytest.raises(InvalidArgument, match=f"the limit is {MAX_TOKEN_ORIGINS}"):
        decode_token(encode_token(many))


@pytest.mark.parametrize("cut", [1, 5, 12, 17, 20, 25, 30])
def test_truncated_token_rejected(cut: int) -> None:
    with pytest.raises(InvalidArgument, match="resume_token"):
        decode_token(encode_token(TOKEN)[:cut])


def test_token_of_another_format_or_with_trailing_bytes_rejected() -> None:
    raw = encode_token(TOKEN)
    with pytest.raises(InvalidArgument, match="format 9"):
        decode_token(b"\x09" + raw[1:])
    with pytest.raises(InvalidArgument, match="trailing"):
        decode_token(raw + b"x")
    with pytest.raises(InvalidArgument, match="format None"):
        decode_token(b"")
