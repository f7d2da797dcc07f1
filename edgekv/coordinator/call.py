"""What the request layer knows about the call in progress, whatever door it came in by."""

from __future__ import annotations

import time

from edgekv.server.auth import ANYONE, Principal


class Call:
    """One client call as a front door hands it to the request layer.

    ``principal`` is who is calling (already authenticated by the door; ``ANYONE``
    when auth is disabled). ``credentials`` is the caller's raw ``authorization``
    header, passed on when the call is forwarded so the serving node checks it
    too. ``forwarded_by`` names the node that forwarded this call (None from a
    client): such a call must be served here or refused, never forwarded again.
    ``deadline`` is a ``time.monotonic()`` instant, or None for no deadline.
    """

    __slots__ = ("credentials", "deadline", "forwarded_by", "principal")

    def __init__(
        self,
        principal: Principal = ANYONE,
        *,
        credentials: str | None = None,
        forwarded_by: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.principal = principal
        self.credentials = credentials
        self.forwarded_by = forwarded_by
        self.deadline = deadline

    def timeout_s(self) -> float | None:
        """Seconds left before the deadline (at least 1 ms), or None without one."""
        if self.deadline is None:
            return None
        return max(0.001, self.deadline - time.monotonic())

    def forwarded(self, by_node: str) -> Call:
        """The same call as this node sends it on to another node."""
        return Call(
            self.principal,
            credentials=self.credentials,
            forwarded_by=by_node,
            deadline=self.deadline,
        )
