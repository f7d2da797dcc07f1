"""Session-token merge is a join: commutative, associative and idempotent (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgekv.consistency import decode_token, encode_token, merge_tokens

origins = st.sampled_from(["fra-1", "iad-1", "nrt-1", "sin-1", "gru-1"])
tokens = st.dictionaries(origins, st.integers(min_value=1, max_value=2**64 - 1)).map(encode_token)


@given(tokens, tokens)
def test_merge_is_commutative(a: bytes, b: bytes) -> None:
    assert merge_tokens(a, b) == merge_tokens(b, a)


@given(tokens, tokens, tokens)
def test_merge_is_associative(a: bytes, b: bytes, c: bytes) -> None:
    assert merge_tokens(merge_tokens(a, b), c) == merge_tokens(a, merge_tokens(b, c))


@given(tokens, tokens)
def test_merge_is_idempotent_and_covers_both(a: bytes, b: bytes) -> None:
    merged = merge_tokens(a, b)
    assert merge_tokens(merged, a) == merged == merge_tokens(merged, merged)
    seen = decode_token(merged)
    for part in (a, b):
        for origin, ts in decode_token(part).items():
            assert seen[origin] >= ts
