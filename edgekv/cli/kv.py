"""Client commands: get, put, delete, scan, status, members.

Each takes ``--endpoint HOST:PORT`` or ``--config FILE --node ID``; ``--json``
prints one JSON object per result for scripts. Bytes print as UTF-8 text when
they decode, otherwise as base64 with ``"encoding": "base64"`` in JSON.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgekv.cli import exitcodes as codes

F = TypeVar("F", bound=Callable[..., Any])


def endpoint_options(fn: F) -> F:
    """--endpoint, or --config/--node, plus --timeout, --json, --token and --ca-file."""
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(fn)
    fn = click.option("--token", envvar="EDGEKV_TOKEN",
                      help="Bearer token (or $EDGEKV_TOKEN).")(fn)  # fmt: skip
    fn = click.option("--ca-file", envvar="EDGEKV_CA_FILE", type=click.Path(dir_okay=False),
                      help="CA certificate for TLS (default: the cluster file's).")(fn)  # fmt: skip
    fn = click.option("--timeout", "timeout_s", type=float, default=5.0, show_default=True,
                      help="Seconds per call.")(fn)  # fmt: skip
    fn = click.option("--node", "node_id", help="Node id in --config.")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                      help="Cluster file; with --node, talk to that node.")(fn)  # fmt: skip
    fn = click.option("--endpoint", "-e", envvar="EDGEKV_ENDPOINT",
                      help="Node address HOST:PORT (or $EDGEKV_ENDPOINT).")(fn)  # fmt: skip
    return fn


class Target:
    """Where and how to connect: endpoint, token, CA file."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        endpoint = kwargs.pop("endpoint")
        config_path = kwargs.pop("config_path")
        node_id = kwargs.pop("node_id")
        self.token: str | None = kwargs.pop("token")
        self.ca_file: str | None = kwargs.pop("ca_file")
        self.timeout_s: float = kwargs.pop("timeout_s")
        if config_path and (not endpoint or not self.ca_file):
            from edgekv.config import load_config

            config = load_config(config_path)
            if config.security.tls is not None and not self.ca_file:
                self.ca_file = str(config.security.tls.ca_file)
            if not endpoint and node_id:
                endpoint = config.node(node_id).listen
        if not endpoint:
            raise click.UsageError("give --endpoint HOST:PORT, or --config FILE and --node ID")
        self.endpoint: str = endpoint

    def client(self) -> Any:
        from edgekv.client import Client

        # One node was named: talk to it, do not re-route (forwarding still applies).
        return Client(
            self.endpoint, timeout_s=self.timeout_s, discover=False, token=self.token,
            tls_ca_file=self.ca_file,
        )  # fmt: skip


def handle_errors(fn: F) -> F:
    """Map EdgeKVError to a one-line message on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgekv.errors import EdgeKVError, NotFound, Unavailable

        try:
            return fn(*args, **kwargs)
        except EdgeKVError as exc:
            click.echo(f"edgekv: {exc}", err=True)
            if isinstance(exc, Unavailable):
                sys.exit(codes.UNAVAILABLE)
            if isinstance(exc, NotFound):
                sys.exit(codes.NOT_FOUND)
            sys.exit(codes.ERROR)

    return wrapper  # type: ignore[return-value]


def render_bytes(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def entry_json(entry: Any) -> dict[str, Any]:
    key, value = render_bytes(entry.key), render_bytes(entry.value)
    return {
        "key": key.get("text", key.get("base64")),
        "key_encoding": "utf-8" if "text" in key else "base64",
        "value": value.get("text", value.get("base64")),
        "value_encoding": "utf-8" if "text" in value else "base64",
        "version": {"timestamp": entry.version.timestamp, "origin": entry.version.origin},
        "expires_at_ms": entry.expires_at_ms,
        "served_by": entry.served_by,
    }


def show_bytes(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


@click.command()
@click.argument("key")
@endpoint_options
@handle_errors
def get(key: str, as_json: bool, **conn: Any) -> None:
    """Print the value of KEY (raw bytes on stdout); exit 3 if it is absent."""
    with Target(conn).client() as client:
        entry = client.get(key)
    if entry is None:
        if as_json:
            click.echo(json.dumps({"key": key, "found": False}))
        else:
            click.echo(f"edgekv: key {key!r} not found", err=True)
        sys.exit(codes.NOT_FOUND)
    if as_json:
        click.echo(json.dumps({"found": True, **entry_json(entry)}))
    else:
        sys.stdout.buffer.write(entry.value)
        if sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()


@click.command()
@click.argument("key")
@click.argument("value", required=False)
@click.option("--ttl-ms", type=click.IntRange(min=0), default=0, help="Expire after this long.")
@endpoint_options
@handle_errors
def put(key: str, value: str | None, ttl_ms: int, as_json: bool, **conn: Any) -> None:
    """Store VALUE under KEY; VALUE omitted or "-" reads stdin (bytes as they are)."""
    data = sys.stdin.buffer.read() if value in (None, "-") else value.encode("utf-8")
    with Target(conn).client() as client:
        result = client.put(key, data, ttl_ms=ttl_ms)
    report_write("stored", key, result, as_json)


@click.command()
@click.argument("key")
@endpoint_options
@handle_errors
def delete(key: str, as_json: bool, **conn: Any) -> None:
    """Delete KEY (succeeds for a missing key too)."""
    with Target(conn).client() as client:
        result = client.delete(key)
    report_write("deleted", key, result, as_json)


def report_write(what: str, key: str, result: Any, as_json: bool) -> None:
    version = result.version
    if as_json:
        click.echo(json.dumps({
            "key": key, "version": {"timestamp": version.timestamp, "origin": version.origin},
            "served_by": result.served_by,
        }))  # fmt: skip
    else:
        click.echo(f"{what} {key} (version {version.timestamp}@{version.origin}, "
                   f"served by {result.served_by})")  # fmt: skip


@click.command()
@click.argument("prefix", required=False, default="")
@click.option("--start", default="", help="Inclusive lower bound.")
@click.option("--end", default="", help="Exclusive upper bound.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N items in all.")
@click.option("--keys-only", is_flag=True, help="Print keys only.")
@endpoint_options
@handle_errors
def scan(prefix: str, start: str, end: str, limit: int | None, keys_only: bool, as_json: bool,
         **conn: Any) -> None:  # fmt: skip
    """List keys under PREFIX (and/or in [--start, --end)), paging as needed."""
    with Target(conn).client() as client:
        for entry in client.scan(prefix, start=start, end=end, keys_only=keys_only, limit=limit):
            if as_json:
                click.echo(json.dumps(entry_json(entry)))
            elif keys_only:
                click.echo(show_bytes(entry.key))
            else:
                click.echo(f"{show_bytes(entry.key)}\t{show_bytes(entry.value)}")


@click.command()
@endpoint_options
@handle_errors
def status(as_json: bool, **conn: Any) -> None:
    """Show the node's status and the cluster as it sees it (RTT, lag)."""
    with Target(conn).client() as client:
        st = client.status()
        members = client.members()
    if as_json:
        click.echo(json.dumps({
            "node_id": st.node_id, "region": st.region, "cluster": st.cluster,
            "uptime_s": st.uptime_s, "key_count": st.key_count, "read_path": st.read_path,
            "server_version": st.server_version, "last_seq": st.last_seq,
            "sync_writes": st.sync_writes,
            "members": [dataclasses.asdict(m) for m in members],
        }))  # fmt: skip
        return
    click.echo(f"node      {st.node_id} ({st.region}) in cluster {st.cluster}")
    click.echo(f"version   edgekv {st.server_version}, read path {st.read_path}")
    click.echo(f"uptime    {st.uptime_s:.0f} s, ~{st.key_count} records, last seq {st.last_seq}")
    durability = "fsync per write (group commit)" if st.sync_writes else "WAL, no fsync"
    click.echo(f"durable   {durability}")
    click.echo("")
    rows = [("NODE", "REGION", "ENDPOINT", "STATE", "RTT ms", "LAG entries", "LAG s")]
    for m in members:
        state = "self" if m.is_self else ("up" if m.reachable else "DOWN")
        rtt = "-" if m.is_self else f"{m.rtt_ms:.2f}"
        lag_e = "-" if m.is_self else str(m.lag_entries)
        lag_s = "-" if m.is_self else f"{m.lag_seconds:.3f}"
        rows.append((m.node_id, m.region, m.endpoint, state, rtt, lag_e, lag_s))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if st.metrics_endpoint:
        click.echo("")
        for line in metrics_summary(st.metrics_endpoint):
            click.echo(line)


