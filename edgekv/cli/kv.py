"""Client commands: get, put, delete, scan, status, health, backup.

Each takes ``--endpoint HOST:PORT`` (or ``$EDGEKV_ENDPOINT``), or ``--config
FILE --node ID`` (the node's ``listen`` address from the cluster file), plus
``--timeout`` (seconds per call) and ``--json`` (output for scripts, see
``edgekv.cli.output``). KEY, VALUE and PREFIX arguments are taken as the bytes
the shell passed (UTF-8 text in practice).

Everything after ``--`` is an argument, so a KEY or VALUE that starts with
"-" goes after ``--`` and every option before it:
``edgekv put --endpoint HOST:PORT KEY -- -5``.

Errors print one line ``edgekv: <message>`` on stderr and exit with a code
from ``edgekv.cli.exitcodes``: 1 error, 2 usage, 3 not found (``get`` of a
missing key), 4 unavailable (the node could not be reached or did not answer
within ``--timeout``), 6 condition failed (``--if-absent`` / ``--if-version``
did not hold: nothing was written). The messages come from the SDK's one error mapping
(``edgekv.client._codec.error_from_rpc``), so they read the same in both.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from edgekv.cli import exitcodes as codes
from edgekv.cli.connection import Target, endpoint_options
from edgekv.cli.levels import (
    await_kwargs,
    await_options,
    client_kwargs,
    read_level_options,
    token_json,
)

F = TypeVar("F", bound=Callable[..., Any])


class ClientCommand(click.Command):
    """A command that talks to a node: everything after ``--`` is an argument.

    POSIX (and click) read every word after ``--`` as an argument, so an option
    written there is a value, not an option. A command that receives more
    arguments than it takes says so and shows where the options go, instead of
    click's bare "unexpected extra arguments".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {})["allow_extra_args"] = True
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        dashdash = "--" in args
        rest = super().parse_args(ctx, args)
        if ctx.args and not ctx.resilient_parsing:
            extra = " ".join(ctx.args)
            if dashdash:
                ctx.fail(
                    f"unexpected extra arguments ({extra}): every word after `--` is a value, "
                    f"not an option; put the options before `--`, e.g. `edgekv {self.name} "
                    f"--endpoint HOST:PORT KEY -- -5`"
                )
            ctx.fail(f"unexpected extra arguments ({extra})")
        return rest


def fail(message: str, code: int) -> NoReturn:
    """Print ``edgekv: message`` on stderr and exit with ``code``."""
    click.echo(f"edgekv: {message}", err=True)
    sys.exit(code)


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code: 4 unavailable/deadline, 3 not found, 6 condition failed, else 1."""
    from edgekv.errors import ConditionFailed, DeadlineExceeded, NotFound, Unavailable

    if isinstance(exc, ConditionFailed):
        return codes.CONDITION_FAILED
    if isinstance(exc, Unavailable | DeadlineExceeded):
        return codes.UNAVAILABLE
    if isinstance(exc, NotFound):
        return codes.NOT_FOUND
    return codes.ERROR


def handle_errors(fn: F) -> F:
    """Map errors to a one-line message on stderr and the documented exit code.

    A closed stdout (``edgekv scan | head``) ends the command quietly with 0:
    the reader had what it wanted.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgekv.errors import EdgeKVError

        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # Python would complain again when flushing stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(codes.OK)
        except EdgeKVError as exc:
            fail(str(exc), exit_code_for(exc))
        except OSError as exc:  # e.g. an unreadable --ca-file
            fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", codes.ERROR)

    return wrapper  # type: ignore[return-value]


def parse_version(
    ctx: click.Context | None, param: click.Parameter | None, text: str | None
) -> Any:
    """A --if-version value TS:ORIGIN (``TS@ORIGIN``, as writes print it, works too)."""
    if text is None:
        return None
    from edgekv.client import Version

    timestamp, sep, origin = text.replace("@", ":", 1).partition(":")
    if not sep or not timestamp.isdigit() or not origin:
        raise click.BadParameter(f"expected TS:ORIGIN (e.g. 7254312345678:fra-1), got {text!r}")
    return Version(int(timestamp), origin)


_IF_VERSION_HELP = (
    "Only if KEY's live value has this version, TS:ORIGIN (compare-and-set; keys under a "
    "homed prefix only); exit 6 when it does not hold."
)


def arg_bytes(text: str) -> bytes:
    """A command-line argument as the bytes the shell passed (not-UTF-8 bytes kept)."""
    return os.fsencode(text)


