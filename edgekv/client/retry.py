"""Retry policy: backoff with jitter on UNAVAILABLE, for idempotent calls only.

Reads (get, get_many, scan pages, status, members) are retried; writes are
not, because a write that timed out may have been applied (a retry would
write a second version). Failover to another node is separate (see sync.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; backoff doubles up to ``max_backoff_s``."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts is {self.max_attempts}; it must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoff times must be >= 0 and multiplier >= 1")

    def backoff_s(self, attempt: int, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        if not self.jitter:
            return base
        r = random.random() if rand is None else rand
        return base * (0.5 + r / 2)  # "equal jitter": between half and all of the base

    def should_retry(self, code: grpc.StatusCode, attempt: int, idempotent: bool) -> bool:
        return idempotent and code in RETRYABLE_CODES and attempt < self.max_attempts


NO_RETRY = RetryPolicy(max_attempts=1)
