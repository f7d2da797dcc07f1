"""edgekv.config.values: host:port parsing."""

from __future__ import annotations

import re

import pytest

from edgekv.config.values import parse_host_port
from edgekv.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7101", ("127.0.0.1", 7101)),
        ("[::1]:7101", ("::1", 7101)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("localhost:7101", ("localhost", 7101)),
        ("edge-1.example.com:65535", ("edge-1.example.com", 65535)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_parse_host_port_valid_address_split(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "expected host:port"),
        (":7101", "expected host:port"),
        ("localhost:", "expected host:port"),
        ("localhost:http", "expected host:port"),
        ("localhost:-1", "expected host:port"),
        ("localhost:123456", "expected host:port"),
        ("localhost:65536", 'port 65536 in "localhost:65536" is out of range'),
        ("::1:7101", "IPv6 addresses need brackets"),
        ("[::1]7101", "expected host:port"),
        ("[nope]:7101", '"nope" in "[nope]:7101" is not an IPv6 address'),
        ("256.0.0.1:80", "is not an IPv4 address or host name"),
        ("bad host:80", "is not an IPv4 address or host name"),
        ("-bad:80", "is not an IPv4 address or host name"),
        (7101, "expected host:port"),
    ],
)
def test_parse_host_port_malformed_rejected(text: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_host_port(text)
