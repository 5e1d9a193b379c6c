"""The Slurm job cache: write-through of submits, change notification, 304 handling, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.slurm_jobs import SlurmJobCache
from slurm_client import Job, JobList, JobNotFound, JobSpec, JobState, SlurmTransportError

UID = "0b5b1c7e-1111-2222-3333-444455556666"
MARKER = f"slurm-bridge/v1 cluster=c1 pod=ns/p spec=0123456789ab uid={UID}"
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def job(job_id: int, state: JobState = JobState.PENDING, comment: str | None = MARKER) -> Job:
    return Job(job_id=job_id, name="p", state=state, comment=comment)


class FakeSlurm:
    """Answers list_jobs from a script of answers; an exception in the script is raised."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[datetime | int | None] = []

    async def get_job(self, job_id: int) -> Job:
        raise JobNotFound(f"job {job_id} not found", status=404)

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList:
        self.calls.append(update_time)
        answer = self.answers.pop(0) if self.answers else JobList(not_modified=True, next_update_time=NOW)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, JobList)
        return answer


async def run_polls(cache: SlurmJobCache, slurm: FakeSlurm, polls: int) -> None:
    task = asyncio.create_task(cache.run())
    while len(slurm.calls) < polls:  # noqa: ASYNC110 (polling a fake, briefly)
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_changed_jobs_notify_their_pod_and_foreign_jobs_do_not() -> None:
    seen: list[str] = []
    slurm = FakeSlurm([JobList(jobs=(job(1), job(2, comment='{"pods": ["ns/p"]}')), next_update_time=NOW)])
    cache = SlurmJobCache(slurm, "c1", owner="slurm", poll_interval=0.001, on_change=seen.append)
    await run_polls(cache, slurm, 2)
    assert seen == ["ns/p"]
    assert [j.job_id for j in cache.jobs_for("ns/p")] == [1]
    assert len(cache.all_jobs()) == 2
    assert cache.synced and cache.healthy
    assert slurm.calls[0] is None and slurm.calls[1] == NOW  # then polls with update_time


