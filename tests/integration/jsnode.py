"""Run the project's Node scripts (tests/integration/js/) against real nodes.

The JS side is installed by scripts/npm_setup.sh (npm ci from the lockfile,
protoc-gen-es, esbuild), once: later calls find its stamp and return at once.
Tests that use it skip, saying why, only when node or npm is not on this
machine's PATH.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edgekv.local.launcher import NodeProcess
from edgekv.local.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
JS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")

needs_node = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm are not on PATH: the JS clients and workerd need Node.js 20+ with npm",
)

_setup_done = False


def npm_setup() -> None:
    """Install node_modules, generate js/gen and bundle the examples (stamped, fast when done)."""
    global _setup_done
    if _setup_done:
        return
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "npm_setup.sh")],
        cwd=REPO, env={**os.environ, "PY": sys.executable},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"scripts/npm_setup.sh failed:\n{proc.stdout}\n{proc.stderr}"
    _setup_done = True


def b64(data: str | bytes) -> str:
    """Bytes (or UTF-8 text) as the protobuf JSON mapping spells a bytes field."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def http_url(node: NodeProcess) -> str:
    """The node's HTTP listener (http_listen) as a base URL, from its ready file."""
    return f"http://{node.info['http_endpoint']}"


def kv_calls(
    base_url: str,
    calls: list[dict[str, Any]],
    *,
    transport: str = "connect-node",
    binary: bool = True,
    token: str | None = None,
    http_version: str = "1.1",
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Run unary calls through js/kv_calls.mjs; one result dict per call (``ok`` or ``error``).

    ``http_version`` "2" makes the connect-node transports speak HTTP/2 (h2c by
    prior knowledge on an http:// URL).
    """
    spec = {
        "transport": transport, "binary": binary, "baseUrl": base_url, "token": token,
        "httpVersion": http_version, "calls": calls,
    }  # fmt: skip
    proc = subprocess.run(
        [str(NODE), str(JS / "kv_calls.mjs")],
        input=json.dumps(spec), cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert proc.returncode == 0, f"kv_calls.mjs failed:\n{proc.stderr}"
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def ok(result: dict[str, Any]) -> dict[str, Any]:
    """The response of a call that must have succeeded."""
    assert "ok" in result, f"the call failed: {result.get('error')}"
    response: dict[str, Any] = result["ok"]
    return response


class NodeScript:
    """A long-running Node script whose stdout JSON lines are collected by a thread.

    Stopped (SIGTERM, then SIGKILL) by ``close``; use as a context manager.
    """

    def __init__(self, script: str, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [str(NODE), str(JS / script), json.dumps(spec)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._queue.put(json.loads(line))

    def collected(self) -> list[dict[str, Any]]:
        """Every line printed so far."""
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return self.lines

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, what: str, predicate: Any, timeout_s: float = 15.0) -> dict[str, Any]:
        """The first collected line that satisfies ``predicate``, waiting up to ``timeout_s``."""

        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and self._queue.empty() and not self._reader.is_alive():
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"node script exited ({self.proc.returncode}): {stderr}")
            return next((line for line in self.collected() if predicate(line)), None)

        try:
            line: dict[str, Any] = wait_until(found, timeout_s=timeout_s, what=what)
        except TimeoutError as exc:
            raise AssertionError(f"{what}: not seen in {self.collected()} ({exc})") from None
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> NodeScript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
