"""The torture checker on hand-made histories: it passes what LWW allows, names what it does not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgekv.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable

from .checker import Violation, check_audits, check_convergence, check_history
from .history import DELETE, FAILED, GET, OK, PUT, UNKNOWN, History, Op, outcome_of, values_unique
from .report import failure
from .runner import Result, Settings

K = b"g/1"


def history(*rows: tuple[str, str, bytes | None, str, tuple[int, str] | None]) -> list[Op]:
    """Rows of (kind, node, value, outcome, version) on key K."""
    h = History()
    for i, (kind, node, value, outcome, version) in enumerate(rows):
        h.add(client=f"c{i}", node=node, kind=kind, key=K, value=value, outcome=outcome,
              version=version, start_s=float(i), end_s=i + 0.5)  # fmt: skip
    return h.ops


def checks(violations: Sequence[Violation]) -> list[str]:
    return [v.check for v in violations]


def test_newest_acknowledged_put_surviving_passes() -> None:
    ops = history(("put", "a", b"v1", OK, (10, "a")), ("put", "b", b"v2", OK, (20, "b")))
    assert check_history(ops, {K: (b"v2", 20, "b")}) == []


def test_concurrent_puts_the_greater_version_wins_whatever_the_order() -> None:
    # v2 was sent later in real time but with a smaller version (a clock behind): it loses.
    ops = history(("put", "a", b"v1", OK, (30, "a")), ("put", "b", b"v2", OK, (20, "b")))
    assert check_history(ops, {K: (b"v1", 30, "a")}) == []
    assert checks(check_history(ops, {K: (b"v2", 20, "b")})) == ["lost-write"]


def test_lww_keeping_the_older_version_is_a_lost_write() -> None:
    ops = history(("put", "a", b"old", OK, (10, "a")), ("put", "b", b"new", OK, (11, "b")))
    [v] = check_history(ops, {K: (b"old", 10, "a")})
    assert v.check == "lost-write" and v.key == K
    assert "#1 put acknowledged at 11/b" in v.detail and "older 10/a" in v.detail


def test_forgotten_acknowledged_put_is_a_lost_write() -> None:
    ops = history(("put", "a", b"v1", OK, (10, "a")))
    assert checks(check_history(ops, {})) == ["lost-write"]


def test_forgotten_put_explained_by_an_unknown_delete_passes() -> None:
    ops = history(("put", "a", b"v1", OK, (10, "a")), ("delete", "b", None, UNKNOWN, None))
    assert check_history(ops, {}) == []


def test_forgotten_put_not_explained_by_an_older_delete() -> None:
    ops = history(("delete", "b", None, OK, (5, "b")), ("put", "a", b"v1", OK, (10, "a")))
    assert checks(check_history(ops, {})) == ["lost-write"]


def test_deleted_key_stays_deleted() -> None:
    ops = history(("put", "a", b"v1", OK, (10, "a")), ("delete", "b", None, OK, (20, "b")))
    assert check_history(ops, {}) == []
    [v] = check_history(ops, {K: (b"v1", 10, "a")})
    assert v.check == "resurrected" and "deleted key came back" in v.detail


def test_deleted_key_rewritten_by_an_unknown_put_passes() -> None:
    ops = history(("delete", "b", None, OK, (20, "b")), ("put", "a", b"v2", UNKNOWN, None))
    assert check_history(ops, {K: (b"v2", 30, "a")}) == []


def test_surviving_value_with_another_version_than_acknowledged() -> None:
    ops = history(("put", "a", b"v1", OK, (10, "a")))
    [v] = check_history(ops, {K: (b"v1", 12, "a")})
    assert v.check == "wrong-version" and "acknowledged at 10/a" in v.detail


def test_value_nobody_wrote_is_a_phantom() -> None:
    ops = history(("put", "a", b"v1", OK, (10, "a")))
    assert checks(check_history(ops, {K: (b"zz", 50, "a")})) == ["phantom"]
    assert checks(check_history([], {K: (b"zz", 50, "a")})) == ["phantom"]


def test_refused_write_must_not_be_visible() -> None:
    ops = history(("put", "a", b"v1", FAILED, None))
    assert checks(check_history(ops, {K: (b"v1", 10, "a")})) == ["failed-write-visible"]
    assert check_history(ops, {}) == []


def test_reads_are_checked_like_the_final_state() -> None:
    ops = history(
        ("put", "a", b"v1", OK, (10, "a")),
        ("get", "b", b"v1", OK, (10, "a")),
        ("get", "c", b"v1", OK, (11, "a")),
        ("get", "c", None, OK, None),
    )
    assert checks(check_history(ops, {K: (b"v1", 10, "a")})) == ["wrong-version"]


def test_convergence_compares_holders_only() -> None:
    rec = (b"v", 1, "a")
    holds = {"a": {K}, "b": {K}, "c": set()}

    def may_hold(node: str, key: bytes) -> bool:
        return key in holds[node]

    assert check_convergence({"a": {K: rec}, "b": {K: rec}, "c": {}}, may_hold) == []
    diverged = check_convergence({"a": {K: rec}, "b": {}, "c": {}}, may_hold)
    assert checks(diverged) == ["convergence"] and "b=absent" in diverged[0].detail
    assert checks(check_convergence({"a": {K: rec}, "b": {K: rec}, "c": {K: rec}}, may_hold)) == [
        "residency"
    ]


def test_audits_must_be_clean() -> None:
    assert check_audits({"a": (0, [])}) == []
    [v] = check_audits({"a": (0, []), "c": (2, [("log", b"p1/3"), ("data", b"p1/3")])})
    assert v.check == "residency" and v.node == "c" and "log:b'p1/3'" in v.detail


def test_outcomes_of_errors() -> None:
    assert outcome_of(InvalidArgument("x")) == FAILED
    assert outcome_of(FailedPrecondition("fenced")) == FAILED
    assert outcome_of(Unavailable("x")) == UNKNOWN
    assert outcome_of(DeadlineExceeded("x")) == UNKNOWN
    assert outcome_of(RuntimeError("x")) == UNKNOWN


def test_history_around_a_key_shows_its_ops_and_the_faults() -> None:
    h = History()
    for op in history(("put", "a", b"v1", OK, (10, "a")), ("delete", "b", None, OK, (20, "b"))):
        h.ops.append(op)
    h.add(client="c9", node="a", kind=GET, key=b"other", value=None, outcome=OK)
    from .history import Fault

    h.faults.append(Fault("partition", ("a",), 0.2, 1.2))
    text = h.around(K)
    assert "v1" in text and "partition" in text and "other" not in text
    assert values_unique(h.ops)
    assert not values_unique([*h.ops, h.ops[0]])
    assert PUT in text and DELETE in text


def test_failure_report_names_the_seed_the_ops_and_the_replay(tmp_path: Path) -> None:
    h = History()
    for i in range(40):  # noise on the key before and after the violation
        h.add(client="c1", node="a", kind=GET, key=K, value=None, outcome=OK, start_s=float(i))
    put = h.add(client="c2", node="a", kind=PUT, key=K, value=b"v1", outcome=OK,
                version=(10, "a"), start_s=40.0)  # fmt: skip
    for i in range(40):
        h.add(client="c1", node="b", kind=GET, key=K, value=None, outcome=OK, start_s=41.0 + i)
    violations = check_history(h.ops, {K: (b"v1", 12, "b")})
    assert [v.ops for v in violations] == [(put.index,)]
    result = Result(Settings(seed=4242, duration_s=9), h, tmp_path, violations=violations)
    text = failure(result)
    assert "torture seed 4242 found 1 violation" in text
    assert f"> #{put.index} " in text  # the named write, marked, with its neighbours
    assert "#0 " not in text and "#80 " not in text  # not the whole history
    assert "make torture SEED=4242 DURATION=34 SEEDS=1" in text
    quick = Result(Settings(seed=7, quick=True), h, tmp_path, violations=violations)
    assert "TORTURE_SEED=7 .venv/bin/python -m pytest" in failure(quick)
    assert (tmp_path / "history.jsonl").read_text().count("\n") == 81
