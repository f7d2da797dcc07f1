"""The ``impl`` fixture: every parity test runs once over each read-path implementation.

Both are imported directly (not through edgekv.native), so the compiled module is
tested even under EDGEKV_PUREPYTHON=1. A missing extension fails its half of the
suite with a hint instead of skipping it: a silent fallback is what msgpack issues
#437 and #483 warn about.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

IMPLS = {"cython": "edgekv._speedups", "python": "edgekv._fallback"}


@pytest.fixture(scope="session", params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """edgekv._speedups (id "cython") or edgekv._fallback (id "python")."""
    name = IMPLS[request.param]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{name} cannot be imported ({exc}); run `make build`", pytrace=False)
