"""scripts/unasync.py: the committed sync client is exactly what the script makes of aio.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent  # ruff lives next to the interpreter in .venv
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_sync_client_is_generated_from_the_async_one() -> None:
    proc = run_script("--check")
    if proc.returncode != 0:
        pytest.fail(f"edgekv/client/sync.py is stale:\n{proc.stdout}\n{proc.stderr}", pytrace=False)


def load_script() -> dict[str, object]:
    import runpy

    return runpy.run_path(str(SCRIPT), run_name="unasync")


def test_async_blocks_keep_their_else_body_or_vanish() -> None:
    drop = load_script()["drop_async_blocks"]
    source = """\
    def f(self):
        if True:  # ASYNC
            await a()

            await b()
        else:
            if c:
                d()
        e()
    if True:  # ASYNC

        async def connect(self): ...

    def g(self): ...""".splitlines()
    assert drop(source) == [  # type: ignore[operator]
        "    def f(self):",
        "        if c:",
        "            d()",
        "        e()",
        "    def g(self): ...",
    ]


def test_sync_client_has_no_async_only_api() -> None:
    from edgekv.client import AsyncClient, Client

    assert hasattr(AsyncClient, "connect") and not hasattr(Client, "connect")
    assert Client.__doc__ and "Thread-safe" in Client.__doc__ and "async" not in Client.__doc__
    assert AsyncClient.__doc__ and "event loop" in AsyncClient.__doc__
