"""Liveness and readiness of the process, served as /healthz and /readyz next to /metrics.

- alive: the event loop still runs (a heartbeat task; the HTTP server answers from its own thread, so a
  loop stuck in a long computation shows up here as not alive);
- ready: every check registered by the components passes (caches synced, Slurm answering).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from exporter import Probe

# A check: () -> (passes, one line saying what it saw).
Check = Callable[[], tuple[bool, str]]
HEARTBEAT_SECONDS = 1.0
STUCK_AFTER_SECONDS = 30.0


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._beat = clock()
        self._checks: dict[str, Check] = {}

    def add_readiness_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def heartbeat(self) -> None:
        while True:
            self._beat = self._clock()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def alive(self) -> tuple[bool, str]:
        quiet = self._clock() - self._beat
        if quiet > STUCK_AFTER_SECONDS:
            return False, f"event loop silent for {quiet:.0f} s"
        return True, "event loop running"

    def ready(self) -> tuple[bool, str]:
        failing = []
        for name, check in self._checks.items():
            passes, what = check()
            if not passes:
                failing.append(f"{name}: {what}")
        alive, why = self.alive()
        if not alive:
            failing.append(why)
        return (False, "; ".join(failing)) if failing else (True, ", ".join(self._checks) or "no checks")

    @property
    def probes(self) -> Mapping[str, Probe]:
        return {"/healthz": self.alive, "/livez": self.alive, "/readyz": self.ready}