async def test_submitted_job_is_visible_before_any_poll_lists_it() -> None:
    slurm = FakeSlurm([JobList(jobs=(), next_update_time=NOW)])
    cache = SlurmJobCache(slurm, "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    cache.record_submitted(7, JobSpec(name="p", comment=MARKER))
    # the poll began before... no: recorded before this poll started, and that poll did not list job 7
    assert [j.job_id for j in cache.jobs_for("ns/p")] == [7]


async def test_provisional_job_survives_a_poll_that_started_before_the_submit() -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    cache._replace([], poll_started=-1.0)  # an answer to a poll begun long before the submit
    cache.record_submitted(7, JobSpec(name="p", comment=MARKER))
    cache._replace([], poll_started=-1.0)
    assert [j.job_id for j in cache.jobs_for("ns/p")] == [7]
    cache._replace([job(7, JobState.RUNNING)], poll_started=float("inf"))
    assert [(j.job_id, j.state) for j in cache.jobs_for("ns/p")] == [(7, JobState.RUNNING)]


async def test_poll_errors_keep_the_last_state_and_mark_unhealthy() -> None:
    slurm = FakeSlurm(
        [JobList(jobs=(job(1),), next_update_time=NOW), SlurmTransportError("down", sent=False)]
    )
    cache = SlurmJobCache(
        slurm,
        "c1",
        owner="slurm",
        poll_interval=0.001,
        on_change=lambda _k: None,
        max_backoff=0.001,
    )
    await run_polls(cache, slurm, 2)
    assert [j.job_id for j in cache.jobs_for("ns/p")] == [1]


@pytest.mark.parametrize(
    ("user", "ours"),
    [("slurm", True), (None, True), ("root", False), ("alice", False)],
    ids=["bridge-user", "user-unknown", "root", "other-user"],
)
def test_marker_counts_only_in_jobs_of_the_bridge_user(user: str | None, ours: bool) -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    cache._replace([job(1).model_copy(update={"user_name": user})], poll_started=0.0)
    assert bool(cache.jobs_for("ns/p")) is ours
    assert bool(cache.owned_jobs()) is ours


def test_ambiguous_submit_holds_submits_until_a_later_poll() -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    assert cache.settled
    cache.submit_outcome_unknown()
    assert not cache.settled
    cache._last_poll_started = float("inf")  # a poll that began after the failure succeeded
    assert cache.settled


GANG_MARKER = (
    f"slurm-bridge/v1 cluster=c1 gang=ns/podgroup.scheduling.x-k8s.io/pg spec=0123456789ab uid={UID}"
)


async def test_gang_jobs_are_indexed_by_gang_key_apart_from_pods() -> None:
    pods: list[str] = []
    gangs: list[str] = []
    answer = JobList(jobs=(job(1), job(2, comment=GANG_MARKER)), next_update_time=NOW)
    slurm = FakeSlurm([answer])
    cache = SlurmJobCache(
        slurm,
        "c1",
        owner="slurm",
        poll_interval=0.001,
        on_change=pods.append,
        on_gang_change=gangs.append,
    )
    await run_polls(cache, slurm, 2)
    assert (pods, gangs) == (["ns/p"], ["ns/podgroup.scheduling.x-k8s.io/pg"])
    assert [j.job_id for j in cache.jobs_for_gang("ns/podgroup.scheduling.x-k8s.io/pg")] == [2]
    assert [j.job_id for j in cache.owned_gang_jobs()] == [2]
    assert [j.job_id for j in cache.owned_jobs()] == [1]  # the pod orphan sweep never sees gang jobs
    cache.record_submitted(3, JobSpec(name="pg", comment=GANG_MARKER))
    assert [j.job_id for j in cache.jobs_for_gang("ns/podgroup.scheduling.x-k8s.io/pg")] == [2, 3]
    assert cache.gang_keys() == {"ns/podgroup.scheduling.x-k8s.io/pg"}


GANG_KEY = "ns/podgroup.scheduling.x-k8s.io/pg"


@pytest.mark.parametrize(
    ("jobs", "node", "expected"),
    [
        ([job(1, JobState.RUNNING).model_copy(update={"nodes": ("n1",)})], "n1", ({"ns/p"}, set())),
        ([job(1, JobState.RUNNING).model_copy(update={"nodes": ("n1",)})], "n2", (set(), set())),
        ([job(1, JobState.COMPLETED).model_copy(update={"nodes": ("n1",)})], "n1", (set(), set())),
        (
            [job(2, JobState.RUNNING, GANG_MARKER).model_copy(update={"nodes": ("n1", "n2")})],
            "n2",
            (set(), {GANG_KEY}),
        ),
        (
            [job(3, JobState.RUNNING, "someone else's").model_copy(update={"nodes": ("n1",)})],
            "n1",
            (set(), set()),
        ),
        ([job(1, JobState.PENDING)], "n1", (set(), set())),
    ],
    ids=["pod-on-node", "other-node", "finished", "gang-member-node", "foreign-job", "pending-no-nodes"],
)
def test_keys_on_node_names_only_our_unfinished_jobs_there(
    jobs: list[Job], node: str, expected: tuple[set[str], set[str]]
) -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    cache._replace(jobs, poll_started=0.0)
    assert cache.keys_on_node(node) == expected


def _index_of(cache: SlurmJobCache) -> tuple[object, ...]:
    return (
        {k: set(v) for k, v in cache._by_pod.items() if v},
        {k: set(v) for k, v in cache._by_gang.items() if v},
        {k: set(v) for k, v in cache._by_node.items() if v},
        dict(cache._markers),
        sorted(j.job_id for j in cache.shared_jobs() or ()),
    )


OTHER = f"slurm-bridge/v1 cluster=c1 pod=ns/q spec=0123456789ab uid={UID}"


def placed(job_id: int, state: JobState, comment: str | None, *nodes: str) -> Job:
    return job(job_id, state, comment).model_copy(update={"nodes": nodes})


@pytest.mark.parametrize(
    ("lists", "changed"),
    [
        ([[job(1)], [job(1)]], [1, 0]),
        ([[job(1)], [placed(1, JobState.RUNNING, MARKER, "n1")]], [1, 1]),
        (
            [[placed(1, JobState.RUNNING, MARKER, "n1")], [placed(1, JobState.COMPLETED, MARKER, "n1")]],
            [1, 1],
        ),
        ([[job(1), placed(2, JobState.RUNNING, GANG_MARKER, "n1", "n2")], [job(1)]], [2, 1]),
        ([[job(1)], [job(1, comment=OTHER)]], [1, 1]),
        ([[job(1), job(3, comment=None)], [job(3, comment=None), job(4, comment=OTHER)]], [2, 2]),
    ],
    ids=["repeat", "started", "finished", "gang-gone", "marker-changed", "foreign-and-new"],
)
def test_incremental_index_matches_a_rebuild_and_counts_changes(
    lists: list[list[Job]], changed: list[int]
) -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    counted = []
    for jobs in lists:
        counted.append(cache._replace(jobs, poll_started=0.0))
        rebuilt = SlurmJobCache(
            FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None
        )
        rebuilt._replace(jobs, poll_started=0.0)
        assert _index_of(cache) == _index_of(rebuilt)
    assert counted == changed


async def test_a_full_list_that_repeats_the_index_is_counted_as_repeated_and_wakes_nothing() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    seen: list[str] = []
    same = JobList(jobs=(job(1),), next_update_time=NOW)
    slurm = FakeSlurm([same, same, JobList(not_modified=True, next_update_time=NOW)])
    cache = SlurmJobCache(
        slurm, "c1", owner="slurm", poll_interval=0.001, on_change=seen.append, registry=registry
    )
    await run_polls(cache, slurm, 3)
    assert seen == ["ns/p"]  # the first list only

    def polls(answer: str) -> float | None:
        return registry.get_sample_value("slurm_bridge_job_polls_total", {"answer": answer})

    assert (polls("changed"), polls("repeated")) == (1.0, 1.0)
    assert (polls("not_modified") or 0) >= 1


class FakeStates:
    """jobs/state and job/{id}: `states` answers, `jobs` are what a read of one job returns."""

    def __init__(self, states: dict[int, JobState] | Exception, jobs: dict[int, Job]) -> None:
        self.states = states
        self.jobs = jobs
        self.asked: list[list[int]] = []
        self.read: list[int] = []

    async def job_states(self, job_ids: Any) -> dict[int, JobState]:
        self.asked.append(list(job_ids))
        if isinstance(self.states, Exception):
            raise self.states
        return {i: s for i, s in self.states.items() if i in job_ids}

    async def get_job(self, job_id: int) -> Job:
        self.read.append(job_id)
        return self.jobs[job_id]


RUNNING_ON_N1 = placed(5, JobState.RUNNING, MARKER, "n1")


async def run_until_asked(cache: SlurmJobCache, reader: FakeStates, act: Callable[[], None]) -> None:
    """Run the cache until synced, `act`, let the watch ask Slurm once (and a little more), stop."""
    task = asyncio.create_task(cache.run())
    await cache.wait_synced()
    act()
    async with asyncio.timeout(2):
        while not reader.asked:  # noqa: ASYNC110 (polling a fake, briefly)
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("states", "read", "bound_state", "watching", "polled_again"),
    [
        ({5: JobState.RUNNING}, [5], JobState.RUNNING, False, False),
        ({5: JobState.PENDING}, [], JobState.PENDING, True, False),
        ({}, [], JobState.PENDING, True, False),
        (SlurmTransportError("reset", sent=True), [], JobState.PENDING, False, True),
    ],
    ids=["started-read-alone", "still-pending", "not-yet-listed", "jobs-state-fails-full-polls-take-over"],
)
async def test_a_just_submitted_job_is_watched_through_jobs_state_not_full_lists(
    states: dict[int, JobState] | Exception,
    read: list[int],
    bound_state: JobState,
    watching: bool,
    polled_again: bool,
) -> None:
    woken: list[str] = []
    slurm = FakeSlurm([JobList(jobs=(), next_update_time=NOW)])
    reader = FakeStates(states, {5: RUNNING_ON_N1})
    cache = SlurmJobCache(slurm, "c1", owner="slurm", poll_interval=30, on_change=woken.append, states=reader)
    await run_until_asked(cache, reader, lambda: cache.record_submitted(5, JobSpec(name="p", comment=MARKER)))
    assert reader.read == read
    assert [j.state for j in cache.jobs_for("ns/p")] == [bound_state]
    assert bool(cache._watch) is watching
    assert (len(slurm.calls) > 1) is polled_again  # the first full poll, then none while watching
    if read:
        assert woken == ["ns/p"]
        assert cache.keys_on_node("n1") == ({"ns/p"}, set())


