"""The two-PoP cluster with token auth that the HTTP door's integration tests start.

fra-1 (eu-west) and iad-1 (us-east), ``eu/`` pinned to eu-west, the HTTP door on
every node, tokens checked on the client plane (the peer plane opted out by
name: these tests are about the doors). Each test file adds its own tokens and
settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekv.local.launcher import write_cluster_file
from edgekv.server.auth import hash_token

REGIONS = (("eu-west", 50.1, 8.7), ("us-east", 38.9, -77.4))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"))
PLACEMENT = (("eu/", ["eu-west"]),)


def token_entry(
    name: str, secret: str, scope: str, prefixes: list[str] | None = None
) -> dict[str, Any]:
    """One entry of ``security.auth.tokens`` (the secret stored as its SHA-256)."""
    entry: dict[str, Any] = {"name": name, "sha256": hash_token(secret).hex(), "scope": scope}
    if prefixes is not None:
        entry["prefixes"] = prefixes
    return entry


def write_door_cluster(
    directory: Path,
    *,
    tokens: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    metrics: bool = False,
) -> Path:
    """The cluster file (free ports) with ``tokens`` and ``extra`` settings; its path."""
    security = {"auth": {"mode": "tokens", "tokens": tokens}, "insecure_peer_plane": True}
    return write_cluster_file(
        directory,
        regions=REGIONS,
        nodes=NODES,
        placement=PLACEMENT,
        extra={"security": security, **(extra or {})},
        metrics=metrics,
        http=True,
    )
