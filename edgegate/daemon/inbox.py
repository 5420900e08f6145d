"""A lane's inbox: two bounded queues, safety inputs always taken first.

The PLC's loop, limit-switch and fault inputs, device faults and operators' commands go to the
*urgent* queue; plate reads and rejected frames go to the *reader* queue. :meth:`LaneInbox.get`
returns an urgent item whenever there is one, so a reader, however noisy, never delays a loop
change. Neither queue grows without bound:

- urgent items are never dropped while there is room (:data:`URGENT_CAPACITY`, far more than a
  lane ever has pending: the PLC reports only changes, at its poll rate). Full, an item takes
  the place of the newest queued item of the same kind from the same device (the PLC's inputs
  as they are now replace those of a poll ago: the lane acts on the current state), else of
  the oldest item a later one of its kind supersedes; only a queue full of one-off items
  (never seen: operators and faults are few) loses the new one;
- the reader queue keeps the newest :data:`READER_CAPACITY` items and drops the oldest (the
  vehicle at the barrier now matters, not the reads the lane could not keep up with).

Drops and replacements are counted (``dropped``, ``replaced``) for the daemon's log and
metrics.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from edgegate.core.events import FrameRejected, PlateRead

__all__ = ["READER_CAPACITY", "URGENT_CAPACITY", "LaneInbox"]

URGENT_CAPACITY = 256
READER_CAPACITY = 16

T = TypeVar("T")


def _is_reader_traffic(item: object) -> bool:
    return isinstance(item, PlateRead | FrameRejected)


def _same_source(a: object, b: object) -> bool:
    return type(a) is type(b) and getattr(a, "device", None) == getattr(b, "device", None)


class LaneInbox(Generic[T]):
    """Inputs for one lane; :meth:`put` never blocks, :meth:`get` takes urgent items first."""

    def __init__(
        self, *, urgent_capacity: int = URGENT_CAPACITY, reader_capacity: int = READER_CAPACITY
    ) -> None:
        if urgent_capacity < 1 or reader_capacity < 1:
            raise ValueError("capacities must be at least 1")
        self._urgent: deque[T] = deque()
        self._urgent_capacity = urgent_capacity
        self._reader: deque[T] = deque(maxlen=reader_capacity)
        self._ready = asyncio.Event()
        #: Reader items dropped because the reader queue was full.
        self.dropped = 0
        #: Urgent items that replaced an older one of the same kind because the queue was full.
        self.replaced = 0
        #: Urgent items lost because the queue was full of other kinds (never seen in practice).
        self.lost = 0

    def __len__(self) -> int:
        return len(self._urgent) + len(self._reader)

    @property
    def urgent_pending(self) -> int:
        return len(self._urgent)

    @property
    def reader_pending(self) -> int:
        return len(self._reader)

    def put(self, item: T) -> None:
        """Queue ``item`` in its queue (see the module's docstring for what happens when full)."""
        if _is_reader_traffic(item):
            if len(self._reader) == self._reader.maxlen:
                self.dropped += 1
            self._reader.append(item)
        elif len(self._urgent) < self._urgent_capacity:
            self._urgent.append(item)
        else:
            stale = self._stale_index(item)
            if stale is None:
                self.lost += 1
            else:
                # Keep the order of changes: the stale one goes, the new one queues last.
                del self._urgent[stale]
                self._urgent.append(item)
                self.replaced += 1
        self._ready.set()

    def _stale_index(self, new: T) -> int | None:
        """The queued urgent item a full queue can spare for ``new``: the newest of the same
        kind and device, else the oldest that a later one of its kind and device supersedes."""
        urgent = self._urgent
        for i in range(len(urgent) - 1, -1, -1):
            if _same_source(urgent[i], new):
                return i
        for i, old in enumerate(urgent):
            if any(_same_source(old, later) for later in list(urgent)[i + 1 :]):
                return i
        return None

    def get_nowait(self) -> T | None:
        """The next item (urgent first), or None when both queues are empty."""
        if self._urgent:
            return self._urgent.popleft()
        if self._reader:
            return self._reader.popleft()
        self._ready.clear()
        return None

    async def get(self) -> T:
        """Wait for the next item (urgent first)."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            await self._ready.wait()
