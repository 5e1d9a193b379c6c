"""Reconcile runtime, controller-runtime style: a keyed work queue and N workers around one Reconciler.

The contract is tiny: `reconcile(key) -> Result`. The reconciler re-reads state for the key and
ignores what woke it. This loop, not the reconciler, acts on the outcome:

    returned Result()                       forget the key's failures; done
    returned Result(requeue_after=s)        forget failures; run again in s seconds
    raised TerminalError                    log, forget, drop (no retry)
    raised RetryLater(why, after=s)         an expected wait (Slurm down, a submit to confirm): one INFO
                                            line, no traceback; retry after s seconds, or with backoff
    raised anything else / timed out        retry with per-key exponential backoff (+ jitter)

Queue guarantees (as client-go's workqueue): a key is queued at most once however often it is added;
a key is never processed by two workers at once (adds while it runs make it run once more afterwards);
delayed adds of one key keep only the earliest time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)


# ---- contract ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """What a reconcile asks for: nothing more (None), or another look after `requeue_after` seconds."""

    requeue_after: float | None = None


class TerminalError(Exception):
    """Retrying cannot help (bad spec, permanent refusal): the runtime logs and drops the key."""


class RetryLater(Exception):
    """Not now, and nothing is wrong with the code: retry after `after` seconds (None: with backoff)."""

    def __init__(self, why: str, *, after: float | None = None) -> None:
        super().__init__(why)
        self.after = after


class Reconciler(Protocol):
    async def reconcile(self, key: str) -> Result: ...


# ---- time --------------------------------------------------------------------------------------------


class Clock(Protocol):
    """Monotonic time and sleeping; injected so tests control backoff and requeue delays."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# ---- backoff -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Per-key exponential backoff: base * 2**(failures-1), capped, stretched by up to `jitter`."""

    base: float = 0.05
    cap: float = 300.0
    jitter: float = 0.1

    def delay(self, failures: int, rng: random.Random) -> float:
        exponent = min(max(failures - 1, 0), 64)
        raw = min(self.cap, self.base * 2.0**exponent)
        return raw * (1.0 + self.jitter * rng.random())


# ---- work queue --------------------------------------------------------------------------------------


