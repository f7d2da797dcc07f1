"""The SESSION check on hand-made histories: reads never go back in time within a session."""

from __future__ import annotations

from .checker import check_sessions
from .history import DELETE, FAILED, GET, LOCAL, OK, PUT, SESSION, UNKNOWN, History, Op

K = b"g/1"
Row = tuple[str, str, str, bytes | None, str, tuple[int, str] | None]


def history(*rows: Row, level: str = SESSION) -> list[Op]:
    """Rows of (session, kind, node, value, outcome, version) on key K; gets read at ``level``."""
    h = History()
    for i, (session, kind, node, value, outcome, version) in enumerate(rows):
        h.add(client=session or "other", node=node, kind=kind, key=K, value=value,
              outcome=outcome, version=version, start_s=float(i), end_s=i + 0.5,
              session=session, level=level if kind == GET else "")  # fmt: skip
    return h.ops


def test_session_reading_its_write_and_newer_values_passes() -> None:
    ops = history(
        ("s1", PUT, "a", b"v1", OK, (10, "a")),
        ("s1", GET, "b", b"v1", OK, (10, "a")),
        ("", PUT, "c", b"v2", OK, (20, "c")),  # another client's newer value: fine
        ("s1", GET, "c", b"v2", OK, (20, "c")),
        ("s1", GET, "b", b"v2", OK, (20, "c")),
    )
    assert check_sessions(ops) == []


def test_read_missing_the_sessions_own_write_is_caught() -> None:
    ops = history(
        ("", PUT, "a", b"v0", OK, (5, "a")),
        ("s1", PUT, "a", b"v1", OK, (10, "a")),
        ("s1", GET, "c", b"v0", OK, (5, "a")),
    )
    [v] = check_sessions(ops)
    assert v.check == "session-read-your-writes" and v.key == K and v.node == "c"
    assert v.ops == (1, 2)
    assert "v0@5/a" in v.detail and "own put #1 acknowledged at 10/a" in v.detail


def test_read_going_back_in_time_is_caught() -> None:
    ops = history(
        ("", PUT, "a", b"v0", OK, (5, "a")),
        ("", PUT, "b", b"v1", OK, (10, "b")),
        ("s1", GET, "b", b"v1", OK, (10, "b")),
        ("s1", GET, "c", b"v0", OK, (5, "a")),
    )
    [v] = check_sessions(ops)
    assert v.check == "session-monotonic-reads" and v.ops == (2, 3)
    assert "read #2 of v1@10/b" in v.detail


def test_read_absent_after_reading_a_value_needs_a_delete() -> None:
    rows: list[Row] = [
        ("", PUT, "a", b"v1", OK, (10, "a")),
        ("s1", GET, "a", b"v1", OK, (10, "a")),
        ("s1", GET, "c", None, OK, None),
    ]
    assert [v.check for v in check_sessions(history(*rows))] == ["session-monotonic-reads"]
    older = ("", DELETE, "b", None, OK, (8, "b"))
    assert [v.check for v in check_sessions(history(older, *rows))] == ["session-monotonic-reads"]
    for delete in [("", DELETE, "b", None, OK, (12, "b")), ("", DELETE, "b", None, UNKNOWN, None)]:
        assert check_sessions(history(*rows, delete)) == []
    refused = ("", DELETE, "b", None, FAILED, None)
    assert [v.check for v in check_sessions(history(*rows, refused))] == ["session-monotonic-reads"]


def test_live_value_older_than_the_sessions_delete_is_caught() -> None:
    ops = history(
        ("", PUT, "a", b"v1", OK, (10, "a")),
        ("s1", DELETE, "b", None, OK, (12, "b")),
        ("s1", GET, "b", None, OK, None),  # the tombstone: fine
        ("s1", GET, "c", b"v1", OK, (10, "a")),  # the deleted value came back
    )
    [v] = check_sessions(ops)
    assert v.check == "session-read-your-writes" and v.ops == (1, 3)
    assert "own delete #1" in v.detail


def test_unacknowledged_writes_set_no_floor() -> None:
    ops = history(
        ("", PUT, "a", b"v0", OK, (5, "a")),
        ("s1", PUT, "a", b"v1", UNKNOWN, None),
        ("s1", PUT, "a", b"v2", FAILED, None),
        ("s1", GET, "c", b"v0", OK, (5, "a")),
    )
    assert check_sessions(ops) == []


def test_failed_local_and_other_sessions_reads_are_not_held_to_the_session() -> None:
    ops = history(
        ("", PUT, "a", b"v0", OK, (5, "a")),
        ("s1", PUT, "a", b"v1", OK, (10, "a")),
        ("s1", GET, "c", None, UNKNOWN, None),  # UNAVAILABLE: no covering PoP reachable
        ("s2", GET, "c", b"v0", OK, (5, "a")),  # another session never saw v1
    )
    assert check_sessions(ops) == []
    local = history(
        ("s1", PUT, "a", b"v1", OK, (10, "a")), ("s1", GET, "c", None, OK, None), level=LOCAL
    )
    assert check_sessions(local) == []
