"""Who is calling and what they may do: principals, scopes and key prefixes.

A leaf module (it imports only errors and keyrange), so the request layer, the
config validator and every front door share one definition. Authentication (which
principal a token is) lives in server/auth.py; authorization (may this principal
make this call) is :meth:`Principal.authorize`, called by the request layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgekv.errors import PermissionDenied
from edgekv.keyrange import prefix_range, within

# The header (gRPC metadata key) that carries "Bearer <token>".
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
# Only a front door may hand it to the request layer, and only then: a Call has no
# default principal, so a forgotten one fails instead of running as admin.
ANYONE = Principal("anyone", "admin", ())


def _show(prefixes: tuple[bytes, ...]) -> str:
    return ", ".join(repr(p.decode("utf-8", "backslashreplace")) for p in prefixes)