class WorkQueue:
    """Deduplicating, per-key-serializing queue of string keys with delayed and rate-limited adds."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # needs (another) run: queued, or re-added while processing
        self._processing: set[str] = set()
        self._waiting: dict[str, tuple[float, asyncio.Task[None]]] = {}  # delayed adds: ready time, timer
        self._failures: dict[str, int] = {}
        self._queued_at: dict[str, float] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutting_down = False
        self._draining = True

    # -- adding

    def add(self, key: str) -> None:
        """Queue `key` unless it is already queued; if it is being processed, run it again afterwards."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._queued_at.setdefault(key, self._clock.monotonic())
        if key in self._processing:
            return
        self._queue.append(key)
        self._idle.clear()
        self._wake_one_getter()

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending time for the same key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self._clock.monotonic() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        timer = asyncio.create_task(self._add_when_due(key, ready_at), name=f"workqueue-delay:{key}")
        self._waiting[key] = (ready_at, timer)

    async def _add_when_due(self, key: str, ready_at: float) -> None:
        # Measured from the add, not from when this task first runs.
        await self._clock.sleep(max(ready_at - self._clock.monotonic(), 0.0))
        pending = self._waiting.get(key)
        if pending is not None and pending[1] is asyncio.current_task():
            del self._waiting[key]
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        """Queue `key` after its backoff (which grows with each call until `forget`); returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self._backoff.delay(failures, self._rng)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Reset the key's backoff (after a success)."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    # -- taking

    async def get(self) -> str | None:
        """Next key to process (marks it processing); None once shut down (and drained, if draining)."""
        while not self._queue or (self._shutting_down and not self._draining):
            if self._shutting_down:
                return None
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                if getter.done() and not getter.cancelled():
                    self._wake_one_getter()  # pass the wake-up on: we won't take the item
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        """Finish processing `key`; if it was re-added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._wake_one_getter()
        else:
            self._queued_at.pop(key, None)
        if not self._queue and not self._processing:
            self._idle.set()

    def take_wait_time(self, key: str) -> float | None:
        """Seconds `key` waited between its (first) add and now; call once when processing starts."""
        queued_at = self._queued_at.pop(key, None)
        return None if queued_at is None else self._clock.monotonic() - queued_at

    # -- state

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def processing(self) -> int:
        return len(self._processing)

    @property
    def waiting(self) -> int:
        """Keys with a pending delayed add (backoff or requeue_after)."""
        return len(self._waiting)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or processing (delayed adds don't count)."""
        await self._idle.wait()

    def shut_down(self, *, drain: bool = True) -> None:
        """Refuse new adds and drop delayed ones; `get` returns None once empty (at once if not draining)."""
        self._shutting_down = True
        self._draining = drain
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        if not drain:
            self._queue.clear()
            self._dirty.clear()
            if not self._processing:
                self._idle.set()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    def _wake_one_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return


# ---- metrics -----------------------------------------------------------------------------------------


class ControllerMetrics:
    """Runtime metrics on an injected registry; create once per registry, share between controllers."""

    def __init__(self, registry: CollectorRegistry, *, namespace: str = "slurm_bridge") -> None:
        self.reconcile_total = Counter(
            f"{namespace}_reconcile_total",
            "Reconciles by outcome: success, requeue_after, error, timeout, terminal_error.",
            ["controller", "outcome"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            f"{namespace}_reconcile_duration_seconds",
            "Time spent in one reconcile call.",
            ["controller"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.queue_depth = Gauge(
            f"{namespace}_workqueue_depth",
            "Keys ready and waiting for a worker.",
            ["controller"],
            registry=registry,
        )
        self.queue_delayed = Gauge(
            f"{namespace}_workqueue_delayed_keys",
            "Keys waiting out a backoff or requeue_after delay.",
            ["controller"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            f"{namespace}_workqueue_queue_duration_seconds",
            "Time from a key's add until a worker took it.",
            ["controller"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.retries_total = Counter(
            f"{namespace}_workqueue_retries_total",
            "Keys requeued with backoff after an error or timeout.",
            ["controller"],
            registry=registry,
        )
        self.active_workers = Gauge(
            f"{namespace}_reconcile_active_workers",
            "Workers currently inside reconcile.",
            ["controller"],
            registry=registry,
        )


# ---- controller --------------------------------------------------------------------------------------


@dataclass
class ControllerStats:
    """Outcome counts kept whether or not metrics are wired (handy in tests and logs)."""

    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class Controller:
    """Feed keys with `enqueue` (e.g. `informer.add_handler(controller.enqueue)`); N workers reconcile.

    Run it with `async with controller:` (stops draining), or `await controller.run()` (until cancelled),
    or `start()` / `await stop(drain=...)`.
    """

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        reconcile_timeout: float | None = 60.0,
        backoff: Backoff | None = None,
        metrics: ControllerMetrics | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        queue: WorkQueue | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("need at least one worker")
        self.name = name
        self._reconciler = reconciler
        self._workers_wanted = workers
        self._timeout = reconcile_timeout
        self._clock = clock or SystemClock()
        # A queue made beforehand lets event routing be wired before the reconciler exists.
        self.queue = queue if queue is not None else WorkQueue(clock=self._clock, backoff=backoff, rng=rng)
        self._metrics = metrics
        self._workers: list[asyncio.Task[None]] = []
        self.stats = ControllerStats()
        if metrics is not None:
            metrics.queue_depth.labels(controller=name).set_function(lambda: len(self.queue))
            metrics.queue_delayed.labels(controller=name).set_function(lambda: self.queue.waiting)
            metrics.active_workers.labels(controller=name).set_function(lambda: self.queue.processing)

    # -- feeding

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    # -- running

    def start(self) -> None:
        if self._workers:
            return
        self._workers = [
            asyncio.create_task(self._work(), name=f"controller:{self.name}:worker-{i}")
            for i in range(self._workers_wanted)
        ]

    async def stop(self, *, drain: bool = True, drain_seconds: float | None = None) -> None:
        """Stop taking keys; with `drain`, finish queued keys (for up to `drain_seconds`), then cancel."""
        self.queue.shut_down(drain=drain)
        workers, self._workers = self._workers, []
        if not workers:
            return
        if drain:
            _, still_running = await asyncio.wait(workers, timeout=drain_seconds)
        else:
            still_running = set(workers)
        for worker in still_running:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def run(self) -> None:
        """Work until cancelled; in-flight reconciles are cancelled with it."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop(drain=False))

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop(drain=exc_type is None)

    async def wait_idle(self) -> None:
        """Wait until no key is queued or being reconciled (pending delays don't count)."""
        await self.queue.wait_idle()

    # -- the loop

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self._reconcile_once(key)
            finally:
                self.queue.done(key)

    async def _reconcile_once(self, key: str) -> None:
        waited = self.queue.take_wait_time(key)
        if self._metrics is not None and waited is not None:
            self._metrics.queue_wait.labels(controller=self.name).observe(waited)
        started = self._clock.monotonic()
        deadline = asyncio.timeout(self._timeout)
        outcome: str
        try:
            async with deadline:
                result = await self._reconciler.reconcile(key)
        except TerminalError as exc:
            outcome = "terminal_error"
            self.queue.forget(key)
            log.error("%s: %s: terminal error, dropping the key: %s", self.name, key, exc)
        except RetryLater as exc:
            outcome = "retry_later"
            if exc.after is None:
                delay = self.queue.add_rate_limited(key)
            else:
                delay = exc.after
                self.queue.add_after(key, delay)
            self._count_retry()
            log.info("%s: %s: %s; retry in %.2fs", self.name, key, exc, delay)
        except TimeoutError:
            if deadline.expired():
                outcome = "timeout"
                delay = self.queue.add_rate_limited(key)
                log.warning(
                    "%s: %s: reconcile exceeded %ss; retry in %.2fs", self.name, key, self._timeout, delay
                )
            else:
                outcome = "error"
                delay = self.queue.add_rate_limited(key)
                log.warning("%s: %s: reconcile failed; retry in %.2fs", self.name, key, delay, exc_info=True)
            self._count_retry()
        except Exception:
            # Whatever a reconciler raises (bugs included) becomes a retry, never a dead worker.
            outcome = "error"
            delay = self.queue.add_rate_limited(key)
            self._count_retry()
            log.warning("%s: %s: reconcile failed; retry in %.2fs", self.name, key, delay, exc_info=True)
        else:
            self.queue.forget(key)
            requeue_after = result.requeue_after if result is not None else None
            if requeue_after is None:
                outcome = "success"
            else:
                outcome = "requeue_after"
                self.queue.add_after(key, requeue_after)
        self.stats.count(outcome)
        if self._metrics is not None:
            self._metrics.reconcile_total.labels(controller=self.name, outcome=outcome).inc()
            self._metrics.reconcile_duration.labels(controller=self.name).observe(
                self._clock.monotonic() - started
            )

    def _count_retry(self) -> None:
        if self._metrics is not None:
            self._metrics.retries_total.labels(controller=self.name).inc()
