"""The central store for asyncio code (the sink, the dashboard, the park API)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from edgegate.central.store.base import CentralStore
from edgegate.central.store.model import Batch, RowLike, StoreResult

T = TypeVar("T")


class AsyncStore:
    """A ``CentralStore`` for asyncio code: every call runs on one dedicated thread.

    One thread keeps calls in submission order (a batch is committed before the next one
    starts) and keeps blocking I/O and fsync off the event loop. If the awaiting task is
    cancelled, a call already started still completes and commits; its result is lost, so the
    caller does not ack, and the gate's resend is stored idempotently.
    """

    def __init__(self, store: CentralStore) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-store")

    async def run(self, fn: Callable[[CentralStore], T]) -> T:
        """Run ``fn(store)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.store)

    async def store_batches(
        self, items: Sequence[Batch | tuple[str, Sequence[RowLike]]], *, source: str = ""
    ) -> list[StoreResult]:
        return await self.run(lambda s: s.store_batches(items, source=source))

    async def store_batch(
        self, gate: str, rows: Sequence[RowLike], *, source: str = ""
    ) -> StoreResult:
        return await self.run(lambda s: s.store_batch(gate, rows, source=source))

    async def dead_letter(self, source: str, gate: str | None, payload: bytes, reason: str) -> int:
        return await self.run(lambda s: s.dead_letter(source, gate, payload, reason))

    async def heads(self) -> dict[str, tuple[int, bytes]]:
        return await self.run(lambda s: s.heads())

    async def head(self, gate: str) -> tuple[int, bytes]:
        return await self.run(lambda s: s.head(gate))

    async def aclose(self) -> None:
        """Finish queued calls, close the store, stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
