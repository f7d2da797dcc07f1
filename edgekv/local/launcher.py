"""Start and stop real `edgekv serve` processes on this machine.

Used by the CLI (`make run`, local clusters) and by the integration tests, so
both exercise the same code. A node is ready when it has written its ready
file (after the gRPC server is listening), never after a sleep. Every process
started here is registered with an ``atexit`` hook that kills it, so a crashed
test run leaves no stray node behind.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekv.errors import EdgeKVError

DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_GRACE_S = 15.0

_live: set[NodeProcess] = set()


class LaunchError(EdgeKVError):
    """A node process did not become ready; the message carries its log tail."""


@dataclass(eq=False)
class NodeProcess:
    """A running `edgekv serve` child process and what it reported when ready."""

    node_id: str
    config_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_file: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """The client API address, "host:port", as the node reported it."""
        return str(self.info["endpoint"])

    @property
    def http_endpoint(self) -> str:
        """The HTTP door's "host:port" ("" when the node has no http_listen)."""
        return str(self.info.get("http_endpoint", ""))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int:
        """SIGTERM, wait up to ``grace_s`` for a clean drain, then SIGKILL; the exit code."""
        code = terminate(self.proc, grace_s)
        _live.discard(self)
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, with no drain and no flush."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _live.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


# A placement rule for write_cluster_file: (prefix, regions) or (prefix, regions, home).
PlacementSpec = tuple[str, Sequence[str]] | tuple[str, Sequence[str], str]


def _home_entry(rule: PlacementSpec) -> dict[str, str]:
    return {"home": rule[2]} if len(rule) == 3 else {}


