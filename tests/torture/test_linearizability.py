"""The linearizability checker accepts valid histories and rejects invalid ones (it can fail)."""

from __future__ import annotations

import dataclasses
import random

from tests.torture.linearizability import (
    ABSENT,
    CAS,
    READ,
    WRITE,
    Operation,
    check,
    check_key,
)

K = b"k"


def op(
    kind: str, call: float, ret: float | None, value: object = ABSENT, **kw: object
) -> Operation:
    return Operation(K, kind, call, ret, value, **kw)  # type: ignore[arg-type]


def test_sequential_history_accepted() -> None:
    history = [
        op(WRITE, 0, 1, b"a"),
        op(READ, 2, 3, b"a"),
        op(CAS, 4, 5, b"b", expected=b"a"),
        op(READ, 6, 7, b"b"),
        op(CAS, 8, 9, b"c", expected=b"a", ok=False, current=b"b"),
        op(WRITE, 10, 11, ABSENT),
        op(CAS, 12, 13, b"d", expected=ABSENT),
    ]
    assert check_key(history).ok


def test_stale_read_rejected() -> None:
    history = [op(WRITE, 0, 1, b"a"), op(WRITE, 2, 3, b"b"), op(READ, 4, 5, b"a")]
    result = check_key(history)
    assert not result.ok
    assert "read -> b'a'" in result.explanation


def test_concurrent_write_may_be_seen_either_way() -> None:
    assert check_key([op(WRITE, 0, 10, b"a"), op(READ, 1, 2, ABSENT), op(READ, 3, 4, b"a")]).ok
    assert check_key([op(WRITE, 0, 10, b"a"), op(READ, 1, 2, b"a"), op(READ, 3, 4, b"a")]).ok


def test_read_going_back_in_time_rejected() -> None:
    # Once a reader saw the concurrent write, a later reader may not miss it.
    history = [op(WRITE, 0, 10, b"a"), op(READ, 1, 2, b"a"), op(READ, 3, 4, ABSENT)]
    assert not check_key(history).ok


def test_lost_update_rejected() -> None:
    history = [
        op(WRITE, 0, 1, b"0"),
        op(CAS, 2, 5, b"1", expected=b"0"),
        op(CAS, 3, 6, b"2", expected=b"0"),  # both succeeded from the same version
    ]
    assert not check_key(history).ok
    history[2] = op(CAS, 3, 6, b"2", expected=b"0", ok=False, current=b"1")
    assert check_key(history).ok


def test_failed_cas_must_name_the_true_current_value() -> None:
    base = [op(WRITE, 0, 1, b"a")]
    assert check_key([*base, op(CAS, 2, 3, b"c", expected=b"b", ok=False, current=b"a")]).ok
    assert not check_key([*base, op(CAS, 2, 3, b"c", expected=b"b", ok=False, current=b"x")]).ok
    assert not check_key([*base, op(CAS, 2, 3, b"c", expected=b"a", ok=False)]).ok  # it held


def test_unanswered_write_may_or_may_not_have_happened() -> None:
    assert check_key([op(WRITE, 0, None, b"a"), op(READ, 5, 6, b"a")]).ok
    assert check_key([op(WRITE, 0, None, b"a"), op(READ, 5, 6, ABSENT)]).ok
    assert check_key([op(WRITE, 0, None, b"a"), op(READ, 1, 2, ABSENT), op(READ, 5, 6, b"a")]).ok
    # ...but not before it was sent, and not undone once seen.
    assert not check_key([op(READ, 0, 1, b"a"), op(WRITE, 2, None, b"a")]).ok
    assert not check_key(
        [op(WRITE, 0, None, b"a"), op(READ, 1, 2, b"a"), op(READ, 3, 4, ABSENT)]
    ).ok


def _random_history(seed: int, n: int = 200, clients: int = 6) -> list[Operation]:
    """A history of a real register: each op takes effect at a random point of its interval."""
    rng = random.Random(seed)
    state: object = ABSENT
    written = 0
    ops: list[Operation] = []
    now = 0.0
    # Effects happen in time order; intervals stretch around them and overlap.
    for _ in range(n):
        now += rng.random()
        call, ret = now - rng.random() * 3, now + rng.random() * 3
        kind = rng.choice((READ, WRITE, CAS, CAS))
        if kind == READ:
            ops.append(op(READ, call, ret, state))
        elif kind == WRITE:
            written += 1
            state = b"%d" % written
            ops.append(op(WRITE, call, ret, state))
        else:
            written += 1
            expected = state if rng.random() < 0.6 else b"stale"
            new = b"%d" % written
            if expected == state:
                ops.append(op(CAS, call, ret, new, expected=expected))
                state = new
            else:
                ops.append(op(CAS, call, ret, new, expected=expected, ok=False, current=state))
    return [dataclasses.replace(o, client=i % clients) for i, o in enumerate(ops)]


def test_random_valid_histories_accepted_and_corrupted_rejected() -> None:
    for seed in range(5):
        history = _random_history(seed)
        assert check_key(history).ok, seed
        # Corrupt one read of a value that was later overwritten: it reads the future.
        reads = [i for i, o in enumerate(history) if o.kind == READ and o.value is not ABSENT]
        i = reads[len(reads) // 2]
        r = history[i]
        writes_after = [o for o in history if o.kind != READ and o.call > r.ret + 10 and o.ok]  # type: ignore[operator]
        if not writes_after:
            continue
        history[i] = Operation(K, READ, r.call, r.ret, writes_after[-1].value)
        assert not check_key(history).ok, seed


def test_check_splits_keys() -> None:
    a = [Operation(b"a", WRITE, 0, 1, b"x"), Operation(b"a", READ, 2, 3, b"x")]
    b = [Operation(b"b", WRITE, 0, 1, b"y"), Operation(b"b", READ, 2, 3, ABSENT)]
    results = check([*a, *b])
    assert [(r.key, r.ok) for r in results] == [(b"b", False), (b"a", True)]


def test_unobserved_unanswered_writes_pruned_but_observed_kept() -> None:
    history = [op(WRITE, 0, 1, b"a")]
    history += [op(WRITE, 2 + i, None, b"lost-%d" % i) for i in range(200)]  # never seen
    history += [op(READ, 300, 301, b"a")]
    result = check_key(history)
    assert result.ok and result.operations == 2  # would be 2^200 orders without pruning
    seen = [op(WRITE, 0, 1, b"a"), op(WRITE, 2, None, b"b"), op(READ, 5, 6, b"b")]
    assert check_key(seen).ok and check_key(seen).operations == 3
    # A failed CAS that could not name what it found keeps every unanswered write.
    blind = [*seen[:2], op(CAS, 5, 6, b"c", expected=b"a", ok=False)]
    assert check_key(blind).ok and check_key(blind).operations == 3


def test_search_budget_gives_up_saying_so() -> None:
    history = _random_history(1)
    result = check_key(history, max_states=10)
    assert not result.ok and "inconclusive" in result.explanation
