"""The poller with an in-memory Slurm: update_time reuse, all-or-nothing snapshots, error counting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter import ErrorKind, Operation, SnapshotPoller
from slurm_client import (
    AuthError,
    Diag,
    Job,
    JobList,
    JobState,
    MalformedResponse,
    Node,
    NodeState,
    Partition,
    ServerBusy,
    SlurmApiError,
    SlurmTimeout,
    SlurmTransportError,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def jobs(*ids: int) -> tuple[Job, ...]:
    return tuple(Job(job_id=i, name=f"j{i}", state=JobState.PENDING, partition="p") for i in ids)


class FakeSlurm:
    """Answers like slurm_client; `fail[op]` makes the next calls of op raise (or return) something."""

    def __init__(self) -> None:
        self.jobs: tuple[Job, ...] = jobs(1, 2)
        self.changed = True  # whether the next update_time poll sees a change
        self.update_times: list[datetime | int | None] = []
        self.cursor = T0
        self.fail: dict[str, BaseException | object] = {}
        self.hang: set[str] = set()
        self.calls: dict[str, int] = {"jobs": 0, "nodes": 0, "partitions": 0, "diag": 0}

    async def _enter(self, op: str) -> object | None:
        self.calls[op] += 1
        if op in self.hang:
            await asyncio.sleep(3600)
        outcome = self.fail.get(op)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList:
        self.update_times.append(update_time)
        override = await self._enter("jobs")
        if override is not None:
            return override  # type: ignore[return-value]  # garbage on purpose
        self.cursor = self.cursor.replace(second=self.cursor.second + 1)
        if update_time is not None and not self.changed:
            return JobList(not_modified=True, next_update_time=self.cursor)
        return JobList(jobs=self.jobs, next_update_time=self.cursor)

    async def list_nodes(self) -> tuple[Node, ...]:
        override = await self._enter("nodes")
        if override is not None:
            return override  # type: ignore[return-value]
        return (Node(name="n1", state=NodeState.IDLE, cpus_total=4),)

    async def list_partitions(self) -> tuple[Partition, ...]:
        override = await self._enter("partitions")
        if override is not None:
            return override  # type: ignore[return-value]
        return (Partition(name="p", nodes=("n1",), total_nodes=1, total_cpus=4),)

    async def diag(self) -> Diag:
        override = await self._enter("diag")
        if override is not None:
            return override  # type: ignore[return-value]
        return Diag(server_thread_count=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def poller(slurm: FakeSlurm, clock: Clock | None = None, **kwargs: Any) -> SnapshotPoller:
    kwargs.setdefault("interval", 1.0)
    if clock is not None:
        kwargs["monotonic"] = clock
        kwargs["wall"] = lambda: clock.now + 1_800_000_000
    return SnapshotPoller(slurm, **kwargs)


async def test_first_refresh_lists_everything() -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    assert p.status.snapshot is None
    assert p.status.last_ok is None
    assert await p.refresh() is True
    snap = p.status.snapshot
    assert snap is not None
    assert [j.job_id for j in snap.jobs] == [1, 2]
    assert [n.name for n in snap.nodes] == ["n1"]
    assert [x.name for x in snap.partitions] == ["p"]
    assert snap.diag.server_thread_count == 1
    assert slurm.update_times == [None]
    assert p.status.last_ok is True
    assert p.status.refreshes == {"success": 1}
    assert p.status.job_polls == {"full": 1}


async def test_not_modified_reuses_the_previous_jobs() -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    await p.refresh()
    first = p.status.snapshot
    assert first is not None
    slurm.changed = False
    assert await p.refresh() is True
    second = p.status.snapshot
    assert second is not None and second is not first
    assert second.jobs is first.jobs
    assert slurm.update_times[1] == T0.replace(second=1)  # the cursor the first answer gave
    assert p.status.job_polls == {"full": 1, "not_modified": 1}


async def test_changed_jobs_replace_the_list() -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    await p.refresh()
    slurm.jobs = jobs(1, 2, 3)
    await p.refresh()
    snap = p.status.snapshot
    assert snap is not None
    assert [j.job_id for j in snap.jobs] == [1, 2, 3]
    assert slurm.update_times[1] is not None
    assert p.status.job_polls == {"full": 1, "changed": 1}


async def test_full_relist_after_the_relist_interval() -> None:
    slurm = FakeSlurm()
    slurm.changed = False
    clock = Clock()
    p = poller(slurm, clock, full_relist_interval=60.0)
    await p.refresh()
    clock.now += 59.0
    await p.refresh()
    clock.now += 1.0
    await p.refresh()
    assert slurm.update_times[0] is None
    assert slurm.update_times[1] is not None
    assert slurm.update_times[2] is None
    assert p.status.job_polls == {"full": 2, "not_modified": 1}


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (SlurmTransportError("connection refused", sent=False), ErrorKind.TRANSPORT),
        (SlurmTimeout("read timeout", sent=True), ErrorKind.TIMEOUT),
        (AuthError("expired token", status=401), ErrorKind.AUTH),
        (ServerBusy("slurmctld down", status=503), ErrorKind.BUSY),
        (MalformedResponse("not JSON", status=200), ErrorKind.MALFORMED),
        (SlurmApiError("other", status=500), ErrorKind.API),
        (KeyError("job_id"), ErrorKind.UNEXPECTED),
        ("garbage", ErrorKind.UNEXPECTED),  # a wrong type where a model was expected
    ],
    ids=["transport", "timeout", "auth", "busy", "malformed", "api", "exception", "wrong-type"],
)
@pytest.mark.parametrize("operation", list(Operation), ids=[op.value for op in Operation])
async def test_a_failed_read_keeps_the_previous_snapshot(
    operation: Operation, failure: BaseException | str, kind: ErrorKind
) -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    await p.refresh()
    before = p.status.snapshot
    slurm.fail[operation.value] = failure
    slurm.jobs = jobs(7)
    assert await p.refresh() is False
    status = p.status
    assert status.snapshot is before
    assert status.last_ok is False
    assert status.error_count(operation, kind) == 1
    assert sum(status.errors.values()) == 1
    assert status.refreshes == {"success": 1, "failure": 1}
    assert status.last_error is not None and operation.value in status.last_error


async def test_the_job_cursor_does_not_advance_on_a_failed_refresh() -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    await p.refresh()
    slurm.fail["nodes"] = SlurmTransportError("refused", sent=False)
    await p.refresh()  # jobs answered, but the refresh failed: its job list and cursor are dropped
    del slurm.fail["nodes"]
    slurm.changed = False
    await p.refresh()
    assert slurm.update_times[1] == slurm.update_times[2] == T0.replace(second=1)


async def test_every_failed_read_of_a_refresh_is_counted() -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    for op in ("jobs", "nodes", "partitions", "diag"):
        slurm.fail[op] = SlurmTransportError("refused", sent=False)
    assert await p.refresh() is False
    assert p.status.snapshot is None
    assert p.status.errors == {f"{op.value}/transport": 1 for op in Operation}
    await p.refresh()
    assert p.status.error_count(Operation.DIAG, ErrorKind.TRANSPORT) == 2


async def test_recovery_publishes_a_new_snapshot() -> None:
    slurm = FakeSlurm()
    p = poller(slurm)
    slurm.fail["diag"] = ServerBusy("busy", status=503)
    assert await p.refresh() is False
    del slurm.fail["diag"]
    assert await p.refresh() is True
    assert p.status.last_ok is True
    assert p.status.last_error is None
    assert p.status.snapshot is not None
    assert p.status.error_count(Operation.DIAG, ErrorKind.BUSY) == 1  # counters never go back


async def test_a_hanging_read_times_out() -> None:
    slurm = FakeSlurm()
    slurm.hang.add("partitions")
    p = poller(slurm, read_timeout=0.05)
    assert await p.refresh() is False
    assert p.status.error_count(Operation.PARTITIONS, ErrorKind.TIMEOUT) == 1
    assert p.status.last_duration is not None and p.status.last_duration < 1.0


async def test_not_modified_without_a_previous_list_is_an_error() -> None:
    slurm = FakeSlurm()
    slurm.fail["jobs"] = JobList(not_modified=True, next_update_time=T0)
    p = poller(slurm)
    assert await p.refresh() is False
    assert p.status.error_count(Operation.JOBS, ErrorKind.UNEXPECTED) == 1


async def test_snapshot_times() -> None:
    slurm = FakeSlurm()
    clock = Clock()
    p = poller(slurm, clock)
    await p.refresh()
    snap = p.status.snapshot
    assert snap is not None
    assert snap.taken_monotonic == 1000.0
    assert snap.taken_at == 1_800_001_000.0


async def test_cancellation_propagates() -> None:
    slurm = FakeSlurm()
    slurm.hang.add("jobs")
    p = poller(slurm)
    task = asyncio.create_task(p.refresh())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.status.refreshes == {}


async def test_run_refreshes_every_interval_until_stopped() -> None:
    slurm = FakeSlurm()
    slurm.changed = False
    p = poller(slurm, interval=0.02)
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await wait_for(lambda: p.status.refreshes.get("success", 0) >= 3)
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)
    assert p.status.job_polls["full"] == 1
    assert p.status.job_polls["not_modified"] >= 2


async def test_run_keeps_going_through_failures() -> None:
    slurm = FakeSlurm()
    slurm.fail["nodes"] = SlurmTransportError("refused", sent=False)
    p = poller(slurm, interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await wait_for(lambda: p.status.refreshes.get("failure", 0) >= 3)
    del slurm.fail["nodes"]
    await wait_for(lambda: p.status.last_ok is True)
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)


async def test_stop_interrupts_the_wait() -> None:
    p = poller(FakeSlurm(), interval=3600.0)
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await wait_for(lambda: p.status.last_ok is True)
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0}, {"interval": 1, "read_timeout": 0}], ids=["interval", "timeout"]
)
def test_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SnapshotPoller(FakeSlurm(), interval=kwargs["interval"], read_timeout=kwargs.get("read_timeout", 1.0))


async def wait_for(condition: Callable[[], bool], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (polling state another task changes)
            await asyncio.sleep(0.005)


async def test_after_refresh_runs_after_new_snapshots_only() -> None:
    slurm = FakeSlurm()
    p = poller(slurm, interval=0.01)
    stop = asyncio.Event()
    seen: list[int] = []

    async def after() -> None:
        seen.append(p.status.refreshes.get("success", 0))
        if len(seen) == 2:
            slurm.fail["diag"] = ServerBusy("busy", status=503)
        if len(seen) == 1:
            raise RuntimeError("a broken hook does not stop polling")

    task = asyncio.create_task(p.run(stop, after_refresh=after))
    await wait_for(lambda: p.status.refreshes.get("failure", 0) >= 2)
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)
    assert seen == [1, 2]


async def test_stop_interrupts_a_refresh_in_flight() -> None:
    slurm = FakeSlurm()
    slurm.hang.add("nodes")
    p = poller(slurm, interval=1.0, read_timeout=3600.0)
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await wait_for(lambda: slurm.calls["nodes"] == 1)
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)
    assert p.status.refreshes == {}


class Feed:
    """The workload controller's job index as the exporter sees it (exporter.JobFeed)."""

    def __init__(self, jobs: tuple[Job, ...] | None) -> None:
        self.jobs = jobs

    def shared_jobs(self) -> tuple[Job, ...] | None:
        return self.jobs


@pytest.mark.parametrize(
    ("feed_jobs", "published", "job_ids"),
    [(jobs(7, 8), True, [7, 8]), ((), True, []), (None, False, None)],
    ids=["shared-list", "shared-empty-list", "index-not-polled-yet"],
)
async def test_a_job_feed_replaces_the_pollers_own_job_reads(
    feed_jobs: tuple[Job, ...] | None, published: bool, job_ids: list[int] | None
) -> None:
    slurm = FakeSlurm()
    p = poller(slurm, job_feed=Feed(feed_jobs))
    assert await p.refresh() is published
    assert await p.refresh() is published
    assert slurm.calls["jobs"] == 0  # one reader of Slurm's jobs per process
    snap = p.status.snapshot
    assert (None if snap is None else [j.job_id for j in snap.jobs]) == job_ids
    assert p.status.errors == {}
    assert p.status.job_polls == ({"shared": 2} if published else {})
    if not published:
        assert p.status.last_error == "waiting for the shared job list"
        assert slurm.calls["nodes"] == 0
