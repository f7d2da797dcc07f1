"""What the request layer knows about the call in progress, whatever door it came in by."""

from __future__ import annotations

from collections.abc import Callable

from edgekv.principal import Principal


class Call:
    """One client call as a front door hands it to the request layer.

    ``principal`` is who is calling, already authenticated by the door. It has no
    default, so a door that forgets it fails loudly instead of running as admin
    (``ANYONE`` is for the doors of nodes with auth disabled).

    ``credentials`` is the caller's raw ``authorization`` header, passed on when
    the call is forwarded so that the serving node checks it too.

    ``forwarded_by`` names the node that forwarded this call (None from a client):
    such a call must be served here or refused, never forwarded again.

    ``time_remaining`` returns the seconds left before the caller's deadline
    (None: no deadline). It is asked only when the call is forwarded, so a local
    read pays nothing for it. Built once per call on the hot path: keep it cheap
    (slots, positional arguments).

    ``consistency`` is the read level asked for (the ``edgekv.v1.Consistency``
    value: 0 LOCAL, the default, 1 SESSION, 2 STRONG) and ``session_token`` the
    serialized ``SessionToken`` the caller presented (empty: none). Both travel
    with the call when it is forwarded.
    """

    __slots__ = (
        "consistency",
        "credentials",
        "forwarded_by",
        "principal",
        "session_token",
        "time_remaining",
    )

    def __init__(
        self,
        principal: Principal,
        credentials: str | None = None,
        forwarded_by: str | None = None,
        time_remaining: Callable[[], float | None] | None = None,
        consistency: int = 0,
        session_token: bytes = b"",
    ) -> None:
        self.principal = principal
        self.credentials = credentials
        self.forwarded_by = forwarded_by
        self.time_remaining = time_remaining
        self.consistency = consistency
        self.session_token = session_token

    def timeout_s(self) -> float | None:
        """Seconds left before the deadline (at least 1 ms), or None without one."""
        left = None if self.time_remaining is None else self.time_remaining()
        return None if left is None else max(0.001, left)

    def forwarded(self, by_node: str) -> Call:
        """The same call as this node sends it on to another node."""
        return Call(
            self.principal,
            self.credentials,
            by_node,
            self.time_remaining,
            self.consistency,
            self.session_token,
        )