def test_a_burst_beyond_the_watch_limit_is_read_as_full_lists() -> None:
    from controller.slurm_jobs import MAX_WATCHED

    cache = SlurmJobCache(
        FakeSlurm([]),
        "c1",
        owner="slurm",
        poll_interval=10,
        on_change=lambda _k: None,
        states=FakeStates({}, {}),
    )
    for i in range(MAX_WATCHED + 5):
        cache.record_submitted(100 + i, JobSpec(name="p", comment=MARKER))
    assert len(cache._watch) == MAX_WATCHED
    assert cache._poll_wanted  # the rest: a full-list poll now, then fast ones


class SlowSlurm(FakeSlurm):
    """A full list that takes `seconds` to answer (thousands of jobs in Slurm)."""

    def __init__(self, answers: list[Any], seconds: float) -> None:
        super().__init__(answers)
        self.seconds = seconds

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList:
        answer = await super().list_jobs(update_time=update_time)
        if len(self.calls) > 1:
            await asyncio.sleep(self.seconds)
        return answer


async def test_a_start_is_seen_while_a_slow_full_list_is_still_being_read() -> None:
    pending = JobList(jobs=(job(5),), next_update_time=NOW)
    slurm = SlowSlurm([JobList(jobs=(), next_update_time=NOW), pending], seconds=1.0)
    reader = FakeStates({5: JobState.RUNNING}, {5: RUNNING_ON_N1})
    cache = SlurmJobCache(
        slurm, "c1", owner="slurm", poll_interval=0.01, on_change=lambda _k: None, states=reader
    )
    task = asyncio.create_task(cache.run())
    async with asyncio.timeout(2):
        while len(slurm.calls) < 2:  # noqa: ASYNC110 (the slow list has begun: it predates the read)
            await asyncio.sleep(0.001)
    cache.record_submitted(5, JobSpec(name="p", comment=MARKER))
    async with asyncio.timeout(0.5):  # well before the slow list answers
        while [j.state for j in cache.jobs_for("ns/p")] != [JobState.RUNNING]:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    # the slow list, begun before the job was read alone, says PENDING: it must not undo the read
    async with asyncio.timeout(2):
        while len(slurm.calls) < 3:  # noqa: ASYNC110 (polling a fake, briefly)
            await asyncio.sleep(0.01)
    assert [j.state for j in cache.jobs_for("ns/p")] == [JobState.RUNNING]
    assert cache.keys_on_node("n1") == ({"ns/p"}, set())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("state", "read", "watching"),
    [
        (JobState.RUNNING, [], True),
        (JobState.COMPLETED, [5], False),
        (JobState.CANCELLED, [5], False),
    ],
    ids=["still-running-keep-watching", "completed-read-alone", "cancelled-read-alone"],
)
async def test_a_job_we_ended_is_watched_until_slurm_says_it_finished(
    state: JobState, read: list[int], watching: bool
) -> None:
    slurm = FakeSlurm([JobList(jobs=(RUNNING_ON_N1,), next_update_time=NOW)])
    ended = placed(5, state, MARKER, "n1")
    reader = FakeStates({5: state}, {5: ended})
    cache = SlurmJobCache(
        slurm, "c1", owner="slurm", poll_interval=30, on_change=lambda _k: None, states=reader
    )
    await run_until_asked(cache, reader, lambda: cache.record_ended(5))
    assert reader.read == read
    assert bool(cache._watch) is watching
    assert [j.state for j in cache.jobs_for("ns/p")] == [JobState.RUNNING if watching else state]
    assert len(slurm.calls) == 1  # no full list polled for it


