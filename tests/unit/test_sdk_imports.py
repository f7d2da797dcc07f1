"""The SDK stands alone: ``import edgekv`` pulls in neither the node nor its dependencies.

An edge application depends on the SDK without RocksDB, PyYAML, the storage
engine, the server or the cluster-file loader. Each import runs in a fresh
interpreter, so modules other tests loaded cannot hide a stray import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Exact module names, and prefixes ending in "." for whole packages.
FORBIDDEN = (
    "rocksdict",
    "rocksdict.",
    "yaml",
    "yaml.",
    "edgekv.storage.engine",
    "edgekv.server",
    "edgekv.server.",
    "edgekv.replication",
    "edgekv.replication.",
    "edgekv.config.loader",
    "edgekv.config.sections",
    "edgekv.cli",
    "edgekv.cli.",
    "edgekv.local",
    "edgekv.local.",
    "edgekv.metrics",
)


def imported_by(statement: str, *, purepython: bool) -> set[str]:
    """The module names in sys.modules after ``statement`` in a fresh interpreter."""
    env = dict(os.environ)
    env.pop("EDGEKV_PUREPYTHON", None)
    if purepython:
        env["EDGEKV_PUREPYTHON"] = "1"
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def forbidden(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if any(m.startswith(f) if f.endswith(".") else m == f for f in FORBIDDEN)
    )


@pytest.mark.parametrize("purepython", [False, True], ids=["cython", "python"])
@pytest.mark.parametrize(
    "statement",
    [
        "import edgekv",
        "import edgekv.client",
        "from edgekv import Client, AsyncClient, READ_PATH",
        "import edgekv.client.discovery",
        # Embedded reads open RocksDB only when asked for (embedded=DATA_DIR).
        "import edgekv.client.embedded",
    ],
)
def test_sdk_import_leaves_node_modules_unloaded(statement: str, purepython: bool) -> None:
    assert forbidden(imported_by(statement, purepython=purepython)) == []


def test_sdk_read_path_still_exposed() -> None:
    modules = imported_by(
        "import edgekv\nassert edgekv.READ_PATH == 'python', edgekv.READ_PATH",
        purepython=True,
    )
    assert "edgekv.native" in modules


def test_forbidden_check_catches_the_loader() -> None:
    # The check itself works: importing the cluster-file loader is caught.
    found = forbidden(imported_by("import edgekv.config.loader", purepython=False))
    assert "yaml" in found
    assert "edgekv.config.loader" in found
