"""Checks of single values in the cluster file, and ``host:port`` parsing.

Each ``as_*`` function returns the value with its checked type or raises a
:class:`~edgekv.errors.ConfigError` that starts with ``where`` (the entry's
path, ``nodes[2].listen``), shows the value as written (:func:`show`) and says
what is allowed. :mod:`edgekv.config.sections` builds every section from them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping

from edgekv.errors import ConfigError

__all__ = [
    "as_address",
    "as_bool",
    "as_ident",
    "as_int",
    "as_mapping",
    "as_nonempty_list",
    "as_positive_int",
    "as_positive_seconds",
    "as_string",
    "check_keys",
    "is_number",
    "parse_host_port",
    "same_socket",
    "show",
]

# Ids end up in file names, metric labels and log lines; keep them boring.
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ID_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -"
_HOSTNAME_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_ADDRESS_EXAMPLE = '"127.0.0.1:7101", "[::1]:7101" or "localhost:7101"'
# A wildcard address is per machine: one node per pod/VM may each bind it.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def parse_host_port(text: object) -> tuple[str, int]:
    """Split ``host:port`` into (host, port); ConfigError if it is not one.

    Accepts IPv4 (``127.0.0.1:7101``), bracketed IPv6 (``[::1]:7101``) and
    host names (``localhost:7101``). The port is 0..65535; 0 means "pick a
    free port" (tests and the local launcher use it). The host comes back
    without brackets.
    """
    if not isinstance(text, str):
        raise ConfigError(f"expected host:port such as {_ADDRESS_EXAMPLE}, got {show(text)}")
    bad = ConfigError(f"expected host:port such as {_ADDRESS_EXAMPLE}, got {show(text)}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise bad
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{show(host)} in {show(text)} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise bad
        if ":" in host:
            raise ConfigError(f'IPv6 addresses need brackets, as in "[::1]:7101"; got {show(text)}')
        if not _valid_host(host):
            raise ConfigError(f"{show(host)} in {show(text)} is not an IPv4 address or host name")
    if not _PORT_RE.fullmatch(port_text):
        raise bad
    port = int(port_text)
    if port > 65535:
        raise ConfigError(
            f"port {port} in {show(text)} is out of range; allowed 0..65535 (0 picks a free port)"
        )
    return host, port


def as_address(value: object, where: str, seen: dict[tuple[str, int], str]) -> str:
    try:
        host, port = parse_host_port(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    assert isinstance(value, str)  # parse_host_port accepted it
    # Port 0 is a fresh port every time, and a wildcard host is per machine;
    # anything else names one socket that only one node can bind.
    if port != 0 and host not in _WILDCARD_HOSTS:
        socket = (host.lower(), port)
        other = seen.get(socket)
        if other is not None:
            raise ConfigError(f"{where}: address {show(value)} is already used by {other}")
        seen[socket] = where
    return value


def same_socket(a: str, b: str) -> bool:
    host_a, port_a = parse_host_port(a)
    host_b, port_b = parse_host_port(b)
    return port_a != 0 and port_a == port_b and host_a.lower() == host_b.lower()


def as_mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings, got {show(key)}")
    return dict(value)


def check_keys(
    entry: Mapping[str, object],
    where: str,
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...],
) -> None:
    allowed = required + optional
    for key in entry:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {show(key)} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in entry:
            raise ConfigError(f"{where}: missing required key {show(key)}")


def as_nonempty_list(value: object, where: str, need: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list with {need}, got {show(value)}")
    if not value:
        raise ConfigError(f"{where}: the list is empty; it needs {need}")
    return value


def as_string(value: object, where: str) -> str:
    if not isinstance(value, str):
        hint = "; quote it" if isinstance(value, int | float | bool) else ""
        raise ConfigError(f"{where}: expected a string, got {show(value)}{hint}")
    return value


def as_ident(value: object, where: str, what: str) -> str:
    text = as_string(value, where)
    if not _ID_RE.fullmatch(text):
        raise ConfigError(f"{where}: invalid {what} {show(text)}; use {_ID_RULE}")
    return text


def as_int(value: object, where: str, *, minimum: int) -> int:
    # bool is an int subclass, but `true` for a size is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {show(value)}")
    if value < minimum:
        raise ConfigError(f"{where}: {value} is too small; allowed: an integer >= {minimum}")
    return value


def as_positive_int(value: object, where: str) -> int:
    return as_int(value, where, minimum=1)


def as_positive_seconds(value: object, where: str) -> float:
    if not is_number(value):
        raise ConfigError(f"{where}: expected a number of seconds > 0, got {show(value)}")
    seconds = float(value)  # type: ignore[arg-type]  # is_number checked it
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{where}: {seconds} is not allowed; use a number of seconds > 0")
    return seconds


def as_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {show(value)}")
    return value


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _valid_host(host: str) -> bool:
    if host.replace(".", "").isdigit():
        # All digits and dots: only a dotted-quad IPv4 address is meant.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_HOSTNAME_LABEL_RE.fullmatch(label) for label in labels)


def show(value: object) -> str:
    """A value as the user wrote it, short enough for one message line."""
    if isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = f"{str(value).lower()} (a boolean)"
    elif isinstance(value, dict):
        text = f"a mapping {value!r}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