def terminate(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM ``proc``, wait up to ``grace_s``, then SIGKILL; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a process's log ("" when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range."""
    return free_ports(1, host)[0]


# Listening ports are picked below the kernel's ephemeral range. bind(port 0)
# hands out a port from that range, and so does every outgoing connect(): in
# the time between writing a cluster file and a node binding its ports, a
# connection from another node could take one (CI saw EADDRINUSE on a metrics
# port that way). Below the range only explicit binds use a port.
_LOWEST_PICKED_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()  # not handed out twice by one process
_pick = random.Random(os.getpid() ^ time.monotonic_ns())
_share = (0, 1)  # this process picks every _share[1]-th port, from offset _share[0]


def share_ports(index: int, count: int) -> None:
    """Pick only ports of share ``index`` of ``count``: processes that start
    clusters side by side (parallel test workers) then never pick one port."""
    if not 0 <= index < count:
        raise ValueError(f"share {index} of {count} does not exist")
    global _share
    _share = (index, count)


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports nobody listens on, below the ephemeral range.

    Each is checked by binding it; all are held open until every one is found.
    Falls back to the kernel's choice when the ephemeral range starts too low
    to leave room below it.
    """
    index, count_shares = _share
    room = range(_LOWEST_PICKED_PORT + index, _ephemeral_low(), count_shares)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_bind_free(host, room))
        ports = [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()
    _handed_out.update(ports)
    return ports


def _bind_free(host: str, room: range) -> socket.socket:
    for _ in range(200 if room else 0):  # then the kernel picks
        port = _pick.choice(room)
        if port in _handed_out:
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            continue
        return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


def start_node(
    config_path: str | os.PathLike[str],
    node_id: str,
    *,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    log_dir: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    log_level: str = "info",
    extra_args: Sequence[str] = (),
    command_prefix: Sequence[str] = (),
) -> NodeProcess:
    """Start ``edgekv serve`` for ``node_id`` and wait until it is serving.

    ``command_prefix`` runs it through a command that execs it (the torture
    suite's ``ip netns exec NS``: the process, its pid, stays the node's).
    Raises LaunchError (with the node's log tail) if it exits or is not ready
    within ``timeout_s``; the process is killed in that case.
    """
    config_path = Path(config_path).resolve()
    run_dir = Path(log_dir) if log_dir else config_path.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{node_id}.log"
    ready_file = run_dir / f"{node_id}.ready.json"
    ready_file.unlink(missing_ok=True)
    cmd = [
        *command_prefix, sys.executable, "-m", "edgekv.cli.main", "serve",
        "--config", str(config_path), "--node", node_id,
        "--ready-file", str(ready_file), "--log-level", log_level, *extra_args,
    ]  # fmt: skip
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    node = NodeProcess(node_id, config_path, proc, log_path, ready_file)
    _live.add(node)
    deadline = time.monotonic() + timeout_s
    while True:
        if ready_file.exists():
            node.info = json.loads(ready_file.read_text(encoding="utf-8"))
            return node
        if proc.poll() is not None:
            _live.discard(node)
            raise LaunchError(
                f"node {node_id} exited with code {proc.returncode} before it was ready:\n"
                f"{node.log_tail()}"
            )
        if time.monotonic() > deadline:
            node.kill()
            raise LaunchError(
                f"node {node_id} was not ready after {timeout_s:.0f}s:\n{node.log_tail()}"
            )
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """Is a process with this id running (and not a zombie we could reap)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def sweep_ready_files(run_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Remove ready files left by nodes that are gone; return {node id: pid} of live ones.

    A node removes its ready file when it exits cleanly; one killed (SIGKILL,
    a crash, a power cut) leaves it behind with a dead PID, and it is deleted
    here. An unreadable file counts as stale.
    """
    live: dict[str, int] = {}
    for path in Path(run_dir).glob("*.ready.json"):
        try:
            pid = int(json.loads(path.read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pid = 0
        if pid_alive(pid):
            live[path.name.removesuffix(".ready.json")] = pid
        else:
            path.unlink(missing_ok=True)
    return live


def write_cluster_file(
    directory: str | os.PathLike[str],
    *,
    regions: Sequence[tuple[str, float, float]] = (("local", 0.0, 0.0),),
    nodes: Sequence[tuple[str, str]] = (("node-1", "local"),),
    placement: Sequence[PlacementSpec] = (),
    extra: dict[str, Any] | None = None,
    cluster: str = "test",
    metrics: bool = False,
    http: bool = False,
) -> Path:
    """Write a cluster file for nodes on loopback with free ports; return its path.

    ``regions`` are (name, lat, lon); ``nodes`` are (id, region); ``placement``
    rules are (prefix, regions) or (prefix, regions, home node id). Data
    directories go under ``directory``/data/<id>. With ``metrics`` every node
    also serves Prometheus metrics on a free port (``metrics_listen``), with
    ``http`` the HTTP door (``http_listen``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ports = iter(free_ports((2 + metrics + http) * len(nodes)))
    doc: dict[str, Any] = {
        "cluster": cluster,
        "regions": [{"name": name, "location": [lat, lon]} for name, lat, lon in regions],
        "nodes": [
            {
                "id": node_id,
                "region": region,
                "listen": f"127.0.0.1:{next(ports)}",
                "peer_listen": f"127.0.0.1:{next(ports)}",
                "data_dir": f"data/{node_id}",
            }
            for node_id, region in nodes
        ],
    }
    if metrics:
        for entry in doc["nodes"]:
            entry["metrics_listen"] = f"127.0.0.1:{next(ports)}"
    if http:
        for entry in doc["nodes"]:
            entry["http_listen"] = f"127.0.0.1:{next(ports)}"
    # Local clusters run without tokens, on purpose and visibly (the node warns).
    doc["security"] = {"auth": {"mode": "disabled"}}
    if placement:
        doc["placement"] = [
            {"prefix": rule[0], "regions": list(rule[1]), **_home_entry(rule)} for rule in placement
        ]
    doc.update(extra or {})
    path = directory / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_node(
    config_path: str | os.PathLike[str], node_id: str, **kwargs: Any
) -> Iterator[NodeProcess]:
    """``start_node`` as a context manager that always stops the node."""
    node = start_node(config_path, node_id, **kwargs)
    try:
        yield node
    finally:
        node.stop()


def temp_single_node() -> tuple[Path, str]:
    """A fresh one-node cluster file in a temp dir (for demos and quick checks)."""
    directory = Path(tempfile.mkdtemp(prefix="edgekv-"))
    return write_cluster_file(directory), "node-1"


@atexit.register
def _kill_all() -> None:
    for node in list(_live):
        node.kill()
