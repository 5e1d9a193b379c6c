"""The reconcile runtime's queue and loop semantics, driven by a manual clock (no sleeping on backoffs)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry

from controller.runtime import (
    Backoff,
    Controller,
    ControllerMetrics,
    Result,
    TerminalError,
    WorkQueue,
)
from tests.fakes.clock import ManualClock

Behaviour = Callable[[str, int], Awaitable[Result]]


class ScriptedReconciler:
    """Runs `behaviour(key, attempt)`; records calls and the most keys/one key seen in flight at once."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour
        self.calls: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight_per_key = 0
        self.max_in_flight = 0

    async def reconcile(self, key: str) -> Result:
        self.calls.append(key)
        self.in_flight[key] += 1
        self.max_in_flight_per_key = max(self.max_in_flight_per_key, self.in_flight[key])
        self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            if self.behaviour is None:
                return Result()
            return await self.behaviour(key, self.calls.count(key))
        finally:
            self.in_flight[key] -= 1


def make_controller(
    reconciler: ScriptedReconciler,
    *,
    clock: ManualClock | None = None,
    workers: int = 1,
    backoff: Backoff | None = None,
    timeout: float | None = None,
    registry: CollectorRegistry | None = None,
) -> Controller:
    return Controller(
        "test",
        reconciler,
        workers=workers,
        reconcile_timeout=timeout,
        backoff=backoff or Backoff(base=1.0, cap=8.0, jitter=0.0),
        metrics=ControllerMetrics(registry) if registry is not None else None,
        clock=clock or ManualClock(),
        rng=random.Random(0),
    )


async def settle(controller: Controller) -> None:
    async with asyncio.timeout(5):
        await controller.wait_idle()
    for _ in range(3):
        await asyncio.sleep(0)


# ---- queue semantics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adds", "expected_calls"),
    [
        pytest.param(["a"], ["a"], id="single"),
        pytest.param(["a", "a", "a"], ["a"], id="duplicates-collapse"),
        pytest.param(["a", "b", "a", "c", "b"], ["a", "b", "c"], id="first-add-order-kept"),
    ],
)
async def test_queued_keys_are_deduplicated(adds: list[str], expected_calls: list[str]) -> None:
    reconciler = ScriptedReconciler()
    controller = make_controller(reconciler)
    for key in adds:  # all added before any worker runs
        controller.enqueue(key)
    async with controller:
        await settle(controller)
    assert reconciler.calls == expected_calls


async def test_a_key_is_never_reconciled_concurrently_and_readds_run_once_after() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(key: str, attempt: int) -> Result:
        started.set()
        if attempt == 1:
            await release.wait()
        return Result()

    reconciler = ScriptedReconciler(slow)
    controller = make_controller(reconciler, workers=4)
    async with controller:
        controller.enqueue("a")
        await started.wait()
        for _ in range(10):  # re-adds while "a" runs: one more run, after this one
            controller.enqueue("a")
        await asyncio.sleep(0.01)
        assert reconciler.calls == ["a"]
        release.set()
        await settle(controller)
    assert reconciler.calls == ["a", "a"]
    assert reconciler.max_in_flight_per_key == 1


async def test_concurrency_is_bounded_by_workers_and_keys_run_in_parallel() -> None:
    gate = asyncio.Event()

    async def blocked(key: str, attempt: int) -> Result:
        await gate.wait()
        return Result()

    reconciler = ScriptedReconciler(blocked)
    controller = make_controller(reconciler, workers=3)
    async with controller:
        for i in range(10):
            controller.enqueue(f"k{i}")
        await asyncio.sleep(0.01)
        assert sum(reconciler.in_flight.values()) == 3
        gate.set()
        await settle(controller)
    assert sorted(reconciler.calls) == sorted(f"k{i}" for i in range(10))
    assert reconciler.max_in_flight == 3


async def test_many_workers_hammering_few_keys_keep_per_key_serialization() -> None:
    async def jittery(key: str, attempt: int) -> Result:
        await asyncio.sleep(random.random() / 1000)
        return Result()

    reconciler = ScriptedReconciler(jittery)
    controller = make_controller(reconciler, workers=8)
    async with controller:
        for round_ in range(50):
            for key in ("a", "b", "c"):
                controller.enqueue(key)
            if round_ % 5 == 0:
                await asyncio.sleep(0.001)
        await settle(controller)
    assert reconciler.max_in_flight_per_key == 1
    assert set(reconciler.calls) == {"a", "b", "c"}


# ---- outcomes ----------------------------------------------------------------------------------------


async def _ok(key: str, attempt: int) -> Result:
    return Result()


async def _requeue(key: str, attempt: int) -> Result:
    return Result(requeue_after=30.0)


async def _fail(key: str, attempt: int) -> Result:
    raise RuntimeError("boom")


async def _terminal(key: str, attempt: int) -> Result:
    raise TerminalError("spec can never work")


