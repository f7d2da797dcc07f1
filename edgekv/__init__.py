"""edgekv: an edge-native, globally replicated key-value store."""

from __future__ import annotations

from edgekv.errors import EdgeKVError
from edgekv.native import ACTIVE as READ_PATH

__version__ = "0.1.0"

__all__ = ["READ_PATH", "EdgeKVError", "__version__"]
