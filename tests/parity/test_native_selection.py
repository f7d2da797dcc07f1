"""edgekv.native picks the compiled read path, the fallback only when forced or missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgekv import native

NAMES = ["decode_record", "encode_record", "record_version", "Reader", "key_bucket",
         "version_hash", "record_hash", "RECORD_LAYOUT", "stream_plain_get",
         "stream_get_answer"]  # fmt: skip


def run_python(code: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with EDGEKV_PUREPYTHON set or removed."""
    child_env = {k: v for k, v in os.environ.items() if k != "EDGEKV_PUREPYTHON"}
    child_env.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", code], env=child_env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip


REPORT = (
    "import edgekv.native as n; print(n.ACTIVE, n.decode_record.__module__, n.Reader.__module__)"
)


def test_active_is_cython_unless_purepython_set() -> None:
    expected = "python" if os.environ.get("EDGEKV_PUREPYTHON") == "1" else "cython"
    assert expected == native.ACTIVE


def test_native_names_come_from_the_active_impl() -> None:
    from edgekv import _fallback, _speedups

    impl = _speedups if native.ACTIVE == "cython" else _fallback
    for name in NAMES:
        assert getattr(native, name) is getattr(impl, name), name
    assert set(native.__all__) == {*NAMES, "ACTIVE"}


def test_purepython_env_selects_fallback() -> None:
    out = run_python(REPORT, EDGEKV_PUREPYTHON="1").stdout.split()
    assert out == ["python", "edgekv._fallback", "edgekv._fallback"]


def test_without_env_selects_compiled() -> None:
    out = run_python(REPORT).stdout.split()
    assert out[0] == "cython" and out[-1] == "edgekv._speedups"


@pytest.mark.parametrize("value", ["0", "", "yes"])
def test_purepython_env_other_values_keep_compiled(value: str) -> None:
    assert run_python(REPORT, EDGEKV_PUREPYTHON=value).stdout.split()[0] == "cython"


def test_missing_extension_falls_back_with_warning() -> None:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING); "
        "sys.modules['edgekv._speedups'] = None; "  # makes the import fail
        "import edgekv.native as n; print(n.ACTIVE)"
    )
    proc = run_python(code)
    assert proc.stdout.split() == ["python"]
    assert "make build" in proc.stderr and "fallback" in proc.stderr
