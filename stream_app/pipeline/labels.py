"""The label ledger: which label records the serving model has consumed, and label targets.

A model restored from a checkpoint must learn again exactly the labels its lost predecessor
learned after that checkpoint, and no others. The ledger keeps, per labels partition, the lowest
offset not yet consumed (``next``) and the consumed offsets above it (``ahead``: records
fetched before a rewind took effect may come first). It is saved with every checkpoint.

>>> ledger = LabelLedger()
>>> for offset in (5, 7, 6):
...     ledger.mark(0, offset)
>>> ledger.next, ledger.consumed(0, 6), ledger.consumed(0, 8)
({0: 8}, True, False)
>>> to_target("FRAUD", {"fraud"}), to_target(0, set()), to_target(True, set())
(True, False, True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

__all__ = ["LabelLedger", "to_target"]

log = logging.getLogger(__name__)

#: consumed offsets kept above a gap before giving up on it (a rewind that never took effect)
_MAX_AHEAD = 100_000


def to_target(label: bool | int | str, positive: set[str]) -> bool:
    """Map a label to the positive class: ``True``, a non-zero int, or one of ``positive``
    (lower-case; compared case-insensitively)."""
    if type(label) is bool:
        return label
    if type(label) is int:
        return label != 0
    return str(label).strip().lower() in positive


class LabelLedger:
    """Per labels partition: the next offset to consume and the consumed offsets above it."""

    __slots__ = ("next", "ahead")

    def __init__(self, next_offsets: Mapping[int, int] | None = None,
                 ahead: Mapping[int, Iterable[int]] | None = None) -> None:
        self.next: dict[int, int] = dict(next_offsets or {})
        self.ahead: dict[int, set[int]] = {p: set(o) for p, o in (ahead or {}).items()}

    def consumed(self, partition: int, offset: int) -> bool:
        """Has this model consumed that label record (so learned it, if it was learnable)?"""
        return offset < self.next.get(partition, 0) or offset in self.ahead.get(partition, ())

    def mark(self, partition: int, offset: int) -> None:
        nxt = self.next.setdefault(partition, offset)  # a first record: start there
        if offset < nxt:
            return
        ahead = self.ahead.setdefault(partition, set())
        ahead.add(offset)
        while nxt in ahead:
            ahead.remove(nxt)
            nxt += 1
        self.next[partition] = nxt
        if len(ahead) > _MAX_AHEAD:
            log.error("labels[%d]: %d consumed offsets above %d; giving up on the gap",
                      partition, len(ahead), nxt)
            self.next[partition] = max(ahead) + 1
            ahead.clear()

    def saved(self) -> dict[int, list[int]]:
        """``ahead`` as stored with a checkpoint."""
        return {p: sorted(o) for p, o in self.ahead.items() if o}
