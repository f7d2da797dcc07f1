"""`edgekv` entry point: the command group.

Exit codes scripts can rely on (named in ``edgekv.cli.exitcodes``): 0 ok,
1 error, 2 usage (bad or missing options), 3 not found (``get`` of a missing
key), 4 unavailable (node unreachable or no answer within --timeout), 5 audit
violations. Errors print one line ``edgekv: <message>`` on stderr.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

import click

from edgekv.cli import exitcodes as codes
from edgekv.cli.cluster import cluster
from edgekv.cli.connection import Target
from edgekv.cli.kv import (
    ClientCommand,
    backup,
    delete,
    endpoint_options,
    get,
    handle_errors,
    health,
    put,
    scan,
    status,
)
from edgekv.cli.output import dumps
from edgekv.cli.security import certs, peer_secret, token

if TYPE_CHECKING:
    from edgekv.cluster.audit import AuditReport

# The cluster file, for commands that act on one node of it.
cluster_file_option = click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False),
    help="Cluster file (YAML).",
)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekv")
def main() -> None:
    """edgekv: an edge-native, globally replicated key-value store."""


for _command in (get, put, delete, scan, status, health, backup, cluster, certs, token,
                 peer_secret):  # fmt: skip
    main.add_command(_command)


@main.command()
@click.option("--from", "source", required=True, type=click.Path(file_okay=False, exists=True),
              help="A checkpoint written by `edgekv backup`.")  # fmt: skip
@cluster_file_option
@click.option("--node", "node_id", required=True,
              help="The node to restore; its data_dir must be missing or empty.")  # fmt: skip
@click.option("--force", is_flag=True,
              help="Restore a backup older than replication.tombstone_grace_s anyway.")  # fmt: skip
@click.option("--force-placement", is_flag=True,
              help="Restore a backup from another region or placement rules if an audit "
              "finds no key in it this node may not hold.")  # fmt: skip
def restore(
    source: str, config_path: str, node_id: str, force: bool, force_placement: bool
) -> None:
    """Restore a stopped node's data directory from a backup, then start it normally.

    Replication and anti-entropy bring it up to date with the cluster. The
    backup may come from another node (replacing a dead PoP). A backup older
    than the tombstone grace period is refused unless --force: deletes made
    since could be undone. A backup from a node of another region or under
    other placement rules is refused (data residency) unless --force-placement
    and an audit of it finds nothing this node may not hold.
    """
    from edgekv.cluster.audit import audit_directory
    from edgekv.cluster.placement import PlacementRules
    from edgekv.config.loader import load_config
    from edgekv.errors import EdgeKVError
    from edgekv.storage.backup import check_placement
    from edgekv.storage.backup import restore as restore_data

    try:
        config = load_config(config_path)
        spec = config.node(node_id)
        rules = PlacementRules.from_config(config)
        max_age_s = None if force else config.replication.tombstone_grace_s
        check = functools.partial(
            check_placement,
            source,
            spec.region,
            rules.fingerprint(),
            violations=lambda: (
                audit_directory(
                    source, node_id, spec.region, lambda key: rules.allows(key, spec.region)
                ).total_violations
            ),
            allow_other=force_placement,
        )
        restore_data(source, spec.data_dir, spec.id, max_age_s=max_age_s, check=check)
    except EdgeKVError as exc:
        click.echo(f"edgekv: {exc}", err=True)
        sys.exit(codes.ERROR)
    click.echo(f"restored {spec.data_dir} for {node_id} from {source}; start the node to catch up")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def doctor(as_json: bool) -> None:
    """Show the installation: versions and which read path (compiled or Python) is active.

    Works offline: it looks only at this machine's installation.
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from edgekv import native
    from edgekv._version import __version__

    versions: dict[str, str] = {}
    for dist in ("grpcio", "protobuf", "rocksdict", "uvloop", "click"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    if as_json:
        click.echo(dumps({
            "edgekv": __version__, "read_path": native.ACTIVE,
            "python": platform.python_version(), "machine": platform.machine(), **versions,
        }))  # fmt: skip
        return
    click.echo(f"edgekv      {__version__}")
    click.echo(f"read path   {native.ACTIVE}" + ("" if native.ACTIVE == "cython" else
               "  (slow fallback: run `make build` to compile native/)"))  # fmt: skip
    click.echo(f"python      {platform.python_version()} ({platform.machine()})")
    for dist, dist_version in versions.items():
        click.echo(f"{dist:<11} {dist_version}")


def _parse_peer_addresses(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        node, sep, address = value.partition("=")
        if not sep or not node or not address:
            raise click.BadParameter(f"{value!r} is not NODE=HOST:PORT", param_hint=option)
        out[node] = address
    return out


@main.command()
@cluster_file_option
@click.option("--node", "node_id", required=True, help="This node's id in the cluster file.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False),
    help="Write a JSON line with the bound addresses here once serving.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one JSON object per line, for log shippers.",
)
@click.option(
    "--peer-address",
    "peer_addresses",
    multiple=True,
    metavar="NODE=HOST:PORT",
    help="Dial this peer's replication port at another address (a proxy); repeatable.",
)
@click.option(
    "--forward-address",
    "forward_addresses",
    multiple=True,
    metavar="NODE=HOST:PORT",
    help="Forward client calls to this node at another address (a proxy); repeatable.",
)
@click.option(
    "--purge-disallowed",
    is_flag=True,
    help="Erase keys this node may no longer hold (the placement rules changed) without "
    "waiting for a node allowed to hold them to confirm it does: may lose their only copy.",
)
def serve(
    config_path: str,
    node_id: str,
    ready_file: str | None,
    log_level: str,
    log_format: str,
    peer_addresses: tuple[str, ...],
    forward_addresses: tuple[str, ...],
    purge_disallowed: bool,
) -> None:
    """Run one PoP node until SIGTERM/SIGINT (drains, flushes, exits 0).

    After a placement rule change the node hands the keys it may no longer
    hold to a node that may, then erases them (--purge-disallowed: at once).
    """
    from edgekv.server.process import serve as serve_node

    code = serve_node(
        config_path,
        node_id,
        ready_file,
        log_level,
        _parse_peer_addresses(peer_addresses, "--peer-address"),
        _parse_peer_addresses(forward_addresses, "--forward-address"),
        log_format,
        purge_disallowed,
    )
    sys.exit(code)


@main.command(cls=ClientCommand)
@click.option(
    "--offline",
    is_flag=True,
    help="Open the stopped node's data directory (needs --config and --node).",
)
@endpoint_options(timeout_s=120.0)
@handle_errors
def audit(offline: bool, as_json: bool, **conn: Any) -> None:
    """Prove data residency: list keys stored on a node that its placement forbids.

    Asks the live node (Cluster.Audit, an admin token when the cluster uses
    tokens) at --endpoint, or at --node's listen address in --config. With
    --config and --node, a node that is not running (or --offline) is audited
    from its data directory, opened read-only. Exit 0 when compliant, 5 when
    any key violates the placement rules.

    It checks every stored entry that holds a user key: data records (live
    keys, tombstones and expired records not yet collected), replication log
    entries, digest index entries and change feed entries (what Watch resumes
    from), so its count is larger than the number of keys `edgekv scan` lists.
    """
    from edgekv.cluster.audit import audit_directory
    from edgekv.cluster.placement import PlacementRules
    from edgekv.config.loader import load_config
    from edgekv.errors import Unavailable

    config_path, node_id = conn["config_path"], conn["node_id"]
    local = bool(config_path and node_id)
    if offline and not local:
        raise click.UsageError("--offline needs --config FILE and --node ID (it reads that "
                               "node's data_dir)")  # fmt: skip
    report: AuditReport | None = None
    mode = "live"
    if not offline:
        try:
            report = _audit_live(Target.from_options(conn))
        except Unavailable:
            if not local or conn["endpoint"]:
                raise
            # Not running: its data directory can be opened (below).
    if report is None:
        mode = "offline"
        config = load_config(config_path)
        spec = config.node(node_id)
        rules = PlacementRules.from_config(config)
        report = audit_directory(
            spec.data_dir, spec.id, spec.region, lambda k: rules.allows(k, spec.region)
        )
    if as_json:
        click.echo(dumps({
            "node_id": report.node_id, "region": report.region, "mode": mode,
            "checked": report.checked, "checked_by_column_family": report.checked_by,
            "violations": report.total_violations,
            "samples": [{"column_family": cf, "key": k.decode("utf-8", "backslashreplace")}
                        for cf, k in report.samples],
        }))  # fmt: skip
    else:
        click.echo(
            f"audit of {report.node_id} ({report.region}, {mode}): {report.checked} entries "
            f"checked{_checked_by(report.checked_by)}, {report.total_violations} violations"
        )
        for cf, key in report.samples:
            click.echo(f"  {cf:6}  {key.decode('utf-8', 'backslashreplace')}")
    sys.exit(codes.AUDIT_VIOLATIONS if report.total_violations else codes.OK)


_ENTRY_NAMES = {
    "data": "data records",
    "log": "log entries",
    "digest": "digest index entries",
    "feed": "change feed entries",
}


def _checked_by(checked_by: dict[str, int]) -> str:
    """ " (8 data records, 8 log entries, 8 digest index entries)", or "" if not known."""
    if not checked_by:
        return ""
    order = [*_ENTRY_NAMES, *sorted(set(checked_by) - set(_ENTRY_NAMES))]
    parts = [
        f"{checked_by[cf]} {_ENTRY_NAMES.get(cf, cf + ' entries')}"
        for cf in order
        if cf in checked_by
    ]
    return f" ({', '.join(parts)})"


def _audit_live(target: Target) -> AuditReport:
    """The node's own audit over gRPC (Cluster.Audit), with the target's TLS and token."""
    from edgekv.cluster.audit import AuditReport
    from edgekv.v1 import cluster_pb2

    target.require_grpc("audit")
    with target.client() as client:
        resp = client._cluster_call("Audit", cluster_pb2.AuditRequest(), None)
    report = AuditReport(resp.node_id, resp.region, checked=resp.checked)
    report.checked_by = dict(resp.checked_by_column_family)  # empty from an older node
    report.violations = {"all": resp.violations} if resp.violations else {}
    report.samples = [(v.column_family, v.key) for v in resp.samples]
    return report


if __name__ == "__main__":
    main()
