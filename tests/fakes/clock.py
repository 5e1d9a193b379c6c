"""A clock for tests of controller/runtime.py: time moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class ManualClock:
    """A clock that moves only when told: `await clock.advance(s)` wakes the sleepers due by then."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(seconds, 0.0), next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order and letting woken tasks run."""
        target = self._now + seconds
        await _let_tasks_run()  # tasks created just before must get to register their sleeps
        while self._sleepers and self._sleepers[0][0] <= target:
            wake_at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake_at)
            if not future.done():
                future.set_result(None)
                await _let_tasks_run()
        self._now = target
        await _let_tasks_run()


async def _let_tasks_run(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
