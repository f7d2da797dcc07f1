"""Read levels, session tokens and receipts on the command line.

``get`` and ``scan`` take ``--consistency local|session|strong`` and
``--session-token TOKEN`` (base64url, as ``--json`` prints it, or
``$EDGEKV_SESSION_TOKEN``); ``put`` and ``delete`` take ``--await-replicas N``,
``--await-regions R[,R...]`` and ``--await-timeout-ms``. ``--json`` output
carries ``session_token`` (and a write's ``receipts``/``not_applied_by``), so a
script can hand the token to its next command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def read_level_options(fn: F) -> F:
    """The ``--consistency`` and ``--session-token`` options of a read command."""
    fn = click.option(
        "--session-token", "session_token", envvar="EDGEKV_SESSION_TOKEN", default=None,
        help="A session token (base64url) from an earlier --json answer: with "
        "--consistency session the read sees every write it covers.",
    )(fn)  # fmt: skip
    return click.option(
        "--consistency", type=click.Choice(["local", "session", "strong"]), default=None,
        help="Read level (default local; session with a token: read your writes).",
    )(fn)  # fmt: skip


def await_options(fn: F) -> F:
    """``--await-replicas``, ``--await-regions`` and ``--await-timeout-ms``."""
    fn = click.option(
        "--await-timeout-ms", type=click.IntRange(min=0), default=None,
        help="How long to wait for them (default: the call's --timeout).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--await-regions", default="",
        help="Answer once a PoP of each of these regions (comma-separated) applied the write.",
    )(fn)  # fmt: skip
    return click.option(
        "--await-replicas", type=click.IntRange(min=0), default=None,
        help="Answer once this many other PoPs applied the write (prints the receipts).",
    )(fn)  # fmt: skip


def client_kwargs(session_token: str | None) -> dict[str, Any]:
    """The client's ``session_token`` from the option (InvalidArgument when malformed)."""
    from edgekv.consistency import token_from_text

    return {"session_token": token_from_text(session_token)} if session_token else {}


def await_kwargs(
    await_replicas: int | None, await_regions: str, await_timeout_ms: int | None
) -> dict[str, Any]:
    regions = [r.strip() for r in await_regions.split(",") if r.strip()]
    return {
        "await_replicas": await_replicas,
        "await_regions": regions,
        "await_timeout_ms": await_timeout_ms,
    }


def token_json(token: bytes) -> dict[str, str]:
    """``{"session_token": base64url}``, or nothing for an empty token."""
    from edgekv.consistency import token_text

    return {"session_token": token_text(token)} if token else {}