async def _returns_none(key: str, attempt: int) -> Result:
    return None  # type: ignore[return-value]  # a sloppy reconciler must not kill the worker


@pytest.mark.parametrize(
    ("behaviour", "outcome", "delayed", "failures"),
    [
        pytest.param(_ok, "success", 0, 0, id="success-forgets"),
        pytest.param(_requeue, "requeue_after", 1, 0, id="requeue-after-is-not-a-failure"),
        pytest.param(_fail, "error", 1, 1, id="error-backs-off"),
        pytest.param(_terminal, "terminal_error", 0, 0, id="terminal-is-dropped"),
        pytest.param(_returns_none, "success", 0, 0, id="none-counts-as-success"),
    ],
)
async def test_the_loop_acts_on_the_outcome(
    behaviour: Behaviour, outcome: str, delayed: int, failures: int
) -> None:
    reconciler = ScriptedReconciler(behaviour)
    controller = make_controller(reconciler)
    async with controller:
        controller.enqueue("k")
        await settle(controller)
        assert controller.stats.outcomes == {outcome: 1}
        assert controller.queue.waiting == delayed
        assert controller.queue.failures("k") == failures


async def test_backoff_grows_per_failure_caps_and_resets_on_success() -> None:
    clock = ManualClock()
    fail_until = 6

    async def flaky(key: str, attempt: int) -> Result:
        if attempt < fail_until:
            raise RuntimeError(f"attempt {attempt}")
        return Result()

    reconciler = ScriptedReconciler(flaky)
    controller = make_controller(reconciler, clock=clock)  # base 1 s, cap 8 s, no jitter
    async with controller:
        controller.enqueue("k")
        await settle(controller)
        observed_delays = []
        for _ in range(fail_until - 1):
            calls_before = len(reconciler.calls)
            waited = 0.0
            while len(reconciler.calls) == calls_before:
                await clock.advance(0.5)
                waited += 0.5
                await settle(controller)
            observed_delays.append(waited)
        assert observed_delays == [1.0, 2.0, 4.0, 8.0, 8.0]
        assert controller.queue.failures("k") == 0  # the sixth attempt succeeded: forgotten
        assert controller.stats.outcomes == {"error": 5, "success": 1}


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        pytest.param(1, 0.05, id="first"),
        pytest.param(2, 0.1, id="second"),
        pytest.param(5, 0.8, id="fifth"),
        pytest.param(40, 300.0, id="capped"),
        pytest.param(10_000, 300.0, id="huge-count-no-overflow"),
    ],
)
def test_backoff_delay_without_jitter(failures: int, expected: float) -> None:
    assert Backoff(base=0.05, cap=300.0, jitter=0.0).delay(failures, random.Random(0)) == pytest.approx(
        expected
    )


def test_backoff_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(base=1.0, cap=100.0, jitter=0.1)
    rng = random.Random(1)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(4.0 <= d <= 4.4 for d in delays)
    assert len(set(delays)) > 1


async def test_requeue_after_waits_exactly_that_long() -> None:
    clock = ManualClock()

    async def periodic(key: str, attempt: int) -> Result:
        return Result(requeue_after=10.0) if attempt == 1 else Result()

    reconciler = ScriptedReconciler(periodic)
    controller = make_controller(reconciler, clock=clock)
    async with controller:
        controller.enqueue("k")
        await settle(controller)
        await clock.advance(9.9)
        await settle(controller)
        assert reconciler.calls == ["k"]
        await clock.advance(0.1)
        await settle(controller)
        assert reconciler.calls == ["k", "k"]


@pytest.mark.parametrize(
    ("first_delay", "second_delay", "fires_at"),
    [
        pytest.param(10.0, 3.0, 3.0, id="earlier-replaces-later"),
        pytest.param(3.0, 10.0, 3.0, id="later-is-ignored"),
    ],
)
async def test_delayed_adds_keep_the_earliest_time(
    first_delay: float, second_delay: float, fires_at: float
) -> None:
    clock = ManualClock()
    queue = WorkQueue(clock=clock)
    queue.add_after("k", first_delay)
    queue.add_after("k", second_delay)
    assert queue.waiting == 1
    await clock.advance(fires_at - 0.01)
    assert len(queue) == 0
    await clock.advance(0.01)
    assert len(queue) == 1
    await clock.advance(20.0)
    assert len(queue) == 1  # the replaced timer never fires a second add


async def test_reconcile_timeout_counts_as_a_failure_and_retries() -> None:
    async def hangs(key: str, attempt: int) -> Result:
        if attempt == 1:
            await asyncio.Event().wait()
        return Result()

    reconciler = ScriptedReconciler(hangs)
    controller = make_controller(reconciler, timeout=0.05)
    async with controller:
        controller.enqueue("k")
        await settle(controller)
        assert controller.stats.outcomes == {"timeout": 1}
        assert controller.queue.failures("k") == 1
        assert controller.queue.waiting == 1


