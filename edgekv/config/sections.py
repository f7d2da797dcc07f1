"""One parser per section of the cluster file: regions, nodes, placement, limits,
storage, replication, security, http and wan.

Each ``parse_<section>`` takes the section as loaded from YAML (plain data),
checks every entry and builds the section's model
(:mod:`edgekv.config.model`), or raises a ConfigError naming the first bad
entry. :func:`edgekv.config.loader.parse_config` calls them in file order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgekv.cluster.placement import PlacementRule
from edgekv.config.homes import parse_home
from edgekv.config.model import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    AuthSettings,
    HttpSettings,
    NodeSpec,
    Region,
    ReplicationSettings,
    SecuritySettings,
    StorageSettings,
    TlsSettings,
    TokenSpec,
    WanSettings,
)
from edgekv.config.values import (
    as_address,
    as_bool,
    as_ident,
    as_int,
    as_mapping,
    as_nonempty_list,
    as_positive_int,
    as_positive_seconds,
    as_string,
    check_keys,
    is_number,
    same_socket,
    show,
)
from edgekv.errors import ConfigError, InvalidArgument
from edgekv.limits import DEFAULT_LIMITS, MAX_KEY_BYTES, MIN_ANTIENTROPY_BYTES_PER_S, Limits
from edgekv.principal import AUTH_SCOPES

__all__ = [
    "parse_http",
    "parse_limits",
    "parse_nodes",
    "parse_placement",
    "parse_regions",
    "parse_replication",
    "parse_security",
    "parse_storage",
    "parse_wan",
]


def parse_regions(value: object) -> tuple[Region, ...]:
    items = as_nonempty_list(value, "regions", "at least one region")
    regions: list[Region] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"regions[{i}]"
        entry = as_mapping(item, where)
        check_keys(entry, where, required=("name", "location"), optional=())
        name = as_ident(entry["name"], f"{where}.name", "region name")
        if name in first_index:
            raise ConfigError(
                f"{where}.name: duplicate region {show(name)} (also regions[{first_index[name]}])"
            )
        first_index[name] = i
        regions.append(Region(name, _location(entry["location"], f"{where}.location")))
    return tuple(regions)


def _location(value: object, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(is_number(v) for v in value)
    ):
        raise ConfigError(
            f"{where}: expected [lat, lon], two numbers in degrees, got {show(value)}"
        )
    lat, lon = float(value[0]), float(value[1])
    # The negated form also rejects NaN, which fails every comparison.
    if not -90.0 <= lat <= 90.0:
        raise ConfigError(f"{where}: latitude {lat} is out of range; allowed -90..90")
    if not -180.0 <= lon <= 180.0:
        raise ConfigError(f"{where}: longitude {lon} is out of range; allowed -180..180")
    return lat, lon


def parse_nodes(value: object, region_names: set[str], base_dir: Path) -> tuple[NodeSpec, ...]:
    items = as_nonempty_list(value, "nodes", "at least one node")
    known_regions = ", ".join(sorted(region_names))
    nodes: list[NodeSpec] = []
    first_index: dict[str, int] = {}
    # (host, port) -> the entry that uses it, to report both ends of a clash.
    addresses: dict[tuple[str, int], str] = {}
    for i, item in enumerate(items):
        where = f"nodes[{i}]"
        entry = as_mapping(item, where)
        check_keys(
            entry,
            where,
            required=("id", "region", "listen", "data_dir"),
            optional=("peer_listen", "metrics_listen", "http_listen"),
        )
        node_id = as_ident(entry["id"], f"{where}.id", "node id")
        if node_id in first_index:
            also = f"nodes[{first_index[node_id]}]"
            raise ConfigError(f"{where}.id: duplicate node id {show(node_id)} (also {also})")
        first_index[node_id] = i
        region = as_string(entry["region"], f"{where}.region")
        if region not in region_names:
            raise ConfigError(
                f"{where}.region: unknown region {show(region)} (known: {known_regions})"
            )
        listen = as_address(entry["listen"], f"{where}.listen", addresses)
        peer_value = entry.get("peer_listen")
        peer_listen = (
            None
            if peer_value is None
            else as_address(peer_value, f"{where}.peer_listen", addresses)
        )
        if peer_listen is not None and same_socket(listen, peer_listen):
            raise ConfigError(
                f"{where}.peer_listen: {show(peer_listen)} is also this node's listen address; "
                "clients and peers need different ports"
            )
        nodes.append(
            NodeSpec(
                id=node_id,
                region=region,
                listen=listen,
                peer_listen=peer_listen,
                data_dir=_data_dir(entry["data_dir"], f"{where}.data_dir", base_dir),
                metrics_listen=(
                    None
                    if entry.get("metrics_listen") is None
                    else as_address(entry["metrics_listen"], f"{where}.metrics_listen", addresses)
                ),
                http_listen=_http_listen(entry.get("http_listen"), where, addresses, listen),
            )
        )
    return tuple(nodes)


def _http_listen(
    value: object, where: str, addresses: dict[tuple[str, int], str], listen: str
) -> str | None:
    if value is None:
        return None
    http_listen = as_address(value, f"{where}.http_listen", addresses)
    if same_socket(listen, http_listen):
        raise ConfigError(
            f"{where}.http_listen: {show(http_listen)} is also this node's listen address; "
            "the gRPC port and the HTTP door need different ports"
        )
    return http_listen


# An origin as browsers send it: scheme://host[:port], nothing after.
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


def parse_http(value: object) -> HttpSettings:
    if value is None:
        return HttpSettings()
    entry = as_mapping(value, "http")
    check_keys(
        entry,
        "http",
        required=(),
        optional=("cors_allow_origins", "h2c", "max_header_bytes", "request_timeout_s"),
    )
    raw = entry.get("cors_allow_origins", [])
    if not isinstance(raw, list):
        raise ConfigError(f"http.cors_allow_origins: expected a list of origins, got {show(raw)}")
    origins: list[str] = []
    for i, item in enumerate(raw):
        origin = as_string(item, f"http.cors_allow_origins[{i}]")
        if origin != "*" and not _ORIGIN.match(origin):
            raise ConfigError(
                f"http.cors_allow_origins[{i}]: {show(origin)} is not an origin; write "
                '"https://host[:port]" (no path), or "*" for any'
            )
        origins.append(origin.rstrip("/"))
    return HttpSettings(
        tuple(origins),
        max_header_bytes=as_int(
            entry.get("max_header_bytes", DEFAULT_MAX_HEADER_BYTES),
            "http.max_header_bytes",
            minimum=1024,
        ),
        request_timeout_s=as_positive_seconds(
            entry.get("request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S), "http.request_timeout_s"
        ),
        h2c=as_bool(entry.get("h2c", False), "http.h2c"),
    )


def _data_dir(value: object, where: str, base_dir: Path) -> Path:
    text = as_string(value, where)
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def parse_placement(
    value: object, region_names: set[str], nodes: tuple[NodeSpec, ...]
) -> tuple[PlacementRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"placement: expected a list of {{prefix, regions}} rules, got {show(value)}"
        )
    known_regions = ", ".join(sorted(region_names))
    regions_with_nodes = {n.region for n in nodes}
    rules: list[PlacementRule] = []
    first_index: dict[bytes, int] = {}
    for i, item in enumerate(value):
        where = f"placement[{i}]"
        entry = as_mapping(item, where)
        check_keys(entry, where, required=("prefix", "regions"), optional=("home",))
        prefix_text = as_string(entry["prefix"], f"{where}.prefix")
        if not prefix_text:
            raise ConfigError(
                f"{where}.prefix: the prefix is empty; keys without a rule are global already, "
                'so give a non-empty prefix such as "eu/"'
            )
        prefix = prefix_text.encode("utf-8")
        if len(prefix) > MAX_KEY_BYTES:
            raise ConfigError(
                f"{where}.prefix: the prefix is {len(prefix)} bytes; keys are at most "
                f"{MAX_KEY_BYTES} bytes, so it could never match"
            )
        if prefix in first_index:
            raise ConfigError(
                f"{where}.prefix: duplicate prefix {show(prefix_text)} "
                f"(also placement[{first_index[prefix]}])"
            )
        first_index[prefix] = i
        names = as_nonempty_list(entry["regions"], f"{where}.regions", "at least one region")
        regions: list[str] = []
        for j, name_value in enumerate(names):
            name = as_string(name_value, f"{where}.regions[{j}]")
            if name not in region_names:
                raise ConfigError(
                    f"{where}.regions[{j}]: unknown region {show(name)} (known: {known_regions})"
                )
            if name in regions:
                raise ConfigError(f"{where}.regions[{j}]: duplicate region {show(name)}")
            regions.append(name)
        # Some listed regions may be empty (planned PoPs), but if all are, the
        # keys could not be stored anywhere.
        if not regions_with_nodes.intersection(regions):
            which = (
                f"region {show(regions[0])}"
                if len(regions) == 1
                else "any of regions " + ", ".join(show(r) for r in regions)
            )
            raise ConfigError(
                f"{where}.regions: no node in {which}, so keys under "
                f"{show(prefix_text)} could not be stored anywhere"
            )
        home = parse_home(entry.get("home"), where, regions, nodes)
        rules.append(PlacementRule(prefix, tuple(regions), home))
    return tuple(rules)


def parse_limits(value: object) -> Limits:
    if value is None:
        return DEFAULT_LIMITS
    entry = as_mapping(value, "limits")
    names = tuple(f.name for f in fields(Limits))
    check_keys(entry, "limits", required=(), optional=names)
    values: dict[str, Any] = {}
    for name, raw in entry.items():
        where = f"limits.{name}"
        values[name] = as_int(raw, where, minimum=1)
        # Limits is the authority on what a valid limit is; build it one key
        # at a time so its complaint can be pinned on the right entry.
        try:
            Limits(**{name: values[name]})
        except InvalidArgument as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    try:
        return Limits(**values)
    except InvalidArgument as exc:
        raise ConfigError(f"limits: {exc}") from exc


def parse_storage(value: object) -> StorageSettings:
    if value is None:
        return StorageSettings()
    entry = as_mapping(value, "storage")
    check_keys(entry, "storage", required=(), optional=("sync_writes", "block_cache_mb"))
    default = StorageSettings()
    return StorageSettings(
        sync_writes=as_bool(entry.get("sync_writes", default.sync_writes), "storage.sync_writes"),
        # 0 is a valid RocksDB cache capacity: reads then always go to the files.
        block_cache_mb=as_int(
            entry.get("block_cache_mb", default.block_cache_mb), "storage.block_cache_mb", minimum=0
        ),
    )


def parse_replication(value: object) -> ReplicationSettings:
    if value is None:
        return ReplicationSettings()
    entry = as_mapping(value, "replication")
    kinds: dict[str, Callable[[object, str], Any]] = {}
    for f in fields(ReplicationSettings):
        if f.name.endswith("_bytes_per_s"):
            kinds[f.name] = _as_bytes_per_s
        elif f.name.endswith("_s"):
            kinds[f.name] = as_positive_seconds
        else:
            kinds[f.name] = as_positive_int
    check_keys(entry, "replication", required=(), optional=tuple(kinds))
    settings = ReplicationSettings(
        **{name: kinds[name](raw, f"replication.{name}") for name, raw in entry.items()}
    )
    if (floor := settings.antientropy_min_bytes_per_s) > (pace := settings.antientropy_bytes_per_s):
        where = "replication.antientropy_min_bytes_per_s"
        raise ConfigError(f"{where}: {floor} is more than antientropy_bytes_per_s ({pace})")
    if settings.tombstone_grace_s < settings.antientropy_interval_s:
        raise ConfigError(
            f"replication.tombstone_grace_s is {settings.tombstone_grace_s:g} s; it must be at "
            f"least replication.antientropy_interval_s ({settings.antientropy_interval_s:g} s), "
            "so a tombstone lives through an anti-entropy round before it is collected"
        )
    return settings


def _as_bytes_per_s(value: object, where: str) -> int:
    # Slower, one full peer message would wait for seconds inside a peer call.
    return as_int(value, where, minimum=MIN_ANTIENTROPY_BYTES_PER_S)


def parse_security(value: object, base_dir: Path) -> SecuritySettings:
    if value is None:
        return SecuritySettings()
    entry = as_mapping(value, "security")
    check_keys(
        entry,
        "security",
        required=(),
        optional=("tls", "auth", "peer_secret_file", "insecure_peer_plane"),
    )
    tls = None
    if entry.get("tls") is not None:
        t = as_mapping(entry["tls"], "security.tls")
        check_keys(t, "security.tls", required=("ca_file", "cert_file", "key_file"), optional=())

        def path(key: str) -> str:
            text = as_string(t[key], f"security.tls.{key}")
            return text if Path(text).is_absolute() else str(base_dir / text)

        tls = TlsSettings(Path(path("ca_file")), path("cert_file"), path("key_file"))
    auth = None
    if entry.get("auth") is not None:
        a = as_mapping(entry["auth"], "security.auth")
        check_keys(a, "security.auth", required=("mode",), optional=("tokens",))
        mode = a["mode"]
        if mode not in ("tokens", "disabled"):
            raise ConfigError(
                f"security.auth.mode: {show(mode)} is not allowed; use tokens, or disabled "
                "(local development only)"
            )
        tokens = []
        names: set[str] = set()
        raw_tokens = a.get("tokens") or []
        if not isinstance(raw_tokens, list):
            raise ConfigError(f"security.auth.tokens: expected a list, got {show(raw_tokens)}")
        for i, item in enumerate(raw_tokens):
            where = f"security.auth.tokens[{i}]"
            tok = as_mapping(item, where)
            check_keys(tok, where, required=("name", "sha256", "scope"), optional=("prefixes",))
            name = as_string(tok["name"], f"{where}.name")
            if name in names:
                raise ConfigError(f"{where}.name: duplicate token name {show(name)}")
            names.add(name)
            digest = as_string(tok["sha256"], f"{where}.sha256").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(
                    f"{where}.sha256: expected 64 hex digits (sha256 of the token, never the "
                    "token itself)"
                )
            scope = tok["scope"]
            if scope not in AUTH_SCOPES:
                raise ConfigError(
                    f"{where}.scope: {show(scope)} is not allowed; use one of "
                    f"{', '.join(AUTH_SCOPES)}"
                )
            raw_prefixes = tok.get("prefixes") or []
            if not isinstance(raw_prefixes, list):
                raise ConfigError(f"{where}.prefixes: expected a list, got {show(raw_prefixes)}")
            prefixes = tuple(
                as_string(p, f"{where}.prefixes[{j}]").encode("utf-8")
                for j, p in enumerate(raw_prefixes)
            )
            tokens.append(TokenSpec(name, bytes.fromhex(digest), scope, prefixes))
        if mode == "tokens" and not tokens:
            raise ConfigError("security.auth.tokens: mode is tokens but no token is configured")
        auth = AuthSettings(mode, tuple(tokens))
    secret_file = None
    if entry.get("peer_secret_file") is not None:
        text = as_string(entry["peer_secret_file"], "security.peer_secret_file")
        if not text:
            raise ConfigError("security.peer_secret_file: the path is empty")
        secret_file = Path(text) if Path(text).is_absolute() else base_dir / text
    insecure = as_bool(entry.get("insecure_peer_plane", False), "security.insecure_peer_plane")
    if insecure and (tls is not None or secret_file is not None):
        raise ConfigError(
            "security.insecure_peer_plane: true, but the peer plane is authenticated "
            "(security.tls or security.peer_secret_file is set); remove insecure_peer_plane"
        )
    return SecuritySettings(tls, auth, secret_file, insecure)


def parse_wan(value: object, region_names: set[str]) -> WanSettings:
    if value is None:
        return WanSettings()
    entry = as_mapping(value, "wan")
    check_keys(entry, "wan", required=(), optional=("delays_ms",))
    delays: dict[tuple[str, str], float] = {}
    matrix = as_mapping(entry.get("delays_ms", {}), "wan.delays_ms")
    for a, row in matrix.items():
        if a not in region_names:
            raise ConfigError(f"wan.delays_ms: unknown region {show(a)}")
        for b, ms in as_mapping(row, f"wan.delays_ms.{a}").items():
            where = f"wan.delays_ms.{a}.{b}"
            if b not in region_names:
                raise ConfigError(f"wan.delays_ms.{a}: unknown region {show(b)}")
            if not isinstance(ms, int | float) or isinstance(ms, bool) or ms < 0:
                raise ConfigError(f"{where}: {ms!r} is not allowed; use milliseconds >= 0")
            delays[(a, b)] = delays[(b, a)] = float(ms)
    return WanSettings(delays)
