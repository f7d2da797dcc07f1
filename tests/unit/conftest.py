"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from clockfake import FakeTime, install


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The engine's wall clock, settable (``wall.ms = ...``); starts at the real time."""
    return install(monkeypatch)
