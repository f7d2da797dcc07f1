"""edgekv.local.diskquota: where a tmpfs cannot be mounted, the refusal says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekv.local.diskquota import QuotaUnavailable, mount_tmpfs


def test_mount_without_root_raises_quota_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(QuotaUnavailable, match="needs root"):
        mount_tmpfs(tmp_path / "d", 1)
    assert not (tmp_path / "d").exists()
