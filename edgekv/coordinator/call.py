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
    """

    __slots__ = ("credentials", "forwarded_by", "principal", "time_remaining")

    def __init__(
        self,
        principal: Principal,
        credentials: str | None = None,
        forwarded_by: str | None = None,
        time_remaining: Callable[[], float | None] | None = None,
    ) -> None:
        self.principal = principal
        self.credentials = credentials
        self.forwarded_by = forwarded_by
        self.time_remaining = time_remaining

    def timeout_s(self) -> float | None:
        """Seconds left before the deadline (at least 1 ms), or None without one."""
        left = None if self.time_remaining is None else self.time_remaining()
        return None if left is None else max(0.001, left)

    def forwarded(self, by_node: str) -> Call:
        """The same call as this node sends it on to another node."""
        return Call(self.principal, self.credentials, by_node, self.time_remaining)
