"""The OpenAPI 3.1 document of the REST face, written from rest.ROUTES (the one source).

Served at ``/v1/openapi.json``; schemathesis fuzzes the face against it
(tests/integration/test_http_door.py), so the document and the code cannot drift.
"""

from __future__ import annotations

import json
from typing import Any

from edgekv._version import __version__
from edgekv.http.rest import ROUTES, TTL_HEADER, Route

_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "The Connect code, e.g. invalid_argument."},
        "message": {"type": "string", "description": "What went wrong, with the limit."},
    },
}
_ACK = {
    "type": "object",
    "required": ["version", "timestamp", "origin", "served_by"],
    "properties": {
        "version": {"type": "string", "description": "<hlc timestamp>.<origin node>"},
        "timestamp": {"type": "string", "description": "The HLC timestamp (a 64-bit integer)."},
        "origin": {"type": "string"},
        "served_by": {"type": "string"},
        "session_token": {
            "type": "string",
            "description": "A session token (base64url) covering this write; send it back "
            "in edgekv-session-token with edgekv-consistency: session to read your writes.",
        },
        "receipts": {
            "type": "array",
            "description": "With edgekv-await-*: the PoPs that applied the write, in order.",
            "items": {
                "type": "object",
                "properties": {
                    "node_id": {"type": "string"},
                    "region": {"type": "string"},
                    "applied_after_ms": {"type": "number"},
                },
            },
        },
        "not_applied_by": {
            "type": "array",
            "description": "With edgekv-await-*: awaited PoPs that had not applied it in time.",
            "items": {"type": "string"},
        },
    },
}
_LIST = {
    "type": "object",
    "required": ["keys", "cursor", "list_complete", "served_by"],
    "properties": {
        "keys": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version", "expires_at_ms"],
                "properties": {
                    "name": {"type": "string"},
                    "name_base64": {"type": "string", "description": "Set when not UTF-8."},
                    "version": {"type": "string"},
                    "expires_at_ms": {"type": "integer"},
                },
            },
        },
        "cursor": {"type": "string", "description": "Pass as cursor for the next page."},
        "list_complete": {"type": "boolean"},
        "served_by": {"type": "string"},
    },
}
# Statuses any route may answer, from errors.HTTP_STATUS_BY_CODE.
_ERROR_STATUSES = {
    "400": "Invalid argument (a bad key, value, parameter or limit).",
    "401": "Missing or invalid bearer token.",
    "403": "The token may not do this.",
    "429": "A limit was hit (calls in flight per client).",
    "503": "No node allowed to hold the key can be reached.",
}


def _operation(route: Route) -> dict[str, Any]:
    params = [
        {
            "name": p.name,
            "in": p.where,
            "required": p.required,
            "description": p.description,
            "schema": {"type": p.kind, **({"minimum": p.minimum} if p.minimum is not None else {})},
        }
        for p in route.params
    ]
    responses: dict[str, Any] = {
        status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for status, text in _ERROR_STATUSES.items()
    }
    served_by = {
        "edgekv-served-by": {"schema": {"type": "string"}},
        "edgekv-session-token": {
            "description": "The session token (base64url): on writes, and on reads that sent "
            "edgekv-consistency or a token.",
            "schema": {"type": "string"},
        },
    }
    if route.ok == "value":
        ok = {
            "description": "The value, as stored.",
            "headers": {
                **served_by,
                "edgekv-version": {"schema": {"type": "string"}},
                "edgekv-expires-at-ms": {"schema": {"type": "string"}},
            },
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
        responses["404"] = {
            "description": "The key is absent, deleted or expired.",
            "content": {"application/json": {"schema": _ERROR}},
        }
    else:
        schema = _ACK if route.ok == "ack" else _LIST
        ok = {
            "description": "Done.",
            "headers": served_by,
            "content": {"application/json": {"schema": schema}},
        }
    if any(p.name == "if-match" for p in route.params):
        responses["412"] = {
            "description": "A condition (If-None-Match, If-Match) does not hold at the key's "
            "home; nothing was written.",
            "headers": {"edgekv-current-version": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": _ERROR}},
        }
    responses["200"] = ok
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": params,
        "responses": responses,
        "security": [{"bearer": []}, {}],
    }
    if route.body:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    return operation


def openapi_document() -> dict[str, Any]:
    """The document as a dict (JSON-ready)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgekv REST",
            "version": __version__,
            "description": "Workers KV style access to one edgekv node. The same service "
            "is served over Connect and gRPC-Web at /edgekv.v1.KV/<Method>. Expiry: the "
            f"ttl query parameter (seconds) or the {TTL_HEADER} header (milliseconds).",
        },
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def openapi_json() -> bytes:
    return json.dumps(openapi_document(), indent=1).encode()
