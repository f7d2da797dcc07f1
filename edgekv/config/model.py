"""The cluster file as data: frozen dataclasses, no parsing and no YAML.

:mod:`edgekv.config.loader` reads and validates the file and builds these;
everything else (the node, routing, the CLI, the launcher) only reads them.
They are immutable, so they may be shared by any number of threads and tasks.
A changed copy is made with :func:`dataclasses.replace`.

Naming, one rule for every class here:

- ``ClusterConfig`` is the whole parsed cluster file; it is the only ``*Config``.
- ``*Settings`` is one section of the file that tunes a subsystem:
  ``storage`` -> :class:`StorageSettings`, ``replication`` ->
  :class:`ReplicationSettings`, ``wan`` -> :class:`WanSettings`, ``security``
  -> :class:`SecuritySettings` with its sub-sections ``security.tls`` ->
  :class:`TlsSettings` and ``security.auth`` -> :class:`AuthSettings`.
- ``*Spec`` is one entry of a list that declares something which exists
  elsewhere at run time: ``nodes[i]`` -> :class:`NodeSpec` (the running node is
  ``Node``), ``security.auth.tokens[i]`` -> :class:`TokenSpec`.
- Domain values keep their domain name and live with the code that owns them:
  ``regions[i]`` -> :class:`Region` (here, the file is its only source),
  ``placement[i]`` -> :class:`edgekv.cluster.placement.PlacementRule`,
  ``limits`` -> :class:`edgekv.limits.Limits`, the auth scopes ->
  ``edgekv.principal.AUTH_SCOPES``.

Importing this module pulls in neither PyYAML nor RocksDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgekv.cluster.placement import PlacementRule
from edgekv.config.values import show
from edgekv.config.watch import WatchSettings
from edgekv.errors import ConfigError
from edgekv.limits import DEFAULT_ANTIENTROPY_BYTES_PER_S, DEFAULT_LIMITS, Limits
from edgekv.storage.clock import DEFAULT_MAX_SKEW_MS

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "AuthSettings",
    "ClusterConfig",
    "HttpSettings",
    "NodeSpec",
    "Region",
    "ReplicationSettings",
    "SecuritySettings",
    "StorageSettings",
    "TlsSettings",
    "TokenSpec",
    "WanSettings",
]


@dataclass(frozen=True, slots=True)
class Region:
    """A region: a name and a (latitude, longitude) in degrees.

    Latitude is in [-90, 90], longitude in [-180, 180]. Distances between
    regions are the fallback for routing when no RTT has been measured.
    """

    name: str
    location: tuple[float, float]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One PoP node. ``listen`` serves clients; peers dial ``peer_listen``.

    One entry of the file's ``nodes`` list; the running node built from it is
    :class:`edgekv.server.node.Node`, which keeps it as ``node.spec``.
    Addresses are kept as written (``host:port``, port 0 = pick a free port).
    ``data_dir`` is absolute when the config came from
    :func:`edgekv.config.loader.load_config`.
    """

    id: str
    region: str
    listen: str
    peer_listen: str | None
    data_dir: Path
    metrics_listen: str | None = None  # Prometheus /metrics over HTTP, host:port
    # The HTTP door (Connect, gRPC-Web, REST) on host:port; None: not served.
    http_listen: str | None = None


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """How a node uses RocksDB. ``sync_writes`` fsyncs the WAL before acknowledging."""

    sync_writes: bool = False
    block_cache_mb: int = 64


