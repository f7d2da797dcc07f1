"""Who is calling on the peer port: a proven node identity on every peer RPC.

A peer proves the node id its ``PeerHello`` claims in one of two ways, or both:

- **mutual TLS** (``security.tls``): the peer port accepts only certificates
  signed by the cluster CA, and the certificate's common name must be the
  claimed node id.
- **the cluster peer secret** (``security.peer_secret_file``), for private
  networks without TLS: every call carries ``edgekv-peer-id: <node id>`` and
  ``edgekv-peer-auth: <ms>:<hex>``, where ``hex`` is HMAC-SHA256 of the
  secret over (cluster, node id, ms). The receiver recomputes it for the
  claimed id and compares in constant time, and refuses a timestamp more than
  :data:`CREDENTIAL_WINDOW_S` away from its own clock. So a credential seen on
  the wire speaks for one node id only, for a few minutes. The secret itself
  is shared by every node: a node (or whoever reads its secret file) can speak
  for any node; identity that survives a compromised node needs mutual TLS.
  The secret is never logged, and never sent.

:class:`PeerCredentials` adds the credential to every call on a peer channel
(the :class:`~edgekv.server.channels.Dialer` installs it on each channel it
dials, so no call site can forget it); :class:`PeerAuthenticator` checks it on
the receiving side (``PeerService`` calls it before anything else).
:func:`peer_secret_for` enforces the start-up rule: a node with token auth and
peers refuses to start with an unauthenticated peer plane unless
``security.insecure_peer_plane: true`` says the operator means it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from edgekv.config.model import ClusterConfig
from edgekv.errors import ConfigError, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

PEER_ID_METADATA = "edgekv-peer-id"
PEER_AUTH_METADATA = "edgekv-peer-auth"
# How far a credential's timestamp may be from the receiver's clock: bounds how
# long a credential seen on the wire can be replayed, and tolerates clocks this
# far apart (the HLC refuses far less: replication.max_clock_skew_ms).
CREDENTIAL_WINDOW_S = 300
MIN_SECRET_BYTES = 32
_CONTEXT = b"edgekv-peer-v1"


def read_peer_secret(path: Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace removed); ConfigError if unusable.

    The message names the file and the setting, never the content.
    """
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"security.peer_secret_file: cannot read {path}: {exc.strerror or exc}"
        ) from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"security.peer_secret_file: {path} holds {len(secret)} bytes; the secret must be at "
            f"least {MIN_SECRET_BYTES} (make one with: edgekv peer-secret new --out {path})"
        )
    return secret


def peer_secret_for(config: ClusterConfig, *, has_peers: bool) -> bytes | None:
    """The peer secret this node uses (None without one), after the start-up rule.

    Raises ConfigError when token auth is on, the node has peers, and neither
    TLS nor a peer secret authenticates them, unless
    ``security.insecure_peer_plane`` is set (then a loud warning is logged).
    """
    security = config.security
    secret = None
    if security.peer_secret_file is not None:
        secret = read_peer_secret(security.peer_secret_file)
    authenticated = security.tls is not None or secret is not None
    if not has_peers or authenticated:
        return secret
    tokens = security.auth is not None and security.auth.mode == "tokens"
    if tokens and not security.insecure_peer_plane:
        raise ConfigError(
            "security.auth.mode is tokens but the peer port is unauthenticated: anyone who "
            "reaches peer_listen could read and write every key. Set security.tls (mutual TLS) "
            "or security.peer_secret_file (a cluster peer secret), or set "
            "security.insecure_peer_plane: true to accept an unauthenticated peer plane"
        )
    if security.insecure_peer_plane:
        log.warning(
            "THE PEER PLANE IS UNAUTHENTICATED (security.insecure_peer_plane: true): anyone who "
            "can reach this node's peer port can read and write every key, pinned ones "
            "included. Set security.tls or security.peer_secret_file."
        )
    return secret


def credential(secret: bytes, cluster: str, node_id: str, at_ms: int) -> str:
    """The ``edgekv-peer-auth`` value for ``node_id`` at wall time ``at_ms``."""
    mac = hmac.new(secret, _message(cluster, node_id, at_ms), hashlib.sha256).hexdigest()
    return f"{at_ms}:{mac}"


def _message(cluster: str, node_id: str, at_ms: int) -> bytes:
    # NUL-separated: ids and cluster names cannot contain NUL, so no two
    # (cluster, node, time) triples share a message.
    return b"\0".join((_CONTEXT, cluster.encode(), node_id.encode(), str(at_ms).encode()))