def metrics_summary(endpoint: str) -> list[str]:
    """A few lines for humans from the node's Prometheus endpoint."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    host, _, port = endpoint.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]", "") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except OSError as exc:
        return [f"metrics   {endpoint}: unreachable ({exc})"]
    calls: dict[str, float] = {}
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edgekv_requests_total":
                code = sample.labels.get("code", "?")
                calls[code] = calls.get(code, 0) + sample.value
            elif not sample.labels:
                gauges[sample.name] = sample.value
    by_code = ", ".join(f"{code} {int(n)}" for code, n in sorted(calls.items())) or "none yet"
    size_mb = sum(v for k, v in gauges.items() if k.startswith("edgekv_rocksdb")) / 1e6
    skew_ms = gauges.get("edgekv_clock_max_skew_seen_seconds", 0) * 1000
    refused = int(gauges.get("edgekv_clock_skew_rejections_total", 0))
    return [
        f"metrics   http://{host}:{port}/metrics",
        f"calls     {by_code}",
        f"skew      peers up to {skew_ms:.0f} ms ahead; {refused} timestamps refused",
    ] + ([f"rocksdb   {size_mb:.1f} MB"] if size_mb else [])


@click.command()
@endpoint_options
def health(as_json: bool, **conn: Any) -> None:
    """Exit 0 if the node's gRPC health check says SERVING, else 4 (for probes)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = Target(conn)
    if target.ca_file:
        creds = grpc.ssl_channel_credentials(Path(target.ca_file).read_bytes())
        channel = grpc.secure_channel(target.endpoint, creds)
    else:
        channel = grpc.insecure_channel(target.endpoint)
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=target.timeout_s
            )
            serving = resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError as exc:
            click.echo(f"edgekv: {target.endpoint}: {exc.code().name}", err=True)
            serving = False
    if as_json:
        click.echo(json.dumps({"endpoint": target.endpoint, "serving": serving}))
    elif serving:
        click.echo(f"{target.endpoint}: SERVING")
    sys.exit(codes.OK if serving else codes.UNAVAILABLE)


@click.command()
@click.option("--dest", required=True, help="Absolute path on the node's machine (new).")
@endpoint_options
@handle_errors
def backup(dest: str, as_json: bool, **conn: Any) -> None:
    """Take a consistent checkpoint of a live node (needs an admin token)."""
    from edgekv.v1 import cluster_pb2

    with Target(conn).client() as client:
        resp = client._cluster_call("Backup", cluster_pb2.BackupRequest(dest_path=dest), None)
    if as_json:
        click.echo(json.dumps({"path": resp.path, "last_seq": resp.last_seq}))
    else:
        click.echo(f"backup written to {resp.path} (through local seq {resp.last_seq})")