@dataclass(frozen=True, slots=True)
class ConsistencySettings:
    """The cluster file's ``consistency:`` section: bounds of SESSION reads.

    ``session_wait_ms``: how long a PoP waits for replication to cover a
    session token before it forwards the read to a PoP that has (at most half
    the call's time left).
    """

    session_wait_ms: int = 300


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
    # Bytes per second anti-entropy may move through this node, in and out
    # (replication/pacer.py): reads stay fast while a node is repaired.
    antientropy_bytes_per_s: int = DEFAULT_ANTIENTROPY_BYTES_PER_S
    # The repair pace yields to foreground work (replication/pacecontrol.py): it
    # is cut while more than 1% of the event loop's wake-ups come later than
    # this (its p99 lateness, what reads wait for), never below the floor
    # (0: an eighth of antientropy_bytes_per_s, at least 1 MiB/s).
    antientropy_lag_target_ms: int = 2
    antientropy_min_bytes_per_s: int = 0
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


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """A bearer token, by its SHA-256 (never the secret), with a scope and prefixes."""

    name: str
    sha256: bytes
    scope: str  # one of edgekv.principal.AUTH_SCOPES: read < write < admin
    prefixes: tuple[bytes, ...] = ()  # empty: every key


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``mode: tokens`` checks bearer tokens; ``disabled`` is for local development only."""

    mode: str
    tokens: tuple[TokenSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """The ``security`` section: TLS (optional), client authentication, the peer plane.

    Peers prove their node id by mutual TLS (``tls``) or, on a private network
    without TLS, with the cluster peer secret held in ``peer_secret_file`` (the
    path only: the node reads the file at start, and the secret is never kept
    here or printed). With ``auth.mode: tokens`` a node with peers refuses to
    start with neither, unless ``insecure_peer_plane`` says the operator means it.
    """

    tls: TlsSettings | None = None
    auth: AuthSettings | None = None  # None: not configured, the node refuses to start
    peer_secret_file: Path | None = None
    insecure_peer_plane: bool = False


# The HTTP door's bounds on reading a request (http.max_header_bytes, as Node's
# and h11's default; http.request_timeout_s, head and body).
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The ``http`` section: how every node's HTTP door (``http_listen``) answers browsers.

    ``cors_allow_origins`` lists the origins (``https://app.example``, or ``*``)
    whose pages may call the door from a browser; empty (the default) sends no
    CORS headers at all, so browsers refuse cross-origin calls.
    ``max_header_bytes`` bounds a request's head (request line and headers:
    431 past it) and ``request_timeout_s`` the time a request may take to
    arrive whole after its first byte (408 or the connection closed):
    edgekv/http/guard.py.

    ``h2c`` serves the door with hypercorn, which speaks HTTP/2 (cleartext by
    prior knowledge or Upgrade; ALPN ``h2`` with TLS) besides HTTP/1.1, on the
    same port; false (the default) serves it with uvicorn, HTTP/1.1 only, which
    costs less CPU per call.
    """

    cors_allow_origins: tuple[str, ...] = ()
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    h2c: bool = False


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

    Built by :func:`~edgekv.config.loader.parse_config` /
    :func:`~edgekv.config.loader.load_config`, which guarantee: region
    names and node ids are unique, every node's region is declared, addresses
    parse, placement prefixes are unique and non-empty and each rule names
    known regions of which at least one has a node. ``source`` is the file it
    was read from (None when parsed from a document).
    """

    cluster: str
    regions: tuple[Region, ...]
    nodes: tuple[NodeSpec, ...]
    placement: tuple[PlacementRule, ...] = ()
    limits: Limits = DEFAULT_LIMITS
    storage: StorageSettings = StorageSettings()
    source: Path | None = None
    replication: ReplicationSettings = ReplicationSettings()
    wan: WanSettings = WanSettings()
    security: SecuritySettings = SecuritySettings()
    http: HttpSettings = HttpSettings()
    consistency: ConsistencySettings = ConsistencySettings()
    watch: WatchSettings = field(default_factory=WatchSettings)
    # Lookup tables derived from the fields above; never compared or printed.
    _node_by_id: dict[str, NodeSpec] = field(init=False, repr=False, compare=False)
    _region_by_name: dict[str, Region] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_node_by_id", {n.id: n for n in self.nodes})
        object.__setattr__(self, "_region_by_name", {r.name: r for r in self.regions})

    def node(self, node_id: str) -> NodeSpec:
        """The node ``node_id``; ConfigError naming the defined nodes if there is none."""
        try:
            return self._node_by_id[node_id]
        except KeyError:
            raise ConfigError(
                f"unknown node {show(node_id)}; the cluster file defines: "
                f"{', '.join(sorted(self._node_by_id))}"
            ) from None

    def region(self, name: str) -> Region:
        """The region ``name``; ConfigError naming the defined regions if there is none."""
        try:
            return self._region_by_name[name]
        except KeyError:
            raise ConfigError(
                f"unknown region {show(name)}; the cluster file defines: "
                f"{', '.join(sorted(self._region_by_name))}"
            ) from None

    def nodes_in_region(self, name: str) -> tuple[NodeSpec, ...]:
        """The nodes of region ``name`` in file order (may be empty); ConfigError if unknown."""
        self.region(name)
        return tuple(n for n in self.nodes if n.region == name)
