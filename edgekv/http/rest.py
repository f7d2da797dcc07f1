"""The REST face, Workers KV style: ``/v1/kv/{key}`` and ``/v1/kv?prefix=&cursor=&limit=``.

For curl and for runtimes without protobuf. A value is the raw request or
response body (``application/octet-stream``); a key is the rest of the path,
percent-decoded to bytes (any byte may be sent as %XX). ``ttl`` (seconds, query)
or ``edgekv-ttl-ms`` (header) sets an expiry on PUT. The record's metadata comes
back in headers: ``edgekv-version`` (``<hlc timestamp>.<origin node>``),
``edgekv-expires-at-ms`` (0: none) and ``edgekv-served-by``. Read levels,
session tokens and receipts travel as ``edgekv-consistency``,
``edgekv-session-token`` and ``edgekv-await-*`` headers (http/levels.py).

Conditional writes (keys under a homed prefix only): ``If-None-Match: *`` on
PUT stores only if the key has no live value; ``If-Match: <version>`` (as
``edgekv-version`` gives it, ``TS.ORIGIN``; ``TS:ORIGIN`` and quotes accepted)
on PUT or DELETE writes only if the live value has that version. A condition
that does not hold answers 412 with the current version in
``edgekv-current-version`` (absent when the key has no live value).

:data:`ROUTES` is the one description of the face: the dispatcher reads its
parameters from it and openapi.py writes the OpenAPI document from it. Each
handler checks its parameters, calls the coordinator (the same request layer,
auth and limits as every door) and writes JSON or bytes; an EdgeKVError becomes
its HTTP status (errors.HTTP_STATUS_BY_CODE) with a ``{"code", "message"}`` body.
A PUT body longer than ``max_value_bytes`` is refused before it is read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from edgekv.condition_status import CURRENT_VERSION_HEADER, version_text
from edgekv.coordinator import Call, Coordinator, WriteAck
from edgekv.errors import ConditionFailed, EdgeKVError, InvalidArgument, NotFound
from edgekv.http import levels
from edgekv.http.app import REST_PREFIX, Receive, Scope, Send, send_error
from edgekv.http.calls import SERVED_BY, Admission, call_of, client_of_address
from edgekv.limits import Limits
from edgekv.server.auth import Authorizer
from edgekv.storage.conditions import IF_ABSENT, Condition
from edgekv.storage.record import Version

KEY_PATH = REST_PREFIX + "/{key}"
TTL_HEADER = "edgekv-ttl-ms"


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a route: where it is sent, its type and what it means."""

    name: str
    where: str  # "path", "query" or "header"
    kind: str  # "string", "integer" or "boolean"
    description: str
    minimum: int | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the REST face (the OpenAPI document is written from these)."""

    method: str
    path: str
    operation_id: str
    summary: str
    params: tuple[Param, ...]
    body: bool  # takes the value as a raw body
    ok: str  # "value" (raw bytes), "ack" (a write's version), "list"


_KEY = Param("key", "path", "string", "The key, percent-encoded (any byte as %XX).", required=True)
_READ = (
    Param(
        levels.CONSISTENCY,
        "header",
        "string",
        "Read level: local (default), session (sees every write in the session token) or strong.",
    ),
    Param(
        levels.SESSION_TOKEN,
        "header",
        "string",
        "A session token (base64url) from an earlier answer's edgekv-session-token header.",
    ),
)
_AWAIT = (
    Param(
        levels.AWAIT_REPLICAS,
        "header",
        "integer",
        "Answer once this many other PoPs applied the write (receipts in the body).",
        0,
    ),
    Param(
        levels.AWAIT_REGIONS,
        "header",
        "string",
        "Answer once a PoP of each of these regions (comma-separated) applied the write.",
    ),
    Param(
        levels.AWAIT_TIMEOUT_MS,
        "header",
        "integer",
        "How long to wait for them (default: the request's deadline, or 5000).",
        0,
    ),
)
_IF_NONE_MATCH = Param(
    "if-none-match",
    "header",
    "string",
    "*: write only if the key has no live value (homed keys; else 412).",
)
_IF_MATCH = Param(
    "if-match",
    "header",
    "string",
    "TS.ORIGIN: write only if the live value has this version (homed keys; else 412).",
)
ROUTES: tuple[Route, ...] = (
    Route("GET", KEY_PATH, "getValue", "Read a key's value (404 when absent, deleted or expired).",
          (_KEY, *_READ), body=False, ok="value"),
    Route("PUT", KEY_PATH, "putValue", "Store the request body as the key's value.",
          (_KEY,
           Param("ttl", "query", "integer", "Expire after this many seconds (0: never).", 0),
           Param(TTL_HEADER, "header", "integer",
                 "Expire after this many milliseconds (0: never); instead of ttl.", 0),
           *_AWAIT, _IF_NONE_MATCH, _IF_MATCH),
          body=True, ok="ack"),
    Route("DELETE", KEY_PATH, "deleteValue", "Delete a key (deleting a missing key succeeds).",
          (_KEY, _IF_MATCH, *_AWAIT), body=False, ok="ack"),
    Route("GET", REST_PREFIX, "listKeys", "List live keys in key order, one page per call.",
          (Param("prefix", "query", "string", "Only keys starting with this (UTF-8)."),
           Param("cursor", "query", "string",
                 "The previous page's cursor; absent for the first page."),
           Param("limit", "query", "integer", "Keys per page (default 100, at most "
                 "max_scan_limit).", 1), *_READ),
          body=False, ok="list"),
)  # fmt: skip


class RestFace:
    """The ASGI application of ``/v1/kv``; one per node, on its event loop."""

    def __init__(
        self,
        coordinator: Coordinator,
        auth: Authorizer | None,
        admission: Admission,
        limits: Limits,
    ) -> None:
        self._kv = coordinator
        self._auth = auth
        self._admission = admission
        self._limits = limits
        self._node_id = coordinator.node_id
        self._routes = {(r.method, r.path): r for r in ROUTES}
        self._handlers: dict[str, Callable[..., Awaitable[None]]] = {
            "getValue": self._get,
            "putValue": self._put,
            "deleteValue": self._delete,
            "listKeys": self._list,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        template = REST_PREFIX if path == REST_PREFIX else KEY_PATH
        route = self._routes.get((scope["method"], template))
        if route is None:
            allowed = [r.method for r in ROUTES if r.path == template]
            await send_error(
                send,
                InvalidArgument(f"{scope['method']} is not served on {template}; use {allowed}"),
            )
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = client_of_address(_address(scope))
        try:
            self._admission.enter_call(client)
        except EdgeKVError as exc:
            await send_error(send, exc)
            return
        try:
            call = call_of(self._auth, headers.get)
            args = _params(route, scope, headers)
            await self._handlers[route.operation_id](call, args, receive, send, headers)
        except ConditionFailed as exc:  # 412, with the version it did find
            current = version_text(exc).replace(":", ".", 1)
            extra = ((CURRENT_VERSION_HEADER.encode(), current.encode()),) if current else ()
            await send_error(send, exc, extra + (_CLOSE if route.body else ()), 412)
        except EdgeKVError as exc:
            await send_error(send, exc, _CLOSE if route.body else ())
        finally:
            self._admission.leave_call(client)

    async def _get(
        self, call: Call, args: dict[str, Any], receive: Receive, send: Send, _h: Any
    ) -> None:
        started = time.perf_counter()
        levels.read_level(call, args)
        result = await self._kv.get(args["key"], call)
        timing = self._timing(result.served_by, started)
        token = levels.token_header(result.session_token)
        if result.found is None:
            await send_error(
                send,
                _not_found(args["key"]),
                ((SERVED_BY.encode(), result.served_by.encode()), timing, *token),
            )
            return
        value, timestamp, origin, expires_at_ms = result.found
        await _respond(
            send,
            200,
            value,
            b"application/octet-stream",
            (
                (SERVED_BY.encode(), result.served_by.encode()),
                (b"edgekv-version", f"{timestamp}.{origin}".encode()),
                (b"edgekv-expires-at-ms", str(expires_at_ms).encode()),
                timing,
                *token,
            ),
        )

    async def _put(
        self, call: Call, args: dict[str, Any], receive: Receive, send: Send, headers: Any
    ) -> None:
        ttl_s, ttl_ms = args.get("ttl"), args.get(TTL_HEADER)
        if ttl_s is not None and ttl_ms is not None:
            raise InvalidArgument(f"give the expiry once: the ttl parameter or {TTL_HEADER}")
        ttl = ttl_ms if ttl_ms is not None else (ttl_s or 0) * 1000
        value = await self._read_value(headers, receive)
        started = time.perf_counter()
        condition = rest_condition(args.get("if-none-match"), args.get("if-match"))
        ack = await self._kv.put(args["key"], value, ttl, call, levels.await_of(args), condition)
        await self._ack(send, ack, started)

    async def _delete(
        self, call: Call, args: dict[str, Any], receive: Receive, send: Send, _h: Any
    ) -> None:
        started = time.perf_counter()
        condition = rest_condition(None, args.get("if-match"))
        ack = await self._kv.delete(args["key"], call, levels.await_of(args), condition)
        await self._ack(send, ack, started)

    async def _list(
        self, call: Call, args: dict[str, Any], receive: Receive, send: Send, _h: Any
    ) -> None:
        cursor = args.get("cursor") or ""
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            token = base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(
                f"cursor {cursor[:64]!r} is not a cursor this API returned"
            ) from None
        started = time.perf_counter()
        levels.read_level(call, args)
        page = await self._kv.scan(
            call,
            prefix=(args.get("prefix") or "").encode(),
            page_token=token,
            limit=args.get("limit") or 0,
            keys_only=True,
        )
        keys = []
        for item in page.items:
            entry: dict[str, Any] = {"name": item.key.decode("utf-8", "replace")}
            try:
                item.key.decode("utf-8")
            except UnicodeDecodeError:
                entry["name_base64"] = base64.b64encode(item.key).decode()
            entry["version"] = f"{item.timestamp}.{item.origin}"
            entry["expires_at_ms"] = item.expires_at_ms
            keys.append(entry)
        next_cursor = base64.urlsafe_b64encode(page.next_page_token).decode().rstrip("=")
        body = {"keys": keys, "cursor": next_cursor, "list_complete": not page.next_page_token}
        body["served_by"] = page.served_by
        await _respond(
            send,
            200,
            json.dumps(body).encode(),
            b"application/json",
            (
                (SERVED_BY.encode(), page.served_by.encode()),
                self._timing(page.served_by, started),
                *levels.token_header(page.session_token),
            ),
        )

    async def _ack(self, send: Send, ack: WriteAck, started: float) -> None:
        version, served_by = ack.version, ack.served_by
        fields, token = levels.ack_fields(ack)
        body = {
            "version": f"{version.timestamp}.{version.origin}",
            "timestamp": str(version.timestamp),
            "origin": version.origin,
            "served_by": served_by,
            **fields,
        }
        await _respond(
            send,
            200,
            json.dumps(body).encode(),
            b"application/json",
            (
                (SERVED_BY.encode(), served_by.encode()),
                self._timing(served_by, started),
                *levels.token_header(token),
            ),
        )

    def _timing(self, served_by: str, started: float) -> tuple[bytes, bytes]:
        where = "kv" if served_by == self._node_id else "forward"
        return (
            b"server-timing",
            f"{where};dur={(time.perf_counter() - started) * 1000:.3f}".encode(),
        )

    async def _read_value(self, headers: dict[str, str], receive: Receive) -> bytes:
        """The request body, refused unread past max_value_bytes (declared or counted)."""
        limits = self._limits
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise InvalidArgument(f"content-length {declared[:32]!r} is not a number") from None
            limits.check_value_size(size)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidArgument("the client went away before sending the whole value")
            chunk = message.get("body", b"")
            size += len(chunk)
            limits.check_value_size(size)  # a body of unknown length, counted as it comes
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# After refusing a body unread, close the connection rather than read the rest.
_CLOSE = ((b"connection", b"close"),)


_TIMESTAMP = re.compile(r"[0-9]{1,20}")  # a 64-bit HLC timestamp, ASCII digits only


def rest_condition(if_none_match: str | None, if_match: str | None) -> Condition | None:
    """The condition of ``If-None-Match: *`` / ``If-Match: TS.ORIGIN`` (None without)."""
    if if_none_match is not None and if_match is not None:
        raise InvalidArgument("give If-None-Match or If-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise InvalidArgument(f"If-None-Match must be *, got {if_none_match[:64]!r}")
        return IF_ABSENT
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    timestamp, sep, origin = text.replace(":", ".", 1).partition(".")
    if not sep or not _TIMESTAMP.fullmatch(timestamp) or int(timestamp) >= 2**64 or not origin:
        raise InvalidArgument(
            f"If-Match must be a version TS.ORIGIN (as edgekv-version gives it), "
            f"got {if_match[:64]!r}"
        )
    return Condition(if_version=Version(int(timestamp), origin))


def _not_found(key: bytes) -> EdgeKVError:
    return NotFound(f"key {key[:128].decode('utf-8', 'replace')!r} is not set")


def _address(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _params(route: Route, scope: Scope, headers: dict[str, str]) -> dict[str, Any]:
    """The route's parameters from the request, typed and checked as ROUTES declares them."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    args: dict[str, Any] = {}
    for param in route.params:
        if param.where == "path":
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            args[param.name] = unquote_to_bytes(raw_path[len(REST_PREFIX) + 1 :])
            continue
        if param.where == "query":
            values = query.get(param.name)
            raw = values[0] if values else None
        else:
            raw = headers.get(param.name)
        if raw is None:
            continue
        args[param.name] = _typed(param, raw)
    return args


def _typed(param: Param, raw: str) -> Any:
    where = f"{param.where} parameter {param.name}"
    if param.kind == "integer":
        try:
            number = int(raw)
        except ValueError:
            raise InvalidArgument(f"{where}: expected an integer, got {raw[:64]!r}") from None
        if param.minimum is not None and number < param.minimum:
            raise InvalidArgument(f"{where} is {number}; it must be at least {param.minimum}")
        return number
    if param.kind == "boolean":
        if raw not in ("true", "false"):
            raise InvalidArgument(f"{where}: expected true or false, got {raw[:64]!r}")
        return raw == "true"
    return raw


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: tuple[tuple[bytes, bytes], ...],
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
