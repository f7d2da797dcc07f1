"""`edgekv` entry point: the command group and the exit codes scripts rely on."""

from __future__ import annotations

import sys

import click

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_AUDIT_VIOLATIONS = 5


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekv")
def main() -> None:
    """edgekv: an edge-native, globally replicated key-value store."""


def _parse_peer_addresses(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        node, sep, address = value.partition("=")
        if not sep or not node or not address:
            raise click.BadParameter(
                f"{value!r} is not NODE=HOST:PORT", param_hint="--peer-address"
            )
        out[node] = address
    return out


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster file (YAML).")
@click.option("--node", "node_id", required=True, help="This node's id in the cluster file.")
@click.option("--ready-file", type=click.Path(dir_okay=False),
              help="Write a JSON line with the bound addresses here once serving.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--peer-address", "peer_addresses", multiple=True, metavar="NODE=HOST:PORT",
              help="Dial this peer at another address (a proxy); repeatable.")
def serve(
    config_path: str,
    node_id: str,
    ready_file: str | None,
    log_level: str,
    peer_addresses: tuple[str, ...],
) -> None:
    """Run one PoP node until SIGTERM/SIGINT (drains, flushes, exits 0)."""
    from edgekv.server.node import serve as serve_node

    code = serve_node(
        config_path, node_id, ready_file, log_level, _parse_peer_addresses(peer_addresses)
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
