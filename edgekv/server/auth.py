"""Bearer-token authentication and scope/prefix authorization for the client API.

Tokens arrive as ``authorization: Bearer <token>`` metadata. The cluster file
holds only their SHA-256 (``security.auth.tokens``), each with a scope
(read < write < admin) and optional key prefixes. A presented token is hashed
and compared with every configured digest in constant time. Health checks and
reflection need no token (probes); the peer port is protected by mutual TLS or
the cluster peer secret (server/peer_auth.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from edgekv.config.model import AuthSettings, ClusterConfig
from edgekv.errors import ConfigError, PermissionDenied, Unauthenticated
from edgekv.keyrange import prefix_range, within

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
# The scopes a token may have, weakest first: each one allows what the earlier
# ones do. The cluster file's security.auth.tokens[].scope must be one of them.
AUTH_SCOPES = ("read", "write", "admin")
_LEVEL = {scope: i for i, scope in enumerate(AUTH_SCOPES)}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name, scope and key prefixes (empty = all keys)."""

    name: str
    scope: str
    prefixes: tuple[bytes, ...]

    def may(self, scope: str) -> bool:
        return _LEVEL[self.scope] >= _LEVEL[scope]

    def covers(self, key: bytes) -> bool:
        return not self.prefixes or any(key.startswith(p) for p in self.prefixes)

    def covers_range(self, start: bytes, end: bytes) -> bool:
        """Whether every key in [start, end) starts with one of the prefixes."""
        if not self.prefixes:
            return True
        return any(within(start, end, *prefix_range(p)) for p in self.prefixes)

    def authorize(
        self,
        scope: str,
        keys: Sequence[bytes] = (),
        key_range: tuple[bytes, bytes] | None = None,
    ) -> None:
        """Check that this principal may make a ``scope`` call on ``keys`` / ``key_range``.

        Raises PermissionDenied with a message naming the token, what it may do
        and what was asked. Pure: no I/O, safe from any thread.
        """
        if self is ANYONE:
            return
        if not self.may(scope):
            raise PermissionDenied(
                f"token {self.name!r} has scope {self.scope}; this call needs {scope}"
            )
        if self.prefixes:
            for key in keys:
                if not self.covers(key):
                    raise PermissionDenied(
                        f"token {self.name!r} may only use keys under "
                        f"{_show(self.prefixes)}; got {key[:64]!r}"
                    )
            if key_range is not None and not self.covers_range(*key_range):
                raise PermissionDenied(
                    f"token {self.name!r} may only use keys under {_show(self.prefixes)}; "
                    f"the requested range starts at {key_range[0][:64]!r}"
                )


# The principal of every call when auth is disabled (security.auth.mode: disabled).
ANYONE = Principal("anyone", "admin", ())


def hash_token(token: str | bytes) -> bytes:
    raw = token.encode("utf-8") if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


class Authorizer:
    """Checks calls against the configured tokens. Immutable; safe from any thread."""

    def __init__(self, settings: AuthSettings) -> None:
        self._tokens = [(t.sha256, Principal(t.name, t.scope, t.prefixes)) for t in settings.tokens]

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        """The caller's principal from gRPC metadata (see ``authenticate_header``)."""
        for key, value in metadata or ():
            if key == AUTHORIZATION:
                return self.authenticate_header(
                    value if isinstance(value, str) else value.decode("latin-1")
                )
        return self.authenticate_header(None)

    def authenticate_header(self, header: str | None) -> Principal:
        """The principal of an ``authorization`` header value (any transport).

        Raises Unauthenticated with a message saying what is missing or wrong.
        """
        if header is None:
            raise Unauthenticated(
                'missing "authorization: Bearer <token>" metadata; this node requires a token'
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated('authorization metadata must be "Bearer <token>"')
        digest = hash_token(token.strip())
        found = None
        for expected, principal in self._tokens:  # no early exit: constant time in the match
            if hmac.compare_digest(digest, expected):
                found = principal
        if found is None:
            raise Unauthenticated("the bearer token is not valid for this cluster")
        return found

    def authorize(
        self,
        context: grpc.aio.ServicerContext,
        scope: str,
        keys: Sequence[bytes] = (),
        key_range: tuple[bytes, bytes] | None = None,
    ) -> Principal:
        """Authenticate a gRPC call and check its scope and key prefixes.

        Raises Unauthenticated or PermissionDenied with a message naming the
        token, what it may do and what was asked.
        """
        principal = self.authenticate(context.invocation_metadata())
        principal.authorize(scope, keys, key_range)
        return principal


def authorizer_for(config: ClusterConfig) -> Authorizer | None:
    """The token checker, or None when auth is explicitly disabled (with a loud warning)."""
    auth = config.security.auth
    if auth is None:
        raise ConfigError(
            "security.auth is not configured: set security.auth.mode to tokens (with "
            "security.auth.tokens), or to disabled for local development only"
        )
    if auth.mode == "disabled":
        log.warning(
            "AUTHENTICATION IS DISABLED (security.auth.mode: disabled): anyone who can reach "
            "this node can read and write every key. Use this for local development only."
        )
        return None
    return Authorizer(auth)


def _show(prefixes: tuple[bytes, ...]) -> str:
    return ", ".join(repr(p.decode("utf-8", "backslashreplace")) for p in prefixes)
