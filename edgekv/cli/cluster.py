"""`edgekv cluster up`: a whole local cluster on loopback, for development and demos."""

from __future__ import annotations

import signal
import sys
import time

import click

from edgekv.cli import exitcodes as codes

_STOP_POLL_S = 0.1


@click.group()
def cluster() -> None:
    """Run a local multi-region cluster (node processes + fault proxies)."""


@cluster.command()
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Cluster file; every node in it is started on this machine.")  # fmt: skip
@click.option(
    "--wan",
    is_flag=True,
    help="Emulate inter-region delays (cluster file's wan.delays_ms, else distance).",
)
@click.option("--run-dir", type=click.Path(file_okay=False), help="Where node logs go.")
@click.option(
    "--demo",
    is_flag=True,
    help="Once up, run the tour: replication lag, local vs forwarded reads, audit.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start clean: first delete the data directories of this cluster file's nodes "
    "(only those; refused while one of its nodes runs).",
)
def up(config_path: str, wan: bool, run_dir: str | None, demo: bool, fresh: bool) -> None:
    """Start every node of the cluster file and serve until Ctrl-C.

    Each node keeps its data in the cluster file's ``data_dir`` between runs;
    ``--fresh`` deletes it first.
    """
    from edgekv.errors import EdgeKVError
    from edgekv.local.cluster import LocalCluster

    try:
        local = LocalCluster(config_path, run_dir=run_dir, wan=wan)
    except EdgeKVError as exc:
        click.echo(f"edgekv: {exc}", err=True)
        sys.exit(codes.ERROR)
    # The handler only flips a flag: Event.set() from a handler can deadlock when
    # the signal lands while the main thread holds the Event's own (non-reentrant)
    # lock inside Event.wait(), which is where it waits.
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    with local:
        try:
            if fresh:
                dirs = " ".join(str(d) for d in local.data_dirs().values())
                click.echo(f"--fresh: deleting the data of this cluster's nodes: {dirs}")
                removed = local.remove_data()
                click.echo(f"--fresh: {len(removed)} data directories deleted")
            local.start()
        except EdgeKVError as exc:
            click.echo(f"edgekv: {exc}", err=True)
            sys.exit(codes.ERROR)
        for spec in local.config.nodes:
            proc = local.nodes[spec.id]
            http = f"http {proc.http_endpoint}  " if proc.http_endpoint else ""
            click.echo(
                f"{spec.id:<10} {spec.region:<14} {proc.endpoint:<22} "
                f"{http}data {spec.data_dir}  log {proc.log_path}"
            )
        if not fresh:
            click.echo("data is kept between runs; --fresh (make run FRESH=1) starts clean")
        if wan:
            click.echo("WAN emulation on: inter-region links carry realistic one-way delays")
        if demo:
            from edgekv.local.demo import tour

            tour(local)
        click.echo("serving; Ctrl-C stops every node cleanly")
        while not stopping:
            time.sleep(_STOP_POLL_S)
        click.echo("stopping...")
