"""Where and how a client command connects: the options and the target they name.

``--endpoint HOST:PORT`` (or ``$EDGEKV_ENDPOINT``; an ``http(s)://HOST:PORT``
HTTP door works too), or ``--config FILE --node ID``, plus ``--timeout``,
``--json``, ``--token`` and ``--ca-file``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from edgekv.client import Client

F = TypeVar("F", bound=Callable[..., Any])
CONNECTION_OPTIONS = ("endpoint", "config_path", "node_id", "timeout_s", "ca_file", "token")


def endpoint_options(fn: F | None = None, *, timeout_s: float = 5.0) -> Any:
    """--endpoint, or --config/--node, plus --timeout, --json, --token and --ca-file.

    Used bare (``@endpoint_options``) or with another default ``--timeout``
    (``@endpoint_options(timeout_s=120)``) for calls that walk the database.
    """
    if fn is None:
        return functools.partial(endpoint_options, timeout_s=timeout_s)
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(fn)
    fn = click.option("--token", envvar="EDGEKV_TOKEN",
                      help="Bearer token (or $EDGEKV_TOKEN).")(fn)  # fmt: skip
    fn = click.option("--ca-file", envvar="EDGEKV_CA_FILE", type=click.Path(dir_okay=False),
                      help="CA certificate for TLS (default: the cluster file's).")(fn)  # fmt: skip
    fn = click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
                      default=timeout_s, show_default=True,
                      help="Seconds per call.")(fn)  # fmt: skip
    fn = click.option("--node", "node_id", help="Node id in --config.")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                      help="Cluster file; with --node, talk to that node.")(fn)  # fmt: skip
    fn = click.option("--endpoint", "-e", envvar="EDGEKV_ENDPOINT", callback=_check_endpoint,
                      help="Node address HOST:PORT: the node's listen address, not its "
                           "peer_listen; or http(s)://HOST:PORT, its HTTP door "
                           "(or $EDGEKV_ENDPOINT).")(fn)  # fmt: skip
    return fn


def _check_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """HOST:PORT with a port 1..65535 (or a gRPC target such as unix:/path, or an
    http(s)://HOST:PORT HTTP door); exit 2 if not.

    The SDK checks its endpoints with the same function (``_codec.check_endpoint``).
    """
    from edgekv.client._codec import check_endpoint
    from edgekv.errors import InvalidArgument

    if value is None:
        return value
    try:
        return check_endpoint(value)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc)) from None


class Target:
    """Where and how to connect: the endpoint, the timeout, the token and CA file.

    ``--endpoint`` wins over ``--config/--node``; the cluster file still
    provides the CA certificate when the cluster runs TLS and no --ca-file
    was given. Raises click.UsageError (exit 2) when no endpoint can be
    determined, and ConfigError (exit 1) for a bad cluster file or node id.
    """

    def __init__(
        self,
        endpoint: str | None,
        config_path: str | None,
        node_id: str | None,
        timeout_s: float,
        ca_file: str | None = None,
        token: str | None = None,
    ) -> None:
        self.token = token
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        if node_id and not config_path:
            raise click.UsageError("--node needs --config FILE (the cluster file)")
        if config_path and not node_id and not endpoint:
            raise click.UsageError("--config needs --node ID (which node to talk to)")
        if config_path and (not endpoint or not ca_file):
            from edgekv.config.loader import load_config

            config = load_config(config_path)
            if config.security.tls is not None and not ca_file:
                self.ca_file = str(config.security.tls.ca_file)
            if not endpoint and node_id:
                endpoint = config.node(node_id).listen
        if not endpoint:
            raise click.UsageError("give --endpoint HOST:PORT, or --config FILE and --node ID")
        self.endpoint: str = endpoint

    @classmethod
    def from_options(cls, conn: dict[str, Any]) -> Target:
        return cls(**{name: conn[name] for name in CONNECTION_OPTIONS})

    def require_grpc(self, command: str) -> None:
        """Exit 2 when the endpoint is an HTTP door: ``command`` speaks gRPC only."""
        from edgekv.client._connect import is_url

        if is_url(self.endpoint):
            raise click.UsageError(
                f"'edgekv {command}' talks to the gRPC port; give the node's listen address "
                f"HOST:PORT, not the HTTP door {self.endpoint}"
            )

    def client(self, **kwargs: Any) -> Client:
        """A client of exactly this node (no discovery, so no re-routing; it may forward),
        calling unary: a command makes a call or a few, which a stream would only delay."""
        from edgekv.client import Client

        kwargs.setdefault("transport", "unary")
        return Client(
            self.endpoint, timeout_s=self.timeout_s, discover=False, token=self.token,
            tls_ca_file=self.ca_file, **kwargs,
        )  # fmt: skip
