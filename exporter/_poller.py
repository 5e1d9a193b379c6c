"""The background refresh: read Slurm through slurm_client, publish an immutable snapshot.

Scrapes never wait on slurmrestd: they read `SnapshotPoller.status`, which one refresh replaces
as a whole. A refresh reads jobs, nodes, partitions and diag concurrently; it publishes a new
snapshot only when all four succeed (a half-new snapshot would mix two moments), and otherwise
keeps the previous one, counts each failed read by operation and kind, and says so in the status.

Jobs are polled with `update_time`: when Slurm answers "not modified" (HTTP 304, a few ms at any
queue size) the previous job list is reused. A full relist still happens every
`full_relist_interval` seconds, so a change that Slurm does not stamp cannot linger.

Given a `JobFeed` (in `slurm-bridge run`: the workload controller's job index), the poller reads no
jobs itself and takes the feed's list: one reader of Slurm's jobs per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from slurm_client import (
    AuthError,
    Diag,
    Job,
    JobList,
    MalformedResponse,
    Node,
    Partition,
    ServerBusy,
    SlurmApiError,
    SlurmTimeout,
    SlurmTransportError,
)

from ._snapshot import (
    ErrorKind,
    JobPoll,
    Operation,
    PollerStatus,
    Snapshot,
    error_key,
    frozen_counts,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class SlurmReader(Protocol):
    """The four reads the exporter makes; `slurm_client.SlurmClient` is one."""

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList: ...

    async def list_nodes(self) -> tuple[Node, ...]: ...

    async def list_partitions(self) -> tuple[Partition, ...]: ...

    async def diag(self) -> Diag: ...


class JobFeed(Protocol):
    """Slurm's jobs as another reader in the same process keeps them (all users' jobs, as listed)."""

    def shared_jobs(self) -> tuple[Job, ...] | None:
        """The jobs of the reader's last applied poll; None until it has one."""
        ...


def classify(exc: BaseException) -> ErrorKind:
    """The error-counter kind of a failed read."""
    if isinstance(exc, SlurmTimeout | TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, SlurmTransportError):
        return ErrorKind.TRANSPORT
    if isinstance(exc, AuthError):
        return ErrorKind.AUTH
    if isinstance(exc, ServerBusy):
        return ErrorKind.BUSY
    if isinstance(exc, MalformedResponse):
        return ErrorKind.MALFORMED
    if isinstance(exc, SlurmApiError):
        return ErrorKind.API
    return ErrorKind.UNEXPECTED


class _ReadFailed(Exception):
    def __init__(self, operation: Operation, cause: Exception) -> None:
        super().__init__(f"{operation.value}: {type(cause).__name__}: {cause}")
        self.operation = operation
        self.cause = cause