class PeerCredentials:
    """Adds this node's peer credential to every call of the channels it is installed on.

    A fresh timestamp per call (one HMAC, about a microsecond). Immutable.
    """

    def __init__(self, secret: bytes, cluster: str, node_id: str) -> None:
        self._secret = secret
        self._cluster = cluster
        self._node_id = node_id

    def metadata(self) -> tuple[tuple[str, str], ...]:
        now_ms = int(time.time() * 1000)
        return (
            (PEER_ID_METADATA, self._node_id),
            (PEER_AUTH_METADATA, credential(self._secret, self._cluster, self._node_id, now_ms)),
        )

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Client interceptors for ``grpc.aio`` channels: unary calls and streams."""
        return [_UnaryCredential(self), _StreamCredential(self)]

    def __repr__(self) -> str:  # never show the secret
        return f"PeerCredentials(node_id={self._node_id!r})"


def _with_credential(details: Any, credentials: PeerCredentials) -> Any:
    existing = tuple(details.metadata) if details.metadata else ()
    metadata = grpc.aio.Metadata(*existing, *credentials.metadata())
    return details._replace(metadata=metadata)


class _UnaryCredential(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, credentials: PeerCredentials) -> None:
        self._credentials = credentials

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_credential(details, self._credentials), request)


class _StreamCredential(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, credentials: PeerCredentials) -> None:
        self._credentials = credentials

    async def intercept_stream_stream(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, requests: Any
    ) -> Any:
        return await continuation(_with_credential(details, self._credentials), requests)


class PeerAuthenticator:
    """Checks that a peer call proves the node id it claims (module docstring: how).

    ``mutual_tls``: the peer port requires client certificates, so each call
    has a verified certificate name. ``secret``: the cluster peer secret, or
    None. Immutable; safe from any task.
    """

    def __init__(self, *, cluster: str, mutual_tls: bool, secret: bytes | None) -> None:
        self._cluster = cluster
        self._mutual_tls = mutual_tls
        self._secret = secret

    @property
    def authenticates(self) -> bool:
        return self._mutual_tls or self._secret is not None

    def verify(self, claimed: str, context: grpc.aio.ServicerContext) -> None:
        """Raise Unauthenticated (no valid proof) or PermissionDenied (proof of another id)."""
        if self._mutual_tls:
            names = (context.auth_context() or {}).get("x509_common_name")
            if not names:
                raise Unauthenticated("peer call without a client certificate (security.tls)")
            if claimed.encode() not in names:
                shown = ", ".join(n.decode("utf-8", "replace") for n in names)
                raise PermissionDenied(
                    f"peer says it is {claimed!r} but its certificate is for {shown}"
                )
        if self._secret is not None:
            self._verify_secret(claimed, context.invocation_metadata() or ())

    def _verify_secret(self, claimed: str, metadata: Iterable[tuple[str, Any]]) -> None:
        node_id = proof = None
        for key, value in metadata:
            if key == PEER_ID_METADATA:
                node_id = _text(value)
            elif key == PEER_AUTH_METADATA:
                proof = _text(value)
        if node_id is None or proof is None:
            raise Unauthenticated(
                f"peer call without {PEER_ID_METADATA} / {PEER_AUTH_METADATA} metadata; this "
                "node requires the cluster peer secret (security.peer_secret_file)"
            )
        stamp, _, mac = proof.partition(":")
        if not stamp.isdigit() or not mac:
            raise Unauthenticated(f"{PEER_AUTH_METADATA} metadata must be <ms>:<hex>")
        expected = credential(self._secret or b"", self._cluster, node_id, int(stamp))
        if not hmac.compare_digest(expected.encode(), proof.encode()):
            raise Unauthenticated(
                f"the peer credential for {node_id!r} is not valid: the caller does not hold "
                "this cluster's peer secret (security.peer_secret_file)"
            )
        age_ms = int(time.time() * 1000) - int(stamp)
        if abs(age_ms) > CREDENTIAL_WINDOW_S * 1000:
            raise Unauthenticated(
                f"the peer credential for {node_id!r} is {age_ms} ms from this node's clock; "
                f"the limit is {CREDENTIAL_WINDOW_S * 1000} ms (peer credential window): a "
                "replayed credential, or clocks far apart"
            )
        if node_id != claimed:
            raise PermissionDenied(
                f"peer says it is {claimed!r} but its credential is for {node_id!r}"
            )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")
