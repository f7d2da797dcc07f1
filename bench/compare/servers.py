"""The server processes of a comparison run: one edgekv node, Redis, etcd and NATS.

Each starts on loopback, on free ports from edgekv.local.launcher, with its data
in the run's temporary directory, and is ready when its port answers (etcd and
NATS are then probed with a real call by their adapters). Every process started
here is stopped by ``stop()`` (SIGTERM, then SIGKILL) and, should the run die
before that, by an ``atexit`` hook: no server outlives a run, not on Ctrl-C, not
on a failure.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgekv.local.launcher import NodeProcess, free_ports, log_tail, start_node, terminate
from edgekv.local.launcher import write_cluster_file as _write_cluster_file
from edgekv.local.wait import wait_until

START_TIMEOUT_S = 60.0  # generous: the machine may be busy with other work
_SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin")
_live: set[Server] = set()
STARTED_PIDS: list[int] = []  # every server process this run started, in order


@dataclass(eq=False)
class Server:
    """A peer server process (Redis, etcd or NATS) started by this run."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        terminate(self.proc, 10.0)
        _live.discard(self)


@dataclass(eq=False)
class EdgeKVServer:
    """The one edgekv node every edgekv path of the run talks to."""

    node: NodeProcess
    data_dir: Path

    @property
    def pids(self) -> list[int]:
        return [self.node.pid]

    def stop(self) -> None:
        self.node.stop()


def find_binary(name: str) -> str | None:
    """``name`` on PATH or in the system directories Debian installs servers into."""
    found = shutil.which(name)
    if found:
        return found
    return next((str(Path(d) / name) for d in _SEARCH_DIRS if (Path(d) / name).is_file()), None)


def binary_version(argv: list[str]) -> str:
    """The first line a server prints for its version flag ("?" when it prints nothing)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True


def _spawn(name: str, argv: list[str], tmp: Path, port: int, **extra: int) -> Server:
    log_path = tmp / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp)
    server = Server(name, proc, log_path, port, extra)
    _live.add(server)

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemError(f"exited with code {proc.returncode}")
        return _port_open(port)

    _started(name, proc.pid, port)
    try:
        wait_until(ready, timeout_s=START_TIMEOUT_S, what=f"{name} on port {port}")
    except TimeoutError as exc:
        server.stop()
        raise RuntimeError(f"{name} did not start: {exc}\n{log_tail(log_path)}") from exc
    return server


def _started(name: str, pid: int, port: int) -> None:
    """Say which process serves which port (the smoke test checks they are all gone after)."""
    STARTED_PIDS.append(pid)
    print(f"started {name}: pid {pid}, port {port}", flush=True)


def start_edgekv(tmp: Path) -> EdgeKVServer:
    """One edgekv node (gRPC and the HTTP door), its data under ``tmp``/edgekv."""
    directory = tmp / "edgekv"
    config = _write_cluster_file(directory, http=True)
    node = start_node(config, "node-1", log_level="warning", timeout_s=START_TIMEOUT_S)
    _started("edgekv node", node.pid, int(node.endpoint.rsplit(":", 1)[1]))
    return EdgeKVServer(node, directory / "data" / "node-1")


def start_redis(binary: str, tmp: Path) -> Server:
    """redis-server with persistence off (no RDB snapshots, no AOF): a cache, as at a PoP."""
    (port,) = free_ports(1)
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no", "--loglevel", "warning",
    ]  # fmt: skip
    return _spawn("redis", argv, tmp, port)


def start_etcd(binary: str, tmp: Path) -> Server:
    """A one-member etcd cluster (it fsyncs its WAL on every write: etcd has no switch for it)."""
    client, peer = free_ports(2)
    peer_url, client_url = f"http://127.0.0.1:{peer}", f"http://127.0.0.1:{client}"
    argv = [
        binary, "--name", "bench", "--data-dir", str(tmp / "etcd"),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"bench={peer_url}", "--logger", "zap", "--log-level", "error",
    ]  # fmt: skip
    return _spawn("etcd", argv, tmp, client, peer=peer)


def start_nats(binary: str, tmp: Path) -> Server:
    """nats-server with JetStream on file storage (the KV bucket lives there)."""
    (port,) = free_ports(1)
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "nats")]
    return _spawn("nats", argv, tmp, port)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time, in seconds, that the processes ``pids`` have used so far."""
    import os

    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@atexit.register
def _kill_all() -> None:
    for server in list(_live):
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
