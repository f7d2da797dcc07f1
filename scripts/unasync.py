"""Write the blocking client (edgekv/client/sync.py) from the asyncio one (edgekv/client/aio.py).

The two clients make the same decisions in the same order; they differ in how
they wait. So one is written by hand (``AsyncClient``) and the other is
generated from it and committed, as httpcore does with its scripts/unasync.py:

1. ``if True:  # ASYNC`` blocks (psycopg's tools/async_to_sync.py marks its
   async-only code the same way) keep their ``else:`` body in the sync file, or
   vanish when they have none. CPython drops the dead branch when it compiles
   the async file, so the marker costs the asyncio client nothing at run time.
2. Whole phrases of prose that must read differently (the module docstring, the
   class docstring's lifecycle paragraph) are replaced; each must occur exactly once.
3. Tokens are replaced line by line (``async def`` -> ``def``, ``await `` -> "",
   ``AsyncClient`` -> ``Client``, ...); every rule must be used at least once,
   so a rule that no longer matches anything fails loudly.
4. ``ruff`` sorts the imports, drops the ones left unused (``asyncio``), turns
   ``for x in xs: yield x`` (async generators cannot ``yield from``) back into
   ``yield from xs``, and formats.

Usage: ``python scripts/unasync.py`` rewrites sync.py; ``--check`` writes
nothing, prints a diff and exits 1 when the committed file is stale (a unit
test runs it).
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "edgekv/client/aio.py"
TARGET = ROOT / "edgekv/client/sync.py"

HEADER = (
    "# Generated from edgekv/client/aio.py by scripts/unasync.py: edit that file, not this one.\n"
)

PHRASES: list[tuple[str, str]] = [
    (
        '''"""edgekv.AsyncClient: the asyncio SDK, on gRPC's asyncio stack (grpc.aio).

This file is the source of both clients: scripts/unasync.py writes
edgekv/client/sync.py (``Client``) from it by dropping ``async``/``await``, and
by keeping the ``else`` side of each ``if True:  # ASYNC`` block (the few places
where blocking code must differ). Edit this file, then run ``make unasync``;
tests/unit/test_unasync.py fails while the two disagree.
"""''',
        '''"""edgekv.Client: the synchronous SDK, on gRPC's synchronous stack (no event loop).

Generated from edgekv/client/aio.py by scripts/unasync.py, so both clients share
every line of logic. Edit aio.py, then run ``make unasync``.
"""''',
    ),
    (
        '"""An asyncio edgekv client, with the methods and contract of ``edgekv.Client``.',
        '"""A synchronous edgekv client.',
    ),
    (
        """    Discovery runs on ``async with`` or ``await connect()``, else on the first
    call, and raises ``Unavailable`` if no seed answers. Every method is a
    coroutine except ``scan`` and ``watch``, which return async iterators
    (``async for entry in client.scan(b"p/")``). Bound to the event loop it
    first runs in: use one instance per loop; many coroutines of that loop may
    share it. Use it as ``async with AsyncClient(...) as client``, or
    ``await client.close()``.
""",
        """    Discovery runs in the constructor, which raises ``Unavailable`` if no
    seed answers. ``scan`` and ``watch`` return iterators. Thread-safe: one
    client (and its channels) may be shared by threads. Use it as a context
    manager, or call ``close()``.
""",
    ),
]

TOKENS: list[tuple[str, str]] = [
    ("AsyncIterator", "Iterator"),
    ("AsyncClient", "Client"),
    ("async def", "def"),
    ("async for", "for"),
    ("await ", ""),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("async iterator", "iterator"),
    ("grpc.aio", "grpc"),
    ("asyncio.sleep", "time.sleep"),
    ("Awaitable[None]", "None"),
]
# Whole words only: no match inside a longer name (``AsyncClientX``, ``xawait``).
_COMPILED = [
    (re.compile(r"(?<!\w)" + re.escape(old) + (r"(?!\w)" if old[-1].isalnum() else "")), new)
    for old, new in TOKENS
]

_ASYNC_IF = re.compile(r"^(\s*)if True:  # ASYNC$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index of the first line from ``start`` that is neither blank nor indented past ``indent``."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
        i += 1
    return i


def drop_async_blocks(lines: list[str]) -> list[str]:
    """Replace each ``if True:  # ASYNC`` block by its ``else:`` body, dedented one level."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _ASYNC_IF.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match.group(1))
        i = _block_end(lines, i + 1, indent)
        if i < len(lines) and lines[i] == " " * indent + "else:":
            end = _block_end(lines, i + 1, indent)
            body = lines[i + 1 : end]
            step = min(_indent(line) for line in body if line.strip()) - indent
            out.extend(line[step:] if line.strip() else line for line in body)
            i = end
    return out


def unasync(source: str) -> str:
    """The sync module for async ``source``, before ruff (raises if a rule went unused)."""
    for old, new in PHRASES:
        if source.count(old) != 1:
            raise SystemExit(f"unasync: phrase found {source.count(old)} times, not once:\n{old}")
        source = source.replace(old, new)
    lines = drop_async_blocks(source.splitlines())
    unused = set(range(len(_COMPILED)))
    for n, line in enumerate(lines):
        for index, (pattern, new) in enumerate(_COMPILED):
            line, count = pattern.subn(new, line)
            if count:
                unused.discard(index)
        lines[n] = line
    if unused:
        raise SystemExit(f"unasync: rules that matched nothing: {[TOKENS[i] for i in unused]}")
    return HEADER + "\n".join(lines) + "\n"


def ruff(text: str) -> str:
    """``text`` after the ruff fixes of rule 4, formatted with the repository's settings."""
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        raise SystemExit("unasync: ruff not found; run `make build` (it is a test dependency)")
    for args in (["check", "--fix-only", "--unsafe-fixes", "--select", "I,F401,UP028"], ["format"]):
        text = subprocess.run(
            [exe, *args, "--stdin-filename", str(TARGET), "-"],
            input=text, capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
    return text


def generate() -> str:
    """The sync module as it should be committed."""
    text = ruff(unasync(SOURCE.read_text()))
    leftover = [line for line in text.splitlines() if re.search(r"\b(async|await|asyncio)\b", line)]
    if leftover:
        raise SystemExit(f"unasync: async code left in the sync client: {leftover}")
    return text


def main(argv: list[str]) -> int:
    expected = generate()
    if "--check" not in argv:
        TARGET.write_text(expected)
        return 0
    actual = TARGET.read_text()
    if actual == expected:
        return 0
    diff = difflib.unified_diff(
        actual.splitlines(keepends=True), expected.splitlines(keepends=True),
        f"{TARGET.relative_to(ROOT)} (committed)", "generated from aio.py",
    )  # fmt: skip
    sys.stdout.writelines(diff)
    print(f"\n{TARGET.relative_to(ROOT)} is stale: run `make unasync` (scripts/unasync.py)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
