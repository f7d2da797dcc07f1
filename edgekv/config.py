"""The cluster file: regions, nodes, placement rules and per-node settings.

The file is YAML, read with a safe loader (plain data only), and turned into
frozen dataclasses after validating every entry. Every node of a cluster reads
the same file, so placement and routing can be computed from it alone::

    cluster: demo
    regions:
      - {name: eu-west, location: [50.11, 8.68]}      # lat, lon
      - {name: us-east, location: [38.95, -77.45]}
    nodes:
      - {id: fra-1, region: eu-west, listen: "127.0.0.1:7101",
         peer_listen: "127.0.0.1:7201", data_dir: ./data/fra-1}
      - {id: iad-1, region: us-east, listen: "127.0.0.1:7102",
         peer_listen: "127.0.0.1:7202", data_dir: ./data/iad-1}
    placement:                                          # optional
      - {prefix: "eu/", regions: [eu-west]}
    limits: {max_value_bytes: 1048576}                  # optional
    storage: {sync_writes: false, block_cache_mb: 64}   # optional
    replication: {heartbeat_interval_s: 1.0}            # optional

A :class:`~edgekv.errors.ConfigError` names the entry, the bad value and what
is allowed: ``nodes[2].region: unknown region "eu-wst" (known: eu-west, us-east)``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from edgekv.errors import ConfigError, InvalidArgument
from edgekv.limits import DEFAULT_LIMITS, MAX_KEY_BYTES, Limits
from edgekv.storage.clock import DEFAULT_MAX_SKEW_MS

__all__ = [
    "ClusterConfig",
    "NodeConfig",
    "PlacementRule",
    "Region",
    "ReplicationSettings",
    "StorageConfig",
    "load_config",
    "parse_config",
    "parse_host_port",
]

# Ids end up in file names, metric labels and log lines; keep them boring.
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ID_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -"
_HOSTNAME_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_ADDRESS_EXAMPLE = '"127.0.0.1:7101", "[::1]:7101" or "localhost:7101"'
# A wildcard address is per machine: one node per pod/VM may each bind it.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


# -- the model ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    """A region: a name and a (latitude, longitude) in degrees.

    Latitude is in [-90, 90], longitude in [-180, 180]. Distances between
    regions are the fallback for routing when no RTT has been measured.
    """

    name: str
    location: tuple[float, float]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One PoP node. ``listen`` serves clients; peers dial ``peer_listen``.

    Addresses are kept as written (``host:port``, port 0 = pick a free port).
    ``data_dir`` is absolute when the config came from :func:`load_config`.
    """

    id: str
    region: str
    listen: str
    peer_listen: str | None
    data_dir: Path
    metrics_listen: str | None = None  # Prometheus /metrics over HTTP, host:port


