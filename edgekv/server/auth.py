"""Bearer-token authentication for the client API: which Principal is calling.

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

import grpc

from edgekv.config.model import AuthSettings, ClusterConfig
from edgekv.errors import ConfigError, Unauthenticated
from edgekv.principal import ANYONE, AUTHORIZATION, Principal

log = logging.getLogger(__name__)


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


def principal_of(auth: Authorizer | None, header: str | None) -> Principal:
    """Who calls with ``authorization`` header ``header`` (``ANYONE`` when auth is disabled).

    Every door authenticates through this, so a missing or bad token is refused
    with the same message whichever protocol carried it.
    """
    return ANYONE if auth is None else auth.authenticate_header(header)


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
