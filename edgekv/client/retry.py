"""Retry policy: backoff with jitter on UNAVAILABLE, for idempotent calls only.

Idempotent calls (get, get_many, every scan page, status, members) are retried
on the same node when it answers UNAVAILABLE: the node was unreachable or is
restarting, and asking again cannot change anything. Writes (put, delete,
write) are never retried by the policy: a write whose answer was lost may have
been applied, and a second attempt would store a second version (and could
overwrite a newer write of another client). Other codes are never retried:
INVALID_ARGUMENT will not get better, and DEADLINE_EXCEEDED already used the
caller's time.

``max_attempts`` counts attempts per node. With discovery and several nodes,
a node that still answers UNAVAILABLE after its attempts is marked failed and
the call moves to the next nearest node (see ``Client``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently idempotent calls are retried on UNAVAILABLE.

    ``max_attempts`` counts the first try (1 = never retry). The wait after
    failed attempt *n* is ``initial_backoff_s * multiplier ** (n - 1)``, capped
    at ``max_backoff_s``; with ``jitter`` it is drawn uniformly from the upper
    half of that ("equal jitter"), so many clients that failed together do not
    retry in lockstep. Immutable, so one policy may be shared by many clients.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts is {self.max_attempts}; it must be at least 1")
        if self.initial_backoff_s < 0:
            raise ValueError(f"initial_backoff_s is {self.initial_backoff_s}; it must be >= 0")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"max_backoff_s is {self.max_backoff_s}; it must be >= initial_backoff_s "
                f"({self.initial_backoff_s})"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier is {self.multiplier}; it must be >= 1")

    def backoff_s(self, attempt: int, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``rand`` in [0, 1) replaces the random draw (tests); ignored without jitter.
        """
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        if not self.jitter:
            return base
        r = random.random() if rand is None else rand
        return base * (0.5 + r / 2)  # "equal jitter": between half and all of the base

    def should_retry(self, code: grpc.StatusCode, attempt: int, idempotent: bool) -> bool:
        """Whether to try the same node again after ``attempt`` failed with ``code``."""
        return idempotent and code in RETRYABLE_CODES and attempt < self.max_attempts


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