async def test_timeout_error_raised_by_the_reconciler_itself_is_an_error() -> None:
    async def raises_timeout(key: str, attempt: int) -> Result:
        raise TimeoutError("slurmrestd did not answer")

    controller = make_controller(ScriptedReconciler(raises_timeout), timeout=10.0)
    async with controller:
        controller.enqueue("k")
        await settle(controller)
    assert controller.stats.outcomes == {"error": 1}


async def test_a_crashing_reconcile_does_not_kill_the_worker() -> None:
    async def crash_on_a(key: str, attempt: int) -> Result:
        if key == "a":
            raise ZeroDivisionError("bug")
        return Result()

    reconciler = ScriptedReconciler(crash_on_a)
    controller = make_controller(reconciler, workers=1)
    async with controller:
        controller.enqueue("a")
        controller.enqueue("b")
        controller.enqueue("c")
        await settle(controller)
    assert reconciler.calls == ["a", "b", "c"]
    assert controller.stats.outcomes == {"error": 1, "success": 2}


# ---- shutdown ----------------------------------------------------------------------------------------


async def test_stop_with_drain_finishes_queued_keys_and_refuses_new_ones() -> None:
    reconciler = ScriptedReconciler()
    controller = make_controller(reconciler, workers=2)
    for i in range(20):
        controller.enqueue(f"k{i}")
    controller.enqueue_after("later", 5.0)
    controller.start()
    await controller.stop(drain=True)
    assert len(reconciler.calls) == 20
    assert controller.queue.waiting == 0
    controller.enqueue("after-stop")
    assert len(controller.queue) == 0


async def test_stop_without_drain_cancels_in_flight_reconciles() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def long(key: str, attempt: int) -> Result:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Result()

    reconciler = ScriptedReconciler(long)
    controller = make_controller(reconciler)
    controller.enqueue("a")
    controller.enqueue("b")
    controller.start()
    await started.wait()
    async with asyncio.timeout(5):
        await controller.stop(drain=False)
    assert cancelled.is_set()
    assert reconciler.calls == ["a"]


async def test_drain_deadline_cancels_stragglers() -> None:
    async def never_ends(key: str, attempt: int) -> Result:
        await asyncio.Event().wait()
        return Result()

    controller = make_controller(ScriptedReconciler(never_ends))
    controller.enqueue("a")
    controller.start()
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await controller.stop(drain=True, drain_seconds=0.05)


async def test_run_until_cancelled() -> None:
    reconciler = ScriptedReconciler()
    controller = make_controller(reconciler)
    runner = asyncio.create_task(controller.run())
    controller.enqueue("a")
    await settle(controller)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert reconciler.calls == ["a"]


async def test_blocked_getters_wake_on_shutdown() -> None:
    queue = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    async with asyncio.timeout(1):
        assert await getter is None


# ---- metrics -----------------------------------------------------------------------------------------


async def test_metrics_land_on_the_injected_registry_only() -> None:
    registry = CollectorRegistry()
    controller = make_controller(ScriptedReconciler(_fail), registry=registry)
    async with controller:
        controller.enqueue("k")
        await settle(controller)

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"controller": "test", **labels})

        assert sample("slurm_bridge_reconcile_total", outcome="error") == 1.0
        assert sample("slurm_bridge_workqueue_retries_total") == 1.0
        assert sample("slurm_bridge_reconcile_duration_seconds_count") == 1.0
        assert sample("slurm_bridge_workqueue_queue_duration_seconds_count") == 1.0
        assert sample("slurm_bridge_workqueue_depth") == 0.0
        assert sample("slurm_bridge_workqueue_delayed_keys") == 1.0
        assert sample("slurm_bridge_reconcile_active_workers") == 0.0


def test_two_controllers_share_one_metrics_object() -> None:
    metrics = ControllerMetrics(CollectorRegistry())
    Controller("pods", ScriptedReconciler(), metrics=metrics)
    Controller("nodes", ScriptedReconciler(), metrics=metrics)


@pytest.mark.parametrize(
    ("queued", "expected"),
    [
        ({"pods": 3, "gangs": 0, "nodesets": 1}, {"pods": 3.0, "gangs": 0.0, "nodesets": 1.0}),
        ({"pods": 0, "gangs": 2, "nodesets": 0}, {"pods": 0.0, "gangs": 2.0, "nodesets": 0.0}),
    ],
    ids=["pods-backlog", "gangs-backlog"],
)
def test_workqueue_depth_is_reported_per_controller(
    queued: dict[str, int], expected: dict[str, float]
) -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    controllers = {name: Controller(name, ScriptedReconciler(), metrics=metrics) for name in queued}
    for name, count in queued.items():
        for i in range(count):
            controllers[name].enqueue(f"ns/key-{i}")
    depth = {
        name: registry.get_sample_value("slurm_bridge_workqueue_depth", {"controller": name})
        for name in queued
    }
    assert depth == expected
