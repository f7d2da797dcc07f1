"""One ``impl`` fixture runs every parity test over the compiled and the Python read path."""

from __future__ import annotations

from types import ModuleType

import pytest

from edgekv import _fallback

try:
    from edgekv import _speedups
except ImportError:  # pragma: no cover - a build without the extension fails test_native_active
    _speedups = None  # type: ignore[assignment]

IMPLS = [pytest.param(_fallback, id="python")]
if _speedups is not None:
    IMPLS.append(pytest.param(_speedups, id="cython"))


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]