@click.command(cls=ClientCommand)
@click.argument("key")
@read_level_options
@endpoint_options
@handle_errors
def get(
    key: str, consistency: str | None, session_token: str | None, as_json: bool, **conn: Any
) -> None:
    """Print the value of KEY; exit 3 if it is absent.

    The value goes to stdout as raw bytes (a newline is added only on a
    terminal), so `edgekv get KEY > file` copies it exactly. With --json: one
    object with found, key, value (+ *_encoding), version, expires_at_ms,
    served_by (and session_token with --consistency or --session-token).
    """
    from edgekv.cli import output

    k = arg_bytes(key)
    with Target.from_options(conn).client(**client_kwargs(session_token)) as client:
        entry = client.get(k, consistency=consistency)
        token = token_json(client.session_token) if consistency or session_token else {}
    if entry is None:
        if as_json:
            click.echo(output.dumps({"found": False, **output.bytes_fields("key", k), **token}))
        fail(f"key {output.show_bytes(k)!r} not found", codes.NOT_FOUND)
    if as_json:
        click.echo(output.dumps({"found": True, **output.entry_json(entry), **token}))
        return
    stdout = sys.stdout.buffer
    stdout.write(entry.value)
    if sys.stdout.isatty():
        stdout.write(b"\n")
    stdout.flush()


@click.command(cls=ClientCommand)
@click.argument("key")
@click.argument("value", required=False)
@click.option("--ttl-ms", type=click.IntRange(min=0), default=0,
              help="Expire this many milliseconds after the write (0: never).")  # fmt: skip
@click.option("--if-absent", is_flag=True,
              help="Only if KEY has no live value (homed prefixes); exit 6 if it has.")  # fmt: skip
@click.option("--if-version", callback=parse_version, metavar="TS:ORIGIN", help=_IF_VERSION_HELP)
@await_options
@endpoint_options
@handle_errors
def put(
    key: str, value: str | None, ttl_ms: int, if_absent: bool, if_version: Any, as_json: bool,
    **conn: Any,
) -> None:  # fmt: skip
    """Store VALUE under KEY.

    With VALUE omitted or "-", the value is read from stdin, byte for byte
    (`edgekv put img < photo.jpg`). A KEY or VALUE that starts with "-" goes
    after "--", and every option before it, since whatever follows "--" is a
    value: `edgekv put --endpoint HOST:PORT KEY -- -5`.
    """
    from edgekv.cli import output

    awaits = await_kwargs(conn.pop("await_replicas"), conn.pop("await_regions"),
                          conn.pop("await_timeout_ms"))  # fmt: skip
    target = Target.from_options(conn)  # usage errors before waiting on stdin
    if value is None or value == "-":
        if value is None and sys.stdin.isatty():
            raise click.UsageError('give VALUE, or pipe it on stdin ("-" reads the terminal)')
        data = sys.stdin.buffer.read()
    else:
        data = arg_bytes(value)
    k = arg_bytes(key)
    with target.client() as client:
        conditions: dict[str, Any] = {"if_absent": True} if if_absent else {}
        if if_version is not None:
            conditions["if_version"] = if_version
        result = client.put(k, data, ttl_ms=ttl_ms, **conditions, **awaits)
    if as_json:
        click.echo(output.dumps(output.write_json(k, result)))
    else:
        click.echo(output.describe_write("stored", k, result))


@click.command(cls=ClientCommand)
@click.argument("key")
@click.option("--if-version", callback=parse_version, metavar="TS:ORIGIN", help=_IF_VERSION_HELP)
@await_options
@endpoint_options
@handle_errors
def delete(key: str, if_version: Any, as_json: bool, **conn: Any) -> None:
    """Delete KEY (succeeds for a missing key too: deletes are tombstones)."""
    from edgekv.cli import output

    awaits = await_kwargs(conn.pop("await_replicas"), conn.pop("await_regions"),
                          conn.pop("await_timeout_ms"))  # fmt: skip
    k = arg_bytes(key)
    with Target.from_options(conn).client() as client:
        conditions = {} if if_version is None else {"if_version": if_version}
        result = client.delete(k, **conditions, **awaits)
    if as_json:
        click.echo(output.dumps(output.write_json(k, result)))
    else:
        click.echo(output.describe_write("deleted", k, result))


SCAN_PAGE_SIZE = 500