def test_without_jobs_state_a_job_we_ended_is_polled_for_soon() -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    cache.record_ended(5)
    assert cache._poll_wanted and not cache._watch


async def test_a_list_begun_before_a_job_was_read_alone_is_not_a_mass_vanish() -> None:
    from controller.slurm_jobs import _Verdict

    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None)
    cache._upsert(RUNNING_ON_N1, read_at=5.0)  # the only job we know, read alone at t=5
    assert await cache._believe([], poll_started=4.0) is _Verdict.BELIEVE  # the list began before: silent
    assert await cache._believe([], poll_started=6.0) is _Verdict.RE_READ  # a later list that drops it: held


async def test_while_the_full_list_fails_the_watch_reads_nothing() -> None:
    failing = [SlurmTransportError("reset", sent=True)] * 50
    slurm = FakeSlurm([JobList(jobs=(), next_update_time=NOW), *failing])
    reader = FakeStates({5: JobState.RUNNING}, {5: RUNNING_ON_N1})
    cache = SlurmJobCache(
        slurm,
        "c1",
        owner="slurm",
        poll_interval=0.001,
        max_backoff=0.01,
        on_change=lambda _k: None,
        states=reader,
    )
    task = asyncio.create_task(cache.run())
    await cache.wait_synced()
    async with asyncio.timeout(2):
        while cache.healthy:  # noqa: ASYNC110 (polling a fake, briefly)
            await asyncio.sleep(0.001)
    cache.record_submitted(5, JobSpec(name="p", comment=MARKER))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reader.asked == []  # fail closed: nothing read beside a failing list
    assert [j.state for j in cache.jobs_for("ns/p")] == [JobState.PENDING]
