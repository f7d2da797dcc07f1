"""Lint and type checks run as tests, so a green `make test` also means clean code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)


def test_ruff_clean() -> None:
    run(str(BIN / "ruff"), "check", "edgekv", "tests", "bench", "scripts", "setup.py")


def test_mypy_clean() -> None:
    run(str(BIN / "mypy"))


def test_cython_lint_clean() -> None:
    run(str(BIN / "cython-lint"), "--max-line-length", "100", "native")
