"""Who is calling over HTTP: the ``Call`` the request layer needs, from request headers.

The HTTP door reads the same things as the gRPC door reads from metadata: the
``authorization`` header (a bearer token, checked by the same Authorizer), the
``edgekv-forwarded-by`` header and the caller's deadline, and the same rules
then apply in the coordinator. Header names are lower case (ASGI gives them so).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekv.cluster.routing import FORWARDED_BY
from edgekv.coordinator import Call
from edgekv.errors import ResourceExhausted
from edgekv.principal import AUTHORIZATION
from edgekv.server.auth import Authorizer, principal_of
from edgekv.server.interceptors import InflightLimiter, client_of_host

# The response header naming the node that served a call (a forwarded call names the remote).
SERVED_BY = "edgekv-served-by"


def call_of(
    auth: Authorizer | None,
    headers: Callable[[str], str | None],
    time_remaining: Callable[[], float | None] | None = None,
) -> Call:
    """Authenticate the caller whose header lookup is ``headers``; raises Unauthenticated."""
    credentials = headers(AUTHORIZATION)
    return Call(principal_of(auth, credentials), credentials, headers(FORWARDED_BY), time_remaining)


def client_of_address(address: str | None) -> str:
    """A client "host:port" as the per-client limits count it (as the gRPC door names it)."""
    if not address:
        return "unknown"
    return client_of_host(address.rsplit(":", 1)[0].strip("[]"))


class Admission:
    """The client limits of the HTTP door, the same settings as the gRPC port's.

    Per client (by address, counted together with its gRPC calls through the
    node's one ``InflightLimiter``): ``max_inflight_per_client`` calls and
    ``max_watches_per_client`` Watch streams. For the door as a whole:
    ``max_concurrent_rpcs`` calls (gRPC enforces its own on its port). Raises
    ResourceExhausted naming the setting. Runs on the node's event loop.
    """

    __slots__ = ("_limiter", "inflight", "max_concurrent")

    def __init__(self, limiter: InflightLimiter, max_concurrent: int) -> None:
        self._limiter = limiter
        self.max_concurrent = max_concurrent
        self.inflight = 0  # calls and streams in progress on the HTTP door

    def enter_call(self, client: str) -> None:
        self._enter_door()
        try:
            self._limiter.enter_call(client)
        except ResourceExhausted:
            self.inflight -= 1
            raise

    def leave_call(self, client: str) -> None:
        self.inflight -= 1
        self._limiter.leave_call(client)

    def enter_stream(self, client: str) -> None:
        self._enter_door()
        try:
            self._limiter.enter_stream(client)
        except ResourceExhausted:
            self.inflight -= 1
            raise

    def leave_stream(self, client: str) -> None:
        self.inflight -= 1
        self._limiter.leave_stream(client)

    def _enter_door(self) -> None:
        if self.inflight >= self.max_concurrent:
            raise ResourceExhausted(
                f"the node has {self.inflight} HTTP calls in progress; the limit is "
                f"{self.max_concurrent} (max_concurrent_rpcs)"
            )
        self.inflight += 1