@dataclass(frozen=True, slots=True)
class PlacementRule:
    """Keys starting with ``prefix`` may only be held in ``regions``."""

    prefix: bytes
    regions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """How a node uses RocksDB. ``sync_writes`` fsyncs the WAL before acknowledging."""

    sync_writes: bool = False
    block_cache_mb: int = 64


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """Timings and bounds of replication, membership and log retention.

    The log is trimmed below what every peer acknowledged, but never keeps more
    than ``log_retention_entries`` entries nor entries older than
    ``log_retention_s``; a peer that falls behind that is repaired by
    anti-entropy. Tombstones and expired records are collected every
    ``gc_interval_s`` once dead for ``tombstone_grace_s`` and synced to every
    peer (storage/tombstones.py).
    """

    # Remote HLC timestamps further ahead of local wall time are refused.
    max_clock_skew_ms: int = DEFAULT_MAX_SKEW_MS
    heartbeat_interval_s: float = 1.0
    antientropy_interval_s: float = 30.0
    batch_entries: int = 512
    max_inflight_batches: int = 64
    log_trim_interval_s: float = 5.0
    log_retention_entries: int = 1_000_000
    log_retention_s: float = 24 * 3600.0
    tombstone_grace_s: float = 3 * 24 * 3600.0
    gc_interval_s: float = 600.0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS for the client port and mutual TLS between peers.

    ``cert_file`` and ``key_file`` may contain ``{node}``, replaced by the node
    id, so one cluster file serves every node. Peers must present a certificate
    signed by ``ca_file``; clients verify the node's certificate with it.
    """

    ca_file: Path
    cert_file: str
    key_file: str

    def cert_for(self, node_id: str) -> Path:
        return Path(self.cert_file.replace("{node}", node_id))

    def key_for(self, node_id: str) -> Path:
        return Path(self.key_file.replace("{node}", node_id))


AUTH_SCOPES = ("read", "write", "admin")


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """A bearer token, by its SHA-256 (never the secret), with a scope and prefixes."""

    name: str
    sha256: bytes
    scope: str  # read < write < admin
    prefixes: tuple[bytes, ...] = ()  # empty: every key


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``mode: tokens`` checks bearer tokens; ``disabled`` is for local development only."""

    mode: str
    tokens: tuple[TokenSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    tls: TlsSettings | None = None
    auth: AuthSettings | None = None  # None: not configured, the node refuses to start


@dataclass(frozen=True, slots=True)
class WanSettings:
    """One-way delays between regions for the local launcher's WAN emulation.

    ``delays_ms[(a, b)]`` is symmetric; pairs not listed are derived from the
    great-circle distance between the regions (cluster/geo.py).
    """

    delays_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A validated cluster file. Immutable, so it may be shared freely.

    Built by :func:`parse_config` / :func:`load_config`, which guarantee: region
    names and node ids are unique, every node's region is declared, addresses
    parse, placement prefixes are unique and non-empty and each rule names
    known regions of which at least one has a node. ``source`` is the file it
    was read from (None when parsed from a document).
    """

    cluster: str
    regions: tuple[Region, ...]
    nodes: tuple[NodeConfig, ...]
    placement: tuple[PlacementRule, ...] = ()
    limits: Limits = DEFAULT_LIMITS
    storage: StorageConfig = StorageConfig()
    source: Path | None = None
    replication: ReplicationSettings = ReplicationSettings()
    wan: WanSettings = WanSettings()
    security: SecuritySettings = SecuritySettings()
    # Lookup tables derived from the fields above; never compared or printed.
    _node_by_id: dict[str, NodeConfig] = field(init=False, repr=False, compare=False)
    _region_by_name: dict[str, Region] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_node_by_id", {n.id: n for n in self.nodes})
        object.__setattr__(self, "_region_by_name", {r.name: r for r in self.regions})

    def node(self, node_id: str) -> NodeConfig:
        """The node ``node_id``; ConfigError naming the defined nodes if there is none."""
        try:
            return self._node_by_id[node_id]
        except KeyError:
            raise ConfigError(
                f"unknown node {_show(node_id)}; the cluster file defines: "
                f"{', '.join(sorted(self._node_by_id))}"
            ) from None

    def region(self, name: str) -> Region:
        """The region ``name``; ConfigError naming the defined regions if there is none."""
        try:
            return self._region_by_name[name]
        except KeyError:
            raise ConfigError(
                f"unknown region {_show(name)}; the cluster file defines: "
                f"{', '.join(sorted(self._region_by_name))}"
            ) from None

    def nodes_in_region(self, name: str) -> tuple[NodeConfig, ...]:
        """The nodes of region ``name`` in file order (may be empty); ConfigError if unknown."""
        self.region(name)
        return tuple(n for n in self.nodes if n.region == name)


# -- loading ------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate the cluster file at ``path``.

    Relative ``data_dir`` entries resolve against the directory of the file,
    so a cluster file and its data can move together. Every failure (missing
    or unreadable file, bad YAML, invalid entry) is a ConfigError whose
    message starts with the path.
    """
    source = Path(path).absolute()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{source}: cannot read the cluster file: {reason}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: the cluster file is not UTF-8 text: {exc}") from exc
    try:
        doc = yaml.load(text, Loader=_StrictSafeLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    try:
        config = parse_config(doc, source.parent)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _with_source(config, source)


def parse_config(doc: object, base_dir: Path) -> ClusterConfig:
    """Validate a loaded YAML document and build the ClusterConfig.

    Relative ``data_dir`` entries resolve against ``base_dir``. Raises
    ConfigError naming the first bad entry (``nodes[1].id: ...``).
    """
    base_dir = Path(base_dir)
    if doc is None:
        raise ConfigError("the cluster file is empty")
    top = _mapping(doc, "cluster file")
    _check_keys(
        top,
        "cluster file",
        required=("cluster", "regions", "nodes"),
        optional=("placement", "limits", "storage", "replication", "wan", "security"),
    )
    cluster = _ident(top["cluster"], "cluster", "cluster name")
    regions = _parse_regions(top["regions"])
    region_names = {r.name for r in regions}
    nodes = _parse_nodes(top["nodes"], region_names, base_dir)
    placement = _parse_placement(top.get("placement"), region_names, nodes)
    return ClusterConfig(
        cluster=cluster,
        regions=regions,
        nodes=nodes,
        placement=placement,
        limits=_parse_limits(top.get("limits")),
        storage=_parse_storage(top.get("storage")),
        replication=_parse_replication(top.get("replication")),
        wan=_parse_wan(top.get("wan"), region_names),
        security=_parse_security(top.get("security"), base_dir),
    )


def parse_host_port(text: object) -> tuple[str, int]:
    """Split ``host:port`` into (host, port); ConfigError if it is not one.

    Accepts IPv4 (``127.0.0.1:7101``), bracketed IPv6 (``[::1]:7101``) and
    host names (``localhost:7101``). The port is 0..65535; 0 means "pick a
    free port" (tests and the local launcher use it). The host comes back
    without brackets.
    """
    if not isinstance(text, str):
        raise ConfigError(f"expected host:port such as {_ADDRESS_EXAMPLE}, got {_show(text)}")
    bad = ConfigError(f"expected host:port such as {_ADDRESS_EXAMPLE}, got {_show(text)}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise bad
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{_show(host)} in {_show(text)} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise bad
        if ":" in host:
            raise ConfigError(
                f'IPv6 addresses need brackets, as in "[::1]:7101"; got {_show(text)}'
            )
        if not _valid_host(host):
            raise ConfigError(f"{_show(host)} in {_show(text)} is not an IPv4 address or host name")
    if not _PORT_RE.fullmatch(port_text):
        raise bad
    port = int(port_text)
    if port > 65535:
        raise ConfigError(
            f"port {port} in {_show(text)} is out of range; allowed 0..65535 (0 picks a free port)"
        )
    return host, port


# -- sections -----------------------------------------------------------------


def _parse_regions(value: object) -> tuple[Region, ...]:
    items = _nonempty_list(value, "regions", "at least one region")
    regions: list[Region] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"regions[{i}]"
        entry = _mapping(item, where)
        _check_keys(entry, where, required=("name", "location"), optional=())
        name = _ident(entry["name"], f"{where}.name", "region name")
        if name in first_index:
            raise ConfigError(
                f"{where}.name: duplicate region {_show(name)} (also regions[{first_index[name]}])"
            )
        first_index[name] = i
        regions.append(Region(name, _location(entry["location"], f"{where}.location")))
    return tuple(regions)


def _location(value: object, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
    ):
        raise ConfigError(
            f"{where}: expected [lat, lon], two numbers in degrees, got {_show(value)}"
        )
    lat, lon = float(value[0]), float(value[1])
    # The negated form also rejects NaN, which fails every comparison.
    if not -90.0 <= lat <= 90.0:
        raise ConfigError(f"{where}: latitude {lat} is out of range; allowed -90..90")
    if not -180.0 <= lon <= 180.0:
        raise ConfigError(f"{where}: longitude {lon} is out of range; allowed -180..180")
    return lat, lon


def _parse_nodes(value: object, region_names: set[str], base_dir: Path) -> tuple[NodeConfig, ...]:
    items = _nonempty_list(value, "nodes", "at least one node")
    known_regions = ", ".join(sorted(region_names))
    nodes: list[NodeConfig] = []
    first_index: dict[str, int] = {}
    # (host, port) -> the entry that uses it, to report both ends of a clash.
    addresses: dict[tuple[str, int], str] = {}
    for i, item in enumerate(items):
        where = f"nodes[{i}]"
        entry = _mapping(item, where)
        _check_keys(
            entry,
            where,
            required=("id", "region", "listen", "data_dir"),
            optional=("peer_listen", "metrics_listen"),
        )
        node_id = _ident(entry["id"], f"{where}.id", "node id")
        if node_id in first_index:
            also = f"nodes[{first_index[node_id]}]"
            raise ConfigError(f"{where}.id: duplicate node id {_show(node_id)} (also {also})")
        first_index[node_id] = i
        region = _string(entry["region"], f"{where}.region")
        if region not in region_names:
            raise ConfigError(
                f"{where}.region: unknown region {_show(region)} (known: {known_regions})"
            )
        listen = _address(entry["listen"], f"{where}.listen", addresses)
        peer_value = entry.get("peer_listen")
        peer_listen = (
            None if peer_value is None else _address(peer_value, f"{where}.peer_listen", addresses)
        )
        if peer_listen is not None and _same_socket(listen, peer_listen):
            raise ConfigError(
                f"{where}.peer_listen: {_show(peer_listen)} is also this node's listen address; "
                "clients and peers need different ports"
            )
        nodes.append(
            NodeConfig(
                id=node_id,
                region=region,
                listen=listen,
                peer_listen=peer_listen,
                data_dir=_data_dir(entry["data_dir"], f"{where}.data_dir", base_dir),
                metrics_listen=(
                    None
                    if entry.get("metrics_listen") is None
                    else _address(entry["metrics_listen"], f"{where}.metrics_listen", addresses)
                ),
            )
        )
    return tuple(nodes)


def _address(value: object, where: str, seen: dict[tuple[str, int], str]) -> str:
    try:
        host, port = parse_host_port(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    assert isinstance(value, str)  # parse_host_port accepted it
    # Port 0 is a fresh port every time, and a wildcard host is per machine;
    # anything else names one socket that only one node can bind.
    if port != 0 and host not in _WILDCARD_HOSTS:
        socket = (host.lower(), port)
        other = seen.get(socket)
        if other is not None:
            raise ConfigError(f"{where}: address {_show(value)} is already used by {other}")
        seen[socket] = where
    return value


def _same_socket(a: str, b: str) -> bool:
    host_a, port_a = parse_host_port(a)
    host_b, port_b = parse_host_port(b)
    return port_a != 0 and port_a == port_b and host_a.lower() == host_b.lower()


def _data_dir(value: object, where: str, base_dir: Path) -> Path:
    text = _string(value, where)
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def _parse_placement(
    value: object, region_names: set[str], nodes: tuple[NodeConfig, ...]
) -> tuple[PlacementRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"placement: expected a list of {{prefix, regions}} rules, got {_show(value)}"
        )
    known_regions = ", ".join(sorted(region_names))
    regions_with_nodes = {n.region for n in nodes}
    rules: list[PlacementRule] = []
    first_index: dict[bytes, int] = {}
    for i, item in enumerate(value):
        where = f"placement[{i}]"
        entry = _mapping(item, where)
        _check_keys(entry, where, required=("prefix", "regions"), optional=())
        prefix_text = _string(entry["prefix"], f"{where}.prefix")
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
                f"{where}.prefix: duplicate prefix {_show(prefix_text)} "
                f"(also placement[{first_index[prefix]}])"
            )
        first_index[prefix] = i
        names = _nonempty_list(entry["regions"], f"{where}.regions", "at least one region")
        regions: list[str] = []
        for j, name_value in enumerate(names):
            name = _string(name_value, f"{where}.regions[{j}]")
            if name not in region_names:
                raise ConfigError(
                    f"{where}.regions[{j}]: unknown region {_show(name)} (known: {known_regions})"
                )
            if name in regions:
                raise ConfigError(f"{where}.regions[{j}]: duplicate region {_show(name)}")
            regions.append(name)
        # Some listed regions may be empty (planned PoPs), but if all are, the
        # keys could not be stored anywhere.
        if not regions_with_nodes.intersection(regions):
            which = (
                f"region {_show(regions[0])}"
                if len(regions) == 1
                else "any of regions " + ", ".join(_show(r) for r in regions)
            )
            raise ConfigError(
                f"{where}.regions: no node in {which}, so keys under "
                f"{_show(prefix_text)} could not be stored anywhere"
            )
        rules.append(PlacementRule(prefix, tuple(regions)))
    return tuple(rules)


def _parse_limits(value: object) -> Limits:
    if value is None:
        return DEFAULT_LIMITS
    entry = _mapping(value, "limits")
    names = tuple(f.name for f in fields(Limits))
    _check_keys(entry, "limits", required=(), optional=names)
    values: dict[str, Any] = {}
    for name, raw in entry.items():
        where = f"limits.{name}"
        values[name] = _int(raw, where, minimum=1)
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


def _parse_storage(value: object) -> StorageConfig:
    if value is None:
        return StorageConfig()
    entry = _mapping(value, "storage")
    _check_keys(entry, "storage", required=(), optional=("sync_writes", "block_cache_mb"))
    default = StorageConfig()
    return StorageConfig(
        sync_writes=_bool(entry.get("sync_writes", default.sync_writes), "storage.sync_writes"),
        # 0 is a valid RocksDB cache capacity: reads then always go to the files.
        block_cache_mb=_int(
            entry.get("block_cache_mb", default.block_cache_mb), "storage.block_cache_mb", minimum=0
        ),
    )


def _parse_replication(value: object) -> ReplicationSettings:
    if value is None:
        return ReplicationSettings()
    entry = _mapping(value, "replication")
    kinds: dict[str, Callable[[object, str], Any]] = {}
    for f in fields(ReplicationSettings):
        if f.name.endswith("_s"):
            kinds[f.name] = _positive_seconds
        else:
            kinds[f.name] = _positive_int
    _check_keys(entry, "replication", required=(), optional=tuple(kinds))
    settings = ReplicationSettings(
        **{name: kinds[name](raw, f"replication.{name}") for name, raw in entry.items()}
    )
    if settings.tombstone_grace_s < settings.antientropy_interval_s:
        raise ConfigError(
            f"replication.tombstone_grace_s is {settings.tombstone_grace_s:g} s; it must be at "
            f"least replication.antientropy_interval_s ({settings.antientropy_interval_s:g} s), "
            "so a tombstone lives through an anti-entropy round before it is collected"
        )
    return settings


def _parse_security(value: object, base_dir: Path) -> SecuritySettings:
    if value is None:
        return SecuritySettings()
    entry = _mapping(value, "security")
    _check_keys(entry, "security", required=(), optional=("tls", "auth"))
    tls = None
    if entry.get("tls") is not None:
        t = _mapping(entry["tls"], "security.tls")
        _check_keys(t, "security.tls", required=("ca_file", "cert_file", "key_file"), optional=())

        def path(key: str) -> str:
            text = _string(t[key], f"security.tls.{key}")
            return text if Path(text).is_absolute() else str(base_dir / text)

        tls = TlsSettings(Path(path("ca_file")), path("cert_file"), path("key_file"))
    auth = None
    if entry.get("auth") is not None:
        a = _mapping(entry["auth"], "security.auth")
        _check_keys(a, "security.auth", required=("mode",), optional=("tokens",))
        mode = a["mode"]
        if mode not in ("tokens", "disabled"):
            raise ConfigError(
                f"security.auth.mode: {_show(mode)} is not allowed; use tokens, or disabled "
                "(local development only)"
            )
        tokens = []
        names: set[str] = set()
        raw_tokens = a.get("tokens") or []
        if not isinstance(raw_tokens, list):
            raise ConfigError(f"security.auth.tokens: expected a list, got {_show(raw_tokens)}")
        for i, item in enumerate(raw_tokens):
            where = f"security.auth.tokens[{i}]"
            tok = _mapping(item, where)
            _check_keys(tok, where, required=("name", "sha256", "scope"), optional=("prefixes",))
            name = _string(tok["name"], f"{where}.name")
            if name in names:
                raise ConfigError(f"{where}.name: duplicate token name {_show(name)}")
            names.add(name)
            digest = _string(tok["sha256"], f"{where}.sha256").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(
                    f"{where}.sha256: expected 64 hex digits (sha256 of the token, never the "
                    "token itself)"
                )
            scope = tok["scope"]
            if scope not in AUTH_SCOPES:
                raise ConfigError(
                    f"{where}.scope: {_show(scope)} is not allowed; use one of "
                    f"{', '.join(AUTH_SCOPES)}"
                )
            raw_prefixes = tok.get("prefixes") or []
            if not isinstance(raw_prefixes, list):
                raise ConfigError(f"{where}.prefixes: expected a list, got {_show(raw_prefixes)}")
            prefixes = tuple(
                _string(p, f"{where}.prefixes[{j}]").encode("utf-8")
                for j, p in enumerate(raw_prefixes)
            )
            tokens.append(TokenSpec(name, bytes.fromhex(digest), scope, prefixes))
        if mode == "tokens" and not tokens:
            raise ConfigError("security.auth.tokens: mode is tokens but no token is configured")
        auth = AuthSettings(mode, tuple(tokens))
    return SecuritySettings(tls, auth)


def _parse_wan(value: object, region_names: set[str]) -> WanSettings:
    if value is None:
        return WanSettings()
    entry = _mapping(value, "wan")
    _check_keys(entry, "wan", required=(), optional=("delays_ms",))
    delays: dict[tuple[str, str], float] = {}
    matrix = _mapping(entry.get("delays_ms", {}), "wan.delays_ms")
    for a, row in matrix.items():
        if a not in region_names:
            raise ConfigError(f"wan.delays_ms: unknown region {_show(a)}")
        for b, ms in _mapping(row, f"wan.delays_ms.{a}").items():
            where = f"wan.delays_ms.{a}.{b}"
            if b not in region_names:
                raise ConfigError(f"wan.delays_ms.{a}: unknown region {_show(b)}")
            if not isinstance(ms, int | float) or isinstance(ms, bool) or ms < 0:
                raise ConfigError(f"{where}: {ms!r} is not allowed; use milliseconds >= 0")
            delays[(a, b)] = delays[(b, a)] = float(ms)
    return WanSettings(delays)


# -- scalar checks ------------------------------------------------------------


def _mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings, got {_show(key)}")
    return dict(value)


def _check_keys(
    entry: Mapping[str, object],
    where: str,
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...],
) -> None:
    allowed = required + optional
    for key in entry:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {_show(key)} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in entry:
            raise ConfigError(f"{where}: missing required key {_show(key)}")


def _nonempty_list(value: object, where: str, need: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list with {need}, got {_show(value)}")
    if not value:
        raise ConfigError(f"{where}: the list is empty; it needs {need}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        hint = "; quote it" if isinstance(value, int | float | bool) else ""
        raise ConfigError(f"{where}: expected a string, got {_show(value)}{hint}")
    return value


def _ident(value: object, where: str, what: str) -> str:
    text = _string(value, where)
    if not _ID_RE.fullmatch(text):
        raise ConfigError(f"{where}: invalid {what} {_show(text)}; use {_ID_RULE}")
    return text


def _int(value: object, where: str, *, minimum: int) -> int:
    # bool is an int subclass, but `true` for a size is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {_show(value)}")
    if value < minimum:
        raise ConfigError(f"{where}: {value} is too small; allowed: an integer >= {minimum}")
    return value


def _positive_int(value: object, where: str) -> int:
    return _int(value, where, minimum=1)


def _positive_seconds(value: object, where: str) -> float:
    if not _is_number(value):
        raise ConfigError(f"{where}: expected a number of seconds > 0, got {_show(value)}")
    seconds = float(value)  # type: ignore[arg-type]  # _is_number checked it
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{where}: {seconds} is not allowed; use a number of seconds > 0")
    return seconds


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _valid_host(host: str) -> bool:
    if host.replace(".", "").isdigit():
        # All digits and dots: only a dotted-quad IPv4 address is meant.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_HOSTNAME_LABEL_RE.fullmatch(label) for label in labels)


def _show(value: object) -> str:
    """A value as the user wrote it, short enough for one message line."""
    if isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = f"{str(value).lower()} (a boolean)"
    elif isinstance(value, dict):
        text = f"a mapping {value!r}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _with_source(config: ClusterConfig, source: Path) -> ClusterConfig:
    return ClusterConfig(
        cluster=config.cluster,
        regions=config.regions,
        nodes=config.nodes,
        placement=config.placement,
        limits=config.limits,
        storage=config.storage,
        source=source,
        replication=config.replication,
        wan=config.wan,
        security=config.security,
    )


# -- YAML ---------------------------------------------------------------------


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key repeated in one mapping
    is an error: plain YAML keeps the last one silently, which turns a pasted
    duplicate into a hard-to-see misconfiguration."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        # `<<` merges may legitimately be overridden by explicit keys.
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"line {line}: duplicate key {_show(key)} in one mapping")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