@click.command(cls=ClientCommand)
@click.argument("prefix", required=False, default="")
@click.option("--start", default="", help="Inclusive lower bound.")
@click.option("--end", default="", help="Exclusive upper bound.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Print at most N items in all (default: every one).")  # fmt: skip
@click.option("--keys-only", is_flag=True, help="Keys (and versions), no values.")
@read_level_options
@endpoint_options
@handle_errors
def scan(prefix: str, start: str, end: str, limit: int | None, keys_only: bool, as_json: bool,
         consistency: str | None, session_token: str | None, **conn: Any) -> None:  # fmt: skip
    """List live keys under PREFIX and/or in [--start, --end), in key order.

    Pages are fetched as needed. Prints `key<TAB>value` per line (control
    characters and invalid UTF-8 escaped), just the key with --keys-only, or
    one JSON object per line with --json (exact bytes, see `edgekv get`).
    """
    from edgekv.cli import output

    page_size = min(limit or SCAN_PAGE_SIZE, SCAN_PAGE_SIZE)
    with Target.from_options(conn).client(**client_kwargs(session_token)) as client:
        entries = client.scan(
            arg_bytes(prefix), start=arg_bytes(start), end=arg_bytes(end), page_size=page_size,
            keys_only=keys_only, limit=limit, consistency=consistency,
        )  # fmt: skip
        for entry in entries:
            if as_json:
                click.echo(output.dumps(output.entry_json(entry, keys_only=keys_only)))
            elif keys_only:
                click.echo(output.show_bytes(entry.key))
            else:
                click.echo(f"{output.show_bytes(entry.key)}\t{output.show_bytes(entry.value)}")


@click.command(cls=ClientCommand)
@endpoint_options
@handle_errors
def status(as_json: bool, **conn: Any) -> None:
    """Show the node's status and the cluster as it sees it (RTT, lag), plus metrics.

    The record count (``key_count`` in --json, with ``key_count_estimated``) is
    RocksDB's estimate of stored records: live keys plus tombstones, expired
    records not yet collected and overwritten versions not yet compacted. It
    is not the number of keys `edgekv scan` lists, nor `edgekv audit`'s entries
    checked (which add the log and the digest index).
    """
    from edgekv.cli import output

    with Target.from_options(conn).client() as client:
        st = client.status()
        members = client.members()
    if as_json:
        click.echo(output.dumps(output.status_json(st, members)))
        return
    for line in output.status_lines(st, members):
        click.echo(line)
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
    lines = [
        f"metrics   http://{host}:{port}/metrics",
        f"calls     {by_code}",
        f"skew      peers up to {skew_ms:.0f} ms ahead; {refused} timestamps refused",
    ] + ([f"rocksdb   {size_mb:.1f} MB"] if size_mb else [])
    if "edgekv_gc_horizon_timestamp_seconds" in gauges:
        collected = int(gauges.get("edgekv_gc_collected_records_total", 0))
        horizon = gauges["edgekv_gc_horizon_timestamp_seconds"]
        trails = (
            f"collecting what died over {(time.time() - horizon) / 3600:.1f} h ago"
            if horizon
            else "nothing collectable yet (grace period, or a peer not synced)"
        )
        lines.append(f"gc        {collected} dead records collected; {trails}")
    return lines


@click.command(cls=ClientCommand)
@endpoint_options
@handle_errors
def health(as_json: bool, **conn: Any) -> None:
    """Exit 0 if the node's gRPC health check says SERVING, else 4 (for probes)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from edgekv.cli import output

    target = Target.from_options(conn)
    target.require_grpc("health")
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
            from edgekv.client._codec import error_from_rpc

            err = error_from_rpc(exc, target.endpoint, tls=bool(target.ca_file))
            click.echo(f"edgekv: {err}", err=True)
            serving = False
    if as_json:
        click.echo(output.dumps({"endpoint": target.endpoint, "serving": serving}))
    elif serving:
        click.echo(f"{target.endpoint}: SERVING")
    sys.exit(codes.OK if serving else codes.UNAVAILABLE)


@click.command(cls=ClientCommand)
@click.option("--dest", required=True, help="Absolute path on the node's machine (new).")
@endpoint_options
@handle_errors
def backup(dest: str, as_json: bool, **conn: Any) -> None:
    """Take a consistent checkpoint of a live node (needs an admin token)."""
    from edgekv.cli import output
    from edgekv.v1 import cluster_pb2

    with Target.from_options(conn).client() as client:
        # Not idempotent: a retry would find its own checkpoint in the way.
        resp = client._cluster_call(
            "Backup", cluster_pb2.BackupRequest(dest_path=dest), None, idempotent=False
        )
    if as_json:
        click.echo(output.dumps({"path": resp.path, "last_seq": resp.last_seq}))
    else:
        click.echo(f"backup written to {resp.path} (through local seq {resp.last_seq})")