class SnapshotPoller:
    """Keeps `status` fresh: `await run(stop)` refreshes every `interval` seconds until stopped."""

    def __init__(
        self,
        slurm: SlurmReader,
        *,
        interval: float,
        read_timeout: float = 20.0,
        full_relist_interval: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        job_feed: JobFeed | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        self._slurm = slurm
        self._job_feed = job_feed
        self._interval = interval
        self._read_timeout = read_timeout
        self._full_relist_interval = full_relist_interval
        self._monotonic = monotonic
        self._wall = wall
        # The job list and the cursor that goes with it; both change together or not at all.
        self._jobs: tuple[Job, ...] | None = None
        self._jobs_cursor: datetime | None = None
        self._last_full_list: float | None = None
        self._refreshes: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._job_polls: Counter[str] = Counter()
        self._failing = False
        self._status = PollerStatus()

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def status(self) -> PollerStatus:
        """The latest published status; safe to read from any thread."""
        return self._status

    async def run(
        self, stop: asyncio.Event, *, after_refresh: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Refresh now, then every `interval` seconds (start to start) until `stop` is set.

        `after_refresh` runs after each refresh that published a new snapshot (e.g. to build what
        scrapes will read); what it raises is logged, and polling goes on.
        """
        while not stop.is_set():
            began = self._monotonic()
            refreshed = await _unless_stopped(self.refresh(), stop)
            if refreshed is None:  # stopped in the middle of a refresh
                return
            if refreshed and after_refresh is not None:
                try:
                    await after_refresh()
                except Exception:
                    log.exception("after-refresh hook failed")
            delay = max(0.0, self._interval - (self._monotonic() - began))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    async def refresh(self) -> bool:
        """One refresh; True when a new snapshot was published."""
        began = self._monotonic()
        began_wall = self._wall()
        relist = (
            self._jobs is None
            or self._jobs_cursor is None
            or self._last_full_list is None
            or began - self._last_full_list >= self._full_relist_interval
        )
        cursor = None if relist else self._jobs_cursor
        if self._job_feed is not None:
            shared = self._job_feed.shared_jobs()
            if shared is None:  # the job index has not polled yet: nothing to publish, nothing failed
                self._status = replace(self._status, last_error="waiting for the shared job list")
                return False
            read_jobs: Callable[[], Awaitable[object]] = _returning(shared)
        else:
            read_jobs = lambda: self._slurm.list_jobs(update_time=cursor)  # noqa: E731
        outcomes = await asyncio.gather(
            self._read(Operation.JOBS, read_jobs),
            self._read(Operation.NODES, self._slurm.list_nodes),
            self._read(Operation.PARTITIONS, self._slurm.list_partitions),
            self._read(Operation.DIAG, self._slurm.diag),
            return_exceptions=True,
        )
        failures: list[_ReadFailed] = []
        for outcome in outcomes:
            if isinstance(outcome, _ReadFailed):
                failures.append(outcome)
            elif isinstance(outcome, BaseException):  # cancellation and the like: not ours to keep
                raise outcome
        job_list, nodes, partitions, diag = outcomes
        snapshot: Snapshot | None = None
        if not failures:
            try:
                snapshot = self._snapshot(job_list, nodes, partitions, diag, began_wall, began, relist)
            except _ReadFailed as failure:
                failures.append(failure)
        duration = self._monotonic() - began
        if snapshot is None:
            self._publish_failure(failures, duration)
            return False
        self._publish_success(snapshot, duration)
        return True

    async def _read(self, operation: Operation, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            async with asyncio.timeout(self._read_timeout):
                return await call()
        except Exception as exc:  # every failure is counted and logged by refresh()
            raise _ReadFailed(operation, exc) from exc

    def _snapshot(
        self,
        job_list: object,
        nodes: object,
        partitions: object,
        diag: object,
        began_wall: float,
        began: float,
        relist: bool,
    ) -> Snapshot:
        checked_nodes = _tuple_of(Operation.NODES, nodes, Node)
        checked_partitions = _tuple_of(Operation.PARTITIONS, partitions, Partition)
        if not isinstance(diag, Diag):
            raise _ReadFailed(Operation.DIAG, TypeError(f"expected Diag, got {type(diag).__name__}"))
        if self._job_feed is not None:
            jobs = _tuple_of(Operation.JOBS, job_list, Job)
            self._job_polls[JobPoll.SHARED.value] += 1
        else:
            jobs = self._own_jobs(job_list, relist, began)
        return Snapshot(
            jobs=jobs,
            nodes=checked_nodes,
            partitions=checked_partitions,
            diag=diag,
            taken_at=began_wall,
            taken_monotonic=began,
        )

    def _own_jobs(self, job_list: object, relist: bool, began: float) -> tuple[Job, ...]:
        """The jobs of this poller's own `jobs?update_time=` read: a 'not modified' keeps the last list."""
        if not isinstance(job_list, JobList):
            raise _ReadFailed(Operation.JOBS, TypeError(f"expected JobList, got {type(job_list).__name__}"))
        if job_list.not_modified:
            if self._jobs is None:
                raise _ReadFailed(Operation.JOBS, ValueError("'not modified' without a previous job list"))
            jobs = self._jobs
            poll = JobPoll.NOT_MODIFIED
        else:
            jobs = _tuple_of(Operation.JOBS, job_list.jobs, Job)
            poll = JobPoll.FULL if relist else JobPoll.CHANGED
        self._jobs = jobs
        self._jobs_cursor = job_list.next_update_time
        if relist:
            self._last_full_list = began
        self._job_polls[poll.value] += 1
        return jobs

    def _publish_success(self, snapshot: Snapshot, duration: float) -> None:
        self._refreshes["success"] += 1
        if self._failing:
            log.info("slurmrestd reads work again; the exporter is up")
        self._failing = False
        self._status = PollerStatus(
            snapshot=snapshot,
            last_ok=True,
            last_duration=duration,
            refreshes=frozen_counts(self._refreshes),
            errors=frozen_counts(self._errors),
            job_polls=frozen_counts(self._job_polls),
        )

    def _publish_failure(self, failures: list[_ReadFailed], duration: float) -> None:
        self._refreshes["failure"] += 1
        for failure in failures:
            self._errors[error_key(failure.operation, classify(failure.cause))] += 1
        summary = "; ".join(str(failure) for failure in failures)
        if not self._failing:
            log.warning("refresh failed, keeping the previous snapshot: %s", summary)
            for failure in failures:
                if classify(failure.cause) is ErrorKind.UNEXPECTED:
                    log.error("unexpected error reading %s", failure.operation.value, exc_info=failure.cause)
        else:
            log.debug("refresh failed again: %s", summary)
        self._failing = True
        previous = self._status
        self._status = PollerStatus(
            snapshot=previous.snapshot,
            last_ok=False,
            last_duration=duration,
            last_error=summary,
            refreshes=frozen_counts(self._refreshes),
            errors=frozen_counts(self._errors),
            job_polls=frozen_counts(self._job_polls),
        )


async def _unless_stopped(work: Coroutine[Any, Any, _T], stop: asyncio.Event) -> _T | None:
    """`await work`, or cancel it and return None as soon as `stop` is set."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()


def _returning(value: _T) -> Callable[[], Awaitable[_T]]:
    async def read() -> _T:
        return value

    return read


def _tuple_of(operation: Operation, value: object, kind: type[_T]) -> tuple[_T, ...]:
    if isinstance(value, tuple | list) and all(isinstance(item, kind) for item in value):
        return tuple(value)
    raise _ReadFailed(operation, TypeError(f"expected a sequence of {kind.__name__}"))
