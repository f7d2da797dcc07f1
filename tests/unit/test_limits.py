"""edgekv.limits: defaults, validation, and messages that name the actual size and the limit."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edgekv.errors import InvalidArgument
from edgekv.limits import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_BATCH_OPS,
    DEFAULT_MAX_SCAN_LIMIT,
    DEFAULT_MAX_VALUE_BYTES,
    MAX_KEY_BYTES,
    Limits,
)

FIELDS = [f.name for f in dataclasses.fields(Limits)]


def test_defaults_match_documented_sizes() -> None:
    assert MAX_KEY_BYTES == 1024
    assert DEFAULT_MAX_VALUE_BYTES == 1024 * 1024
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_value_bytes == DEFAULT_MAX_VALUE_BYTES
    assert DEFAULT_LIMITS.max_batch_ops == DEFAULT_MAX_BATCH_OPS
    assert DEFAULT_LIMITS.max_scan_limit == DEFAULT_MAX_SCAN_LIMIT


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10", None])
def test_limits_non_positive_or_non_int_rejected(field: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match=rf"{field} must be a positive integer, got"):
        Limits(**{field: bad})


@pytest.mark.parametrize("field", FIELDS)
def test_limits_positive_values_accepted(field: str) -> None:
    assert getattr(Limits(**{field: 1}), field) == 1


def test_limits_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_value_bytes = 1  # type: ignore[misc]


def test_invalid_argument_is_value_error() -> None:
    with pytest.raises(ValueError):
        Limits().check_key(b"")


@pytest.mark.parametrize("size", [1, 2, MAX_KEY_BYTES])
def test_check_key_within_limits_accepted(size: int) -> None:
    Limits().check_key(b"k" * size)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (b"", "key is empty; keys are 1 to 1024 bytes"),
        (b"k" * 1025, "key is 1025 bytes; the limit is 1024"),
        (b"k" * 100_000, "key is 100000 bytes; the limit is 1024"),
        ("key", "key must be bytes, got str"),
        (bytearray(b"key"), "key must be bytes, got bytearray"),
        (None, "key must be bytes, got NoneType"),
    ],
)
def test_check_key_violation_names_limit(key: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}$"):
        Limits().check_key(key)


def test_check_value_default_limit_boundary() -> None:
    Limits().check_value(b"")
    Limits().check_value(b"x" * DEFAULT_MAX_VALUE_BYTES)
    with pytest.raises(
        InvalidArgument,
        match=r"^value is 1048577 bytes; the limit is 1048576 \(max_value_bytes\)$",
    ):
        Limits().check_value(b"x" * (DEFAULT_MAX_VALUE_BYTES + 1))


def test_check_value_configured_limit_boundary() -> None:
    limits = Limits(max_value_bytes=100)
    limits.check_value(b"x" * 100)
    with pytest.raises(
        InvalidArgument, match=r"^value is 101 bytes; the limit is 100 \(max_value_bytes\)$"
    ):
        limits.check_value(b"x" * 101)


@pytest.mark.parametrize("value", ["text", bytearray(b"x"), memoryview(b"x"), None, 1])
def test_check_value_non_bytes_rejected(value: Any) -> None:
    with pytest.raises(InvalidArgument, match="value must be bytes, got"):
        Limits().check_value(value)


def test_check_batch_boundaries() -> None:
    limits = Limits(max_batch_ops=5)
    limits.check_batch(1)
    limits.check_batch(5)
    with pytest.raises(InvalidArgument, match=r"^batch is empty"):
        limits.check_batch(0)
    with pytest.raises(
        InvalidArgument, match=r"^batch has 6 operations; the limit is 5 \(max_batch_ops\)$"
    ):
        limits.check_batch(6)


def test_check_batch_default_limit() -> None:
    Limits().check_batch(DEFAULT_MAX_BATCH_OPS)
    with pytest.raises(InvalidArgument, match=r"the limit is 1000 \(max_batch_ops\)"):
        Limits().check_batch(DEFAULT_MAX_BATCH_OPS + 1)


def test_response_bytes_leave_room_for_framing_and_one_full_value() -> None:
    from edgekv.limits import MESSAGE_SLACK_BYTES

    limits = Limits()
    assert limits.response_bytes == limits.max_message_bytes - MESSAGE_SLACK_BYTES
    big = Limits(max_value_bytes=8 * 1024 * 1024)  # bigger than max_message_bytes
    assert big.message_bytes == 8 * 1024 * 1024 + MESSAGE_SLACK_BYTES
    assert big.response_bytes == big.max_value_bytes


def test_batch_get_and_answer_size_checks_name_the_limit() -> None:
    from edgekv.errors import ResourceExhausted

    limits = Limits(max_batch_ops=10)
    limits.check_batch_get(10)
    with pytest.raises(
        InvalidArgument, match=r"^batch get has 11 keys; the limit is 10 \(max_batch_ops\)$"
    ):
        limits.check_batch_get(11)
    limits.check_response_bytes(limits.response_bytes, "batch get")
    with pytest.raises(
        ResourceExhausted, match=r"is at least \d+ bytes; the limit is \d+ \(max_message_bytes"
    ):
        limits.check_response_bytes(limits.response_bytes + 1, "batch get")


def test_new_limits_must_be_positive() -> None:
    for name in (
        "max_watches_per_client",
        "max_watch_queue_bytes",
        "max_streams_per_client",
        "max_stream_inflight",
    ):
        with pytest.raises(InvalidArgument, match=f"{name} must be a positive integer"):
            Limits(**{name: 0})
