"""A settable wall clock for storage tests (imported by tests/unit/conftest.py's ``wall``)."""

from __future__ import annotations

import time

import pytest

from edgekv.storage import clock as clock_module


class FakeTime:
    """Stands in for the ``time`` module inside edgekv.storage.clock."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def time_ns(self) -> int:
        return self.ms * 1_000_000


def install(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """Make edgekv.storage.clock read a FakeTime that starts at the real time."""
    fake = FakeTime(time.time_ns() // 1_000_000)
    monkeypatch.setattr(clock_module, "time", fake)
    return fake
