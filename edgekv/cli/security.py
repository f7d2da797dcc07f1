"""`edgekv certs` (development CA and node certificates) and `edgekv token` commands."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click

from edgekv.cli import exitcodes as codes


@click.group()
def certs() -> None:
    """Create a development CA and per-node TLS certificates."""


@certs.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Where ca.pem and ca-key.pem are written.")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
def certs_init(directory: str, days: int) -> None:
    """Create a cluster CA (ca.pem, and ca-key.pem readable only by you)."""
    from edgekv.tls import CA_CERT, create_ca

    if (Path(directory) / CA_CERT).exists():
        click.echo(
            f"edgekv: {Path(directory) / CA_CERT} exists; refusing to replace a CA", err=True
        )
        sys.exit(codes.ERROR)
    click.echo(f"created {create_ca(directory, days=days)}")


@certs.command("issue")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="The CA directory; certificates are written next to it.")  # fmt: skip
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Issue for every node of this cluster file (hosts from listen/peer_listen).",
)
@click.option("--node", "node_ids", multiple=True, help="Only these nodes (repeatable).")
@click.option("--host", "hosts", multiple=True, help="Extra DNS name or IP (repeatable).")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
def certs_issue(
    directory: str, config_path: str | None, node_ids: tuple[str, ...], hosts: tuple[str, ...],
    days: int,
) -> None:  # fmt: skip
    """Issue NODE.pem / NODE-key.pem signed by the CA, usable for server and mTLS."""
    from edgekv.config.loader import load_config
    from edgekv.config.values import parse_host_port
    from edgekv.errors import EdgeKVError
    from edgekv.tls import issue_cert

    try:
        targets: dict[str, list[str]] = {}
        if config_path:
            config = load_config(config_path)
            for node in config.nodes:
                if node_ids and node.id not in node_ids:
                    continue
                addrs = [a for a in (node.listen, node.peer_listen) if a]
                targets[node.id] = [parse_host_port(a)[0] for a in addrs]
        for node_id in node_ids:
            targets.setdefault(node_id, [])
        if not targets:
            raise click.UsageError("give --config FILE or at least one --node ID")
        for node_id, node_hosts in targets.items():
            cert, key = issue_cert(directory, node_id, [*node_hosts, *hosts], days=days)
            click.echo(f"issued {cert} and {key}")
    except EdgeKVError as exc:
        click.echo(f"edgekv: {exc}", err=True)
        sys.exit(codes.ERROR)


@click.group()
def token() -> None:
    """Bearer tokens for the client API."""


@token.command("new")
@click.option("--name", required=True, help="A name for the token (shown in errors and logs).")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), required=True)
@click.option("--prefix", "prefixes", multiple=True, help="Restrict to keys under this prefix.")
def token_new(name: str, scope: str, prefixes: tuple[str, ...]) -> None:
    """Print a new random token and the cluster-file entry that accepts it.

    Only the SHA-256 goes into the cluster file; keep the token itself secret.
    """
    from edgekv.server.auth import hash_token

    secret = secrets.token_urlsafe(32)
    entry = f"{{name: {name}, sha256: {hash_token(secret).hex()}, scope: {scope}"
    if prefixes:
        entry += ", prefixes: [" + ", ".join(f'"{p}"' for p in prefixes) + "]"
    click.echo(f"token:  {secret}")
    click.echo(f"config: - {entry}}}   # under security.auth.tokens")


@click.group("peer-secret")
def peer_secret() -> None:
    """The cluster peer secret that authenticates peers on a network without TLS."""


@peer_secret.command("new")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The file to write (mode 0600); never replaces an existing one.")  # fmt: skip
def peer_secret_new(out: str) -> None:
    """Write a new random peer secret to --out, for security.peer_secret_file.

    Every node of the cluster reads the same secret; copy the file to each one.
    """
    import os

    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        click.echo(f"edgekv: {out} exists; refusing to replace a peer secret", err=True)
        sys.exit(codes.ERROR)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    click.echo(f"created {out}; set security.peer_secret_file: {out} in the cluster file")
