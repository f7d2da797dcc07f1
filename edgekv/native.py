"""Selects the read path: the compiled edgekv._speedups, or the pure-Python twin.

This is the only module that imports either one; everyone else calls
``native.decode_record(...)``, ``native.Reader(...)``. ``ACTIVE`` says which is in
use ("cython" or "python"); ``edgekv doctor`` and ``Cluster.Status`` report it.
``EDGEKV_PUREPYTHON=1`` forces the fallback. A missing extension falls back with
a warning, never silently.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

_impl: Any
if os.environ.get("EDGEKV_PUREPYTHON") == "1":
    from edgekv import _fallback as _impl

    ACTIVE = "python"
else:
    try:
        from edgekv import _speedups as _impl

        ACTIVE = "cython"
    except ImportError as exc:  # pragma: no cover - exercised by a fresh checkout without a build
        from edgekv import _fallback as _impl

        ACTIVE = "python"
        log.warning(
            "edgekv: the compiled read path is missing (%s); using the slower pure-Python "
            "fallback. Run `make build` to compile it.",
            exc,
        )

decode_record = _impl.decode_record
encode_record = _impl.encode_record
record_version = _impl.record_version
Reader = _impl.Reader
key_bucket = _impl.key_bucket
version_hash = _impl.version_hash
record_hash = _impl.record_hash
RECORD_LAYOUT = _impl.RECORD_LAYOUT
stream_plain_get = _impl.stream_plain_get
stream_get_answer = _impl.stream_get_answer

__all__ = [
    "ACTIVE",
    "RECORD_LAYOUT",
    "Reader",
    "decode_record",
    "encode_record",
    "key_bucket",
    "record_hash",
    "record_version",
    "stream_get_answer",
    "stream_plain_get",
    "version_hash",
]
