"""The job index never acts on "everything vanished at once" unconfirmed, relists in full now and then,
and an orphan sweep survives Slurm failures (issue 16)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import respx
from prometheus_client import CollectorRegistry

from bridge.translate import JobOutcome
from controller.effects import PodEffects
from controller.job_index_guard import check_vanished, full_relist_due
from controller.plan import CancelJob
from controller.slurm_jobs import SlurmJobCache
from slurm_client import (
    AuthError,
    CancelOutcome,
    InvalidRequest,
    Job,
    JobList,
    JobNotFound,
    JobSpec,
    JobState,
    RetryPolicy,
    ServerBusy,
    SlurmClient,
    SlurmTimeout,
    StaticTokenAuth,
    SubmitResult,
)
from tests.fakes.kube import FakeEvents, FakeKube

NOW = datetime(2026, 11, 23, tzinfo=UTC)
UID = "0b5b1c7e-1111-2222-3333-444455556666"


def marker(pod: str) -> str:
    return f"slurm-bridge/v1 cluster=c1 pod=ns/{pod} spec=0123456789ab uid={UID}"


def job(job_id: int, state: JobState = JobState.RUNNING, *, ours: bool = True) -> Job:
    return Job(
        job_id=job_id,
        name=f"p{job_id}",
        state=state,
        comment=marker(f"p{job_id}") if ours else "someone else's",
        user_name="slurm",
    )


def index(*jobs: Job) -> dict[int, Job]:
    return {j.job_id: j for j in jobs}


def ours(j: Job) -> bool:
    return j.comment is not None and j.comment.startswith("slurm-bridge/")


# --- pure parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "share", "suspicious", "vanished"),
    [
        pytest.param(index(), [], 0.5, False, (), id="nothing-known"),
        pytest.param(index(job(1)), [], 0.5, True, (1,), id="the-only-active-job-vanishes"),
        pytest.param(index(job(1), job(2), job(3)), [], 0.5, True, (1, 2, 3), id="all-vanish"),
        pytest.param(index(*(job(i) for i in range(10))), range(1, 10), 0.5, False, (0,), id="one-of-ten"),
        pytest.param(
            index(*(job(i) for i in range(10))), range(5, 10), 0.5, True, (0, 1, 2, 3, 4), id="half"
        ),
        pytest.param(
            index(*(job(i) for i in range(10))), range(6, 10), 0.5, True, (0, 1, 2, 3, 4, 5), id="most"
        ),
        pytest.param(
            index(*(job(i) for i in range(10))), range(4, 10), 0.5, False, (0, 1, 2, 3), id="under-half"
        ),
        pytest.param(
            index(*(job(i, JobState.COMPLETED) for i in range(10))), [], 0.5, False, (), id="finished-purged"
        ),
        pytest.param(
            index(job(1), job(2, JobState.CANCELLED), job(3, JobState.FAILED)),
            [1],
            0.5,
            False,
            (),
            id="finished-purged-active-stays",
        ),
        pytest.param(
            index(*(job(i, ours=False) for i in range(5))), [], 0.5, False, (), id="foreign-jobs-vanish"
        ),
        pytest.param(index(job(1), job(2), job(3), job(4)), [2, 3, 4], 0.25, True, (1,), id="low-share"),
        pytest.param(index(job(1, JobState.PENDING)), [], 0.5, True, (1,), id="pending-vanishes"),
    ],
)
def test_check_vanished(
    before: dict[int, Job], after: Any, share: float, suspicious: bool, vanished: tuple[int, ...]
) -> None:
    check = check_vanished(before, set(after), ours, share=share)
    assert (check.suspicious, check.vanished) == (suspicious, vanished)


def test_vanish_description_is_bounded() -> None:
    check = check_vanished(index(*(job(i) for i in range(100))), set(), ours)
    assert check.describe().startswith("100 of 100 active bridge jobs missing (0, 1, 2")
    assert check.describe().endswith("and 90 more)")


@pytest.mark.parametrize(
    ("now", "last", "every", "due"),
    [
        (100.0, float("-inf"), 300.0, True),
        (100.0, 0.0, 300.0, False),
        (300.0, 0.0, 300.0, True),
        (299.9, 0.0, 300.0, False),
        (5.0, 4.0, 0.5, True),
    ],
)
def test_full_relist_due(now: float, last: float, every: float, due: bool) -> None:
    assert full_relist_due(now, last, every) is due


# --- the cache with a scripted Slurm ----------------------------------------------------------------


class FakeSlurm:
    def __init__(self, answers: list[Any], *, still_there: tuple[Job, ...] = ()) -> None:
        self.answers = answers
        self.calls: list[datetime | int | None] = []
        self.still_there = {j.job_id: j for j in still_there}  # what GET job/<id> finds
        self.looked_up: list[int] = []

    async def get_job(self, job_id: int) -> Job:
        self.looked_up.append(job_id)
        if job_id not in self.still_there:
            raise JobNotFound(f"job {job_id} not found", status=404)
        return self.still_there[job_id]

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList:
        self.calls.append(update_time)
        answer = self.answers.pop(0) if self.answers else JobList(not_modified=True, next_update_time=NOW)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, JobList)
        return answer


async def run_polls(cache: SlurmJobCache, slurm: FakeSlurm, polls: int) -> None:
    task = asyncio.create_task(cache.run())
    deadline = time.monotonic() + 5
    while len(slurm.calls) < polls and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(slurm.calls) >= polls


def listed(*jobs: Job) -> JobList:
    return JobList(jobs=jobs, next_update_time=NOW)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make_cache(slurm: FakeSlurm, seen: list[str], registry: CollectorRegistry, **kw: Any) -> SlurmJobCache:
    kw.setdefault("poll_interval", 0.001)
    return SlurmJobCache(slurm, "c1", owner="slurm", on_change=seen.append, registry=registry, **kw)


async def test_a_list_dropping_every_job_is_held_then_refuted(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    seen: list[str] = []
    slurm = FakeSlurm([listed(job(1), job(2)), listed(), listed(job(1), job(2))])
    cache = make_cache(slurm, seen, registry)
    with caplog.at_level(logging.WARNING, logger="controller.slurm_jobs"):
        await run_polls(cache, slurm, 4)
    assert seen == ["ns/p1", "ns/p2"]  # the first list only: the empty one was never acted on
    assert [j.job_id for j in cache.owned_jobs()] == [1, 2]
    assert slurm.calls[:3] == [None, NOW, None]  # the re-read is a full list
    assert "drops 2 of 2 active bridge jobs missing (1, 2) at once" in caplog.text
    assert "does not confirm" in caplog.text
    assert sample(registry, "slurm_bridge_job_list_mass_vanish_total", outcome="held") == 1
    assert sample(registry, "slurm_bridge_job_list_mass_vanish_total", outcome="refuted") == 1


async def test_a_confirmed_mass_vanish_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    seen: list[str] = []
    slurm = FakeSlurm([listed(job(1), job(2)), listed(), listed()])
    cache = make_cache(slurm, seen, registry)
    with caplog.at_level(logging.WARNING, logger="controller.slurm_jobs"):
        await run_polls(cache, slurm, 4)
    assert cache.owned_jobs() == []
    assert seen == ["ns/p1", "ns/p2", "ns/p1", "ns/p2"]
    assert "confirms" in caplog.text
    assert sample(registry, "slurm_bridge_job_list_mass_vanish_total", outcome="confirmed") == 1


async def test_a_list_read_twice_without_jobs_slurmctld_still_has_is_not_believed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A wrong slurmrestd (or a proxy) answering an empty list every time: the second read agrees with
    # the first, but the missing jobs, looked up one by one, are still there.
    registry = CollectorRegistry()
    seen: list[str] = []
    slurm = FakeSlurm([listed(job(1), job(2))] + [listed()] * 20, still_there=(job(1),))
    cache = make_cache(slurm, seen, registry)
    with caplog.at_level(logging.WARNING, logger="controller.slurm_jobs"):
        await run_polls(cache, slurm, 6)
    assert [j.job_id for j in cache.owned_jobs()] == [1, 2]
    assert seen == ["ns/p1", "ns/p2"]
    assert slurm.looked_up[0] == 1
    assert not cache.healthy
    assert "job 1 is still there (RUNNING); not believed" in str(cache.last_error)
    assert "confirms" not in caplog.text
    assert sample(registry, "slurm_bridge_job_list_mass_vanish_total", outcome="refuted") >= 1


async def test_a_mass_vanish_whose_lookup_fails_is_not_believed() -> None:
    class LookupFails(FakeSlurm):
        async def get_job(self, job_id: int) -> Job:
            raise SlurmTimeout("slow", sent=True)

    registry = CollectorRegistry()
    seen: list[str] = []
    slurm = LookupFails([listed(job(1)), listed(), listed(), listed(job(1))])
    cache = make_cache(slurm, seen, registry)
    await run_polls(cache, slurm, 5)
    assert [j.job_id for j in cache.owned_jobs()] == [1]
    assert seen == ["ns/p1"]
    assert cache.healthy  # the last list had the job again


async def test_a_held_list_does_not_settle_an_uncertain_submit() -> None:
    # A list not believed shows nothing about a submit whose outcome is unknown: no second submit yet.
    slurm = FakeSlurm([listed(job(1)), listed(), listed()], still_there=(job(1),))
    cache = make_cache(slurm, [], CollectorRegistry(), poll_interval=10)
    task = asyncio.create_task(cache.run())
    await cache.wait_synced()
    cache.submit_outcome_unknown()
    deadline = time.monotonic() + 5
    while len(slurm.calls) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(slurm.calls) == 3
    assert not cache.settled


async def test_a_held_list_survives_a_failed_re_read() -> None:
    registry = CollectorRegistry()
    seen: list[str] = []
    slurm = FakeSlurm(
        [listed(job(1)), listed(), SlurmTimeout("slow", sent=True), listed(job(1, JobState.RUNNING))]
    )
    cache = make_cache(slurm, seen, registry, max_backoff=0.001)
    await run_polls(cache, slurm, 5)
    assert [j.job_id for j in cache.owned_jobs()] == [1]
    assert seen == ["ns/p1"]
    assert slurm.calls[2] is None and slurm.calls[3] is None


async def test_purged_finished_jobs_are_accepted_at_once() -> None:
    registry = CollectorRegistry()
    seen: list[str] = []
    done = [job(i, JobState.COMPLETED) for i in range(5)]
    slurm = FakeSlurm([listed(*done), listed()])
    cache = make_cache(slurm, seen, registry)
    await run_polls(cache, slurm, 3)
    assert cache.owned_jobs() == []
    assert slurm.calls[2] == NOW  # no re-read
    assert sample(registry, "slurm_bridge_job_list_mass_vanish_total", outcome="held") == 0


@pytest.mark.parametrize(
    ("relist_seconds", "full_calls"),
    [pytest.param(0.0, 6, id="every-poll"), pytest.param(3600.0, 1, id="hourly")],
)
async def test_periodic_full_relist(relist_seconds: float, full_calls: int) -> None:
    registry = CollectorRegistry()
    slurm = FakeSlurm([listed(job(1))])
    cache = make_cache(slurm, [], registry, full_relist_seconds=relist_seconds)
    await run_polls(cache, slurm, 6)
    assert slurm.calls[:6].count(None) == full_calls
    relists = sample(registry, "slurm_bridge_job_full_relists_total")
    assert relists >= 5 if full_calls == 6 else relists == 0


async def test_default_full_relist_is_a_few_minutes() -> None:
    cache = SlurmJobCache(FakeSlurm([]), "c1", owner="slurm", poll_interval=2, on_change=lambda _k: None)
    assert 60 <= cache._full_relist_seconds <= 900


# --- the same through the real client, over respx ---------------------------------------------------

URL = "http://slurmrestd.test"
TOKEN = jwt.encode({"sun": "slurm", "iat": 1, "exp": int(time.time()) + 3600}, b"k" * 32, "HS256")


def wire_job(job_id: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "name": f"p{job_id}",
        "job_state": ["RUNNING"],
        "comment": marker(f"p{job_id}"),
        "user_name": "slurm",
        "nodes": "slurm-bridge-0",
    }


def jobs_reply(*ids: int, last_update: int = 1796000000) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "jobs": [wire_job(i) for i in ids],
            "last_update": {"set": True, "infinite": False, "number": last_update},
            "errors": [],
            "warnings": [],
        },
    )


async def no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(httpx.Response(200, json={"errors": [], "warnings": []}), id="200-without-jobs"),
        pytest.param(httpx.Response(200, json={"jobs": None, "errors": []}), id="200-jobs-null"),
        pytest.param(jobs_reply(), id="200-empty-list-once"),
        pytest.param([jobs_reply()] * 10, id="200-empty-list-again-and-again"),
        pytest.param(httpx.Response(200, json={"jobs": "garbage"}), id="200-jobs-not-a-list"),
        pytest.param(httpx.Response(500, text="oops"), id="bare-500"),
    ],
)
@respx.mock
async def test_a_bad_answer_never_empties_the_index(fault: httpx.Response | list[httpx.Response]) -> None:
    answers = [jobs_reply(1, 2, 3), *(fault if isinstance(fault, list) else [fault])]

    def answer(_request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else jobs_reply(1, 2, 3)

    route = respx.get(f"{URL}/slurm/v0.0.42/jobs/").mock(side_effect=answer)
    # GET job/<id> still finds each job
    respx.get(url__regex=rf"{URL}/slurm/v0\.0\.42/job/\d+").mock(
        side_effect=lambda request: jobs_reply(int(request.url.path.rstrip("/").rsplit("/", 1)[1]))
    )
    registry = CollectorRegistry()
    seen: list[str] = []
    async with SlurmClient(
        URL,
        auth=StaticTokenAuth("slurm", TOKEN),
        api_version="v0.0.42",
        sleep=no_sleep,
        retry=RetryPolicy(attempts=1, deadline=1.0),
    ) as client:
        cache = SlurmJobCache(
            client,
            "c1",
            owner="slurm",
            poll_interval=0.001,
            max_backoff=0.001,
            on_change=seen.append,
            registry=registry,
        )
        polls = len(answers) + 3
        task = asyncio.create_task(cache.run())
        deadline = time.monotonic() + 5
        while route.call_count < polls and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)
            if cache.synced:  # from the first answer on, the index lists all three jobs
                assert [j.job_id for j in cache.owned_jobs()] == [1, 2, 3]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert route.call_count >= polls
    assert seen == ["ns/p1", "ns/p2", "ns/p3"]


# --- orphan sweeps ------------------------------------------------------------------------------------


class FlakyCanceller:
    def __init__(self, outcomes: dict[int, Exception | None]) -> None:
        self.outcomes = outcomes
        self.cancelled: list[int] = []

    async def submit_job(self, spec: JobSpec) -> SubmitResult:
        raise AssertionError("no submit in a sweep")

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome:
        raise AssertionError("an orphan is cancelled, not ended with an outcome")

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome:
        self.cancelled.append(job_id)
        outcome = self.outcomes.get(job_id)
        if outcome is not None:
            raise outcome
        return CancelOutcome.SIGNALLED


async def test_an_orphan_sweep_survives_any_slurm_failure(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    cache = SlurmJobCache(
        FakeSlurm([]), "c1", owner="slurm", poll_interval=10, on_change=lambda _k: None, registry=registry
    )
    slurm = FlakyCanceller(
        {
            1: ServerBusy("GET x", status=503),
            2: JobNotFound("gone"),
            3: AuthError("denied", status=403),
            4: SlurmTimeout("slow", sent=True),
            5: InvalidRequest("nope", status=400),
        }
    )
    doomed = [CancelJob(job_id=i, outcome=JobOutcome.CANCEL, why="orphan") for i in range(1, 7)]
    effects = PodEffects(kube=FakeKube(), slurm=slurm, jobs=cache, events=FakeEvents())
    with caplog.at_level(logging.WARNING, logger="controller.effects"):
        planned = await effects.cancel_orphans(doomed, "pod")
    assert planned == 6
    assert slurm.cancelled == [1, 2, 3, 4, 5, 6]
    assert sample(registry, "slurm_bridge_orphan_cancel_failures_total") == 4
    assert "cancelling orphan pod Slurm job 1 failed" in caplog.text
    assert "cancelled orphan pod Slurm job 6" in caplog.text
