"""Run a Worker in workerd, Cloudflare's open-source Workers runtime, on this machine.

Used by `make example` (scripts/edge_example.py) and by the integration tests,
so both run the edge-function example the same way: ``workerd serve CONFIG``
with the socket moved to a free loopback port and the bindings passed in the
environment, ready once the port accepts connections (never after a sleep),
stopped with SIGTERM then SIGKILL, and killed at exit whatever happened.
The workerd binary comes from npm (scripts/npm_setup.sh installs it).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekv.errors import EdgeKVError
from edgekv.local.launcher import free_port, log_tail, terminate
from edgekv.local.wait import wait_until

DEFAULT_START_TIMEOUT_S = 30.0
_live: set[WorkerdProcess] = set()


class WorkerdError(EdgeKVError):
    """workerd did not start serving; the message carries its log tail."""


@dataclass(eq=False)
class WorkerdProcess:
    """A running ``workerd serve`` and the loopback URL its socket listens on."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit code."""
        code = terminate(self.proc, grace_s)
        _live.discard(self)
        return code


def workerd_binary(project: str | os.PathLike[str]) -> Path:
    """The workerd executable that npm installed under ``project``/node_modules.

    The npm package's ``bin/workerd`` is a Node wrapper that runs the platform
    binary as its child, so signalling the wrapper would leave workerd running:
    the package's main module names the binary itself, and that is what to run.
    """
    proc = subprocess.run(
        ["node", "-p", 'require("workerd").default'],
        cwd=project, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    path = Path(proc.stdout.strip())
    if proc.returncode != 0 or not path.is_file():
        raise WorkerdError(
            f"workerd is not installed under {project}/node_modules (run scripts/npm_setup.sh): "
            f"{proc.stderr.strip()}"
        )
    return path


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_workerd(
    workerd: str | os.PathLike[str],
    config: str | os.PathLike[str],
    *,
    env: dict[str, str],
    socket_name: str = "http",
    port: int | None = None,
    log_path: str | os.PathLike[str],
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> WorkerdProcess:
    """Serve ``config`` with its socket ``socket_name`` on 127.0.0.1:``port`` (free if None).

    ``workerd`` is the executable itself (``workerd_binary``), not npm's wrapper.
    ``env`` is added to this process's environment: the config's
    ``fromEnvironment`` bindings read it. Raises WorkerdError with the log tail
    if workerd exits or does not accept connections within ``timeout_s``.
    """
    port = port or free_port()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(workerd), "serve", str(config),
        "--socket-addr", f"{socket_name}=127.0.0.1:{port}",
    ]  # fmt: skip
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    worker = WorkerdProcess(proc, f"http://127.0.0.1:{port}", log_path)
    _live.add(worker)

    def serving_or_exited() -> bool:
        return proc.poll() is not None or _accepts(port)

    try:
        wait_until(serving_or_exited, timeout_s=timeout_s, what=f"workerd to listen on {port}")
    except TimeoutError as exc:
        worker.stop(grace_s=0)
        raise WorkerdError(f"{exc}:\n{worker.log_tail()}") from exc
    if proc.poll() is not None:
        _live.discard(worker)
        raise WorkerdError(
            f"workerd exited with code {proc.returncode} before serving:\n{worker.log_tail()}"
        )
    return worker


@atexit.register
def _kill_all() -> None:
    for worker in list(_live):
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
        _live.discard(worker)
