"""What an answer weighs: the byte budget of BatchGet and Scan answers (Limits.response_bytes)."""

from __future__ import annotations

from collections.abc import Sequence

from edgekv.coordinator.results import Found
from edgekv.storage.record import ScanItem, ScanPage

# Protobuf framing of one item of an answer (tags, lengths, version), counted generously.
ITEM_OVERHEAD_BYTES = 32


def found_bytes(keys: Sequence[bytes], found: Sequence[Found]) -> int:
    """What a BatchGet answer of ``found`` adds to its message, framing included."""
    size = sum(len(k) for k in keys) + ITEM_OVERHEAD_BYTES * len(keys)
    for item in found:
        if item is not None:
            size += len(item[0]) + len(item[2])
    return size


def item_bytes(item: ScanItem, keys_only: bool) -> int:
    value = 0 if keys_only else len(item.value)
    return len(item.key) + value + len(item.origin) + ITEM_OVERHEAD_BYTES


def cut_to_bytes(
    items: list[ScanItem], token: bytes, budget: int, keys_only: bool
) -> tuple[list[ScanItem], bytes]:
    """A merged page cut at ``budget`` bytes of items (at least one), and its token."""
    size = 0
    for i, item in enumerate(items):
        size += item_bytes(item, keys_only)
        if i and size > budget:
            return items[:i], item.key
    return items, token


def page_items(page: ScanPage, keys_only: bool) -> list[ScanItem]:
    if keys_only:
        return [item._replace(value=b"") for item in page.items]
    return page.items
