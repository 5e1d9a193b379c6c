"""An index of Slurm's jobs, refreshed in the background with cheap `update_time` polls.

Decisions read this cache, never slurmrestd: one poll per interval answers HTTP 304 in a few
milliseconds when nothing changed, whatever the queue size. When something changed, the pods whose
jobs changed are handed to `on_change` (their keys, "namespace/name"), so cost grows with changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.gang_marker import decode_gang_marker
from bridge.marker import JobMarker, decode_marker
from controller.job_index_guard import (
    DEFAULT_FULL_RELIST_SECONDS,
    DEFAULT_VANISH_SHARE,
    VanishCheck,
    check_vanished,
    full_relist_due,
)
from slurm_client import Job, JobList, JobNotFound, JobSpec, JobState, SlurmError

log = logging.getLogger(__name__)

# After a submit or cancel: poll this often for this long.
FAST_POLL_INTERVAL = 0.25
FAST_POLL_WINDOW = 3.0
# Where Slurm can say the state of only some jobs (REST v0.0.42+, `GET jobs/state`), a job just submitted
# (or just ended by us) is watched that way instead: asked about this often, for at most this long (the
# full-list polls then carry it), and only while few are: a burst is cheaper read as one full list.
# The watch runs beside the full-list polls, never behind them: with thousands of jobs in Slurm a full
# list takes a second or more, and a start must not wait for it (make bench-bridge saw +1-2 s).
WATCH_INTERVAL = 0.025
WATCH_SECONDS = 30.0
MAX_WATCHED = 100
# A mass vanish seen twice is checked by looking up this many of the missing jobs one by one.
VANISH_LOOKUPS = 3


class _Verdict(enum.Enum):
    BELIEVE = enum.auto()
    RE_READ = enum.auto()  # suspicious: read the full list again, soon
    DISTRUST = enum.auto()  # a missing job is still there (or could not be looked up): keep the index


class JobLister(Protocol):
    """What the cache needs of the Slurm client (SlurmClient fits; tests pass a fake)."""

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList: ...

    async def get_job(self, job_id: int) -> Job: ...


class JobStateReader(Protocol):
    """Reading only some jobs (SlurmClient on REST v0.0.42+)."""

    async def job_states(self, job_ids: Sequence[int]) -> dict[int, JobState]: ...

    async def get_job(self, job_id: int) -> Job: ...


@dataclass(frozen=True)
class _Watched:
    since: float  # monotonic
    until_finished: bool  # False: until it leaves PENDING (a submit); True: until it ends (a cancel)


@dataclass(frozen=True)
class _Provisional:
    job: Job
    recorded_at: float  # monotonic time of the submit


class SlurmJobCache:
    """This cluster's placeholder jobs by pod key, plus every job for orphan clean-up."""

    def __init__(
        self,
        slurm: JobLister,
        cluster_id: str,
        *,
        owner: str | Collection[str] | None,
        poll_interval: float,
        on_change: Callable[[str], None],
        on_gang_change: Callable[[str], None] | None = None,
        registry: CollectorRegistry | None = None,
        max_backoff: float = 30.0,
        full_relist_seconds: float = DEFAULT_FULL_RELIST_SECONDS,
        vanish_share: float = DEFAULT_VANISH_SHARE,
        states: JobStateReader | None = None,
    ) -> None:
        self._slurm = slurm
        self._states = states
        self._watch: dict[int, _Watched] = {}  # jobs asked about through `states`, beside the polls
        self._watch_wake = asyncio.Event()
        # job id -> when a job read alone (by the watch) was read: a full list that began earlier is
        # older than that read and must not undo it
        self._read_alone: dict[int, float] = {}
        self._poll_wanted = False  # poke(): a full-list poll now
        self._last_poll_try = float("-inf")  # monotonic start of the last full-list poll attempt
        self._listed_stale = False  # a job read on its own is not yet in `shared_jobs()`
        self._cluster_id = cluster_id
        # Only jobs the bridge's own Slurm user submitted can be ours: a marker in someone else's job is
        # never acted on (and cancelling another user's job through slurmrestd is refused anyway).
        # Several owners: the bridge's user and the Slurm users tenant policies run jobs as.
        self._owners = frozenset([owner] if isinstance(owner, str) else owner) if owner is not None else None
        self._poll_interval = poll_interval
        self._on_change = on_change
        self._on_gang_change = on_gang_change
        self._max_backoff = max_backoff
        self._full_relist_seconds = full_relist_seconds
        self._vanish_share = vanish_share
        self._last_full = float("-inf")  # monotonic start of the last update_time-less list
        self._held_back: VanishCheck | None = None  # a suspicious list waiting for a second read
        self._jobs: dict[int, Job] = {}
        self._listed: tuple[Job, ...] | None = None  # the jobs of the last applied poll, as listed
        self._markers: dict[int, JobMarker] = {}
        self._by_pod: dict[str, set[int]] = defaultdict(set)
        self._by_gang: dict[str, set[int]] = defaultdict(set)  # gang key "ns/kind/name" -> job ids
        self._by_node: dict[str, set[int]] = defaultdict(set)  # Slurm node -> our unfinished jobs on it
        self._provisional: dict[int, _Provisional] = {}
        self._next_update: datetime | None = None
        self._last_poll_started = float("-inf")  # monotonic start of the last successful poll
        self._applied_as_of = float("-inf")  # monotonic start of the last poll the index reflects
        self._absence_noticed: dict[int, float] = {}  # job id -> when a missing labelled job was first seen
        self._uncertain_since: float | None = None
        self._fast_until = float("-inf")
        self._synced = asyncio.Event()
        self._wake = asyncio.Event()
        self.healthy = False
        self.last_error: str | None = None
        self._metrics = _CacheMetrics(registry)

    # ---- reading ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def jobs_for(self, pod_key: str) -> list[Job]:
        ids = set(self._by_pod.get(pod_key, ()))
        ids |= {i for i, p in self._provisional.items() if self._pod_key_of(p.job) == pod_key}
        return [self._provisional[i].job if i in self._provisional else self._jobs[i] for i in sorted(ids)]

    def shared_jobs(self) -> tuple[Job, ...] | None:
        """Every job (all users) of the last applied poll, for other readers in the process (the
        exporter, the NodeSet controller): one list of Slurm's jobs per process. None before the first."""
        return self._listed

    def all_jobs(self) -> list[Job]:
        merged = dict(self._jobs)
        merged.update({i: p.job for i, p in self._provisional.items() if i not in merged})
        return list(merged.values())

    def owned_jobs(self) -> list[Job]:
        """Jobs with this cluster's marker, submitted by the bridge's Slurm user."""
        return [job for job in self.all_jobs() if self._pod_key_of(job) is not None]

    def pod_keys(self) -> set[str]:
        return {key for key, ids in self._by_pod.items() if ids}

    def jobs_for_gang(self, gang_key: str) -> list[Job]:
        """Jobs whose gang marker names `gang_key` ("namespace/kind/name"), provisional ones included."""
        ids = set(self._by_gang.get(gang_key, ()))
        ids |= {i for i, p in self._provisional.items() if self._gang_key_of(p.job) == gang_key}
        return [self._provisional[i].job if i in self._provisional else self._jobs[i] for i in sorted(ids)]

    def gang_keys(self) -> set[str]:
        return {key for key, ids in self._by_gang.items() if ids}

    def keys_on_node(self, slurm_node: str) -> tuple[set[str], set[str]]:
        """(pod keys, gang keys) of this cluster's unfinished jobs allocated `slurm_node`."""
        pods: set[str] = set()
        gangs: set[str] = set()
        for job_id in self._by_node.get(slurm_node, ()):
            job = self._jobs[job_id]
            if (key := self._pod_key_of(job)) is not None:
                pods.add(key)
            elif (gang := self._gang_key_of(job)) is not None:
                gangs.add(gang)
        return pods, gangs

    def owned_gang_jobs(self) -> list[Job]:
        """Jobs with this cluster's gang marker, submitted by the bridge's Slurm user."""
        return [job for job in self.all_jobs() if self._gang_key_of(job) is not None]

    # ---- writing through -------------------------------------------------------------------------

    def record_submitted(self, job_id: int, spec: JobSpec) -> None:
        """Remember a job we just submitted until a poll that started after the submit has seen it.

        Without this, a reconcile that runs before the next poll would not see the job and could
        submit a second one.
        """
        job = Job(
            job_id=job_id,
            name=spec.name,
            state=JobState.PENDING,
            partition=spec.partition,
            comment=spec.comment,
            submit_time=datetime.now(UTC),
        )
        self._provisional[job_id] = _Provisional(job, time.monotonic())
        self._watch_or_poke(job_id, until_finished=False)

    def record_ended(self, job_id: int) -> None:
        """We just ended or cancelled job `job_id`: learn when Slurm has finished it (watched alone where
        Slurm allows, else by polling the full list soon)."""
        self._watch_or_poke(job_id, until_finished=True)

    def _watch_or_poke(self, job_id: int, *, until_finished: bool) -> None:
        if self._states is not None and len(self._watch) < MAX_WATCHED:
            self._watch[job_id] = _Watched(time.monotonic(), until_finished)
            self._watch_wake.set()
        else:
            self.poke()

    def submit_outcome_unknown(self) -> None:
        """A submit failed in a way that may have created the job: hold further submits until a poll that
        started after now has shown whether it exists."""
        self._uncertain_since = time.monotonic()
        self.poke()

    def absence_confirmed(self, job_id: int) -> bool:
        """Whether job `job_id`, missing from the index, is really gone: True once a poll that started
        after its absence was first noticed has been applied. (A pod labelled by another process, e.g.
        the scheduler run apart, may name a job submitted after this index's last poll.)"""
        noticed = self._absence_noticed.get(job_id)
        if noticed is None:
            self._absence_noticed[job_id] = time.monotonic()
            self.poke()  # poll soon rather than at the next interval
            return False
        if self._applied_as_of > noticed:
            del self._absence_noticed[job_id]
            return True
        return False

    @property
    def settled(self) -> bool:
        """False while an ambiguous submit has not yet been checked by a later poll."""
        if self._uncertain_since is None:
            return True
        if self._last_poll_started > self._uncertain_since:
            self._uncertain_since = None
            return True
        return False

    def poke(self) -> None:
        """Poll now, then briefly often: right after a submit or cancel, Slurm acts within a second or two,
        and a bind should not wait a whole interval for it. (Unchanged answers are 304s costing ~3 ms.)"""
        self._fast_until = time.monotonic() + FAST_POLL_WINDOW
        self._poll_wanted = True
        self._wake.set()

    # ---- polling ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """The full-list polls and, where Slurm can say the state of only some jobs, the watch of the
        jobs just submitted or ended, side by side."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._poll_loop())
            if self._states is not None:
                tasks.create_task(self._watch_loop())

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            failed_before = failures
            failures = await self._poll(failures)
            if failures > failed_before or failures < 0:  # it waited already (backoff, a held list)
                failures = max(failures, 0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._pause())

    async def _watch_loop(self) -> None:
        while True:
            self._watch_wake.clear()
            watching = self._watching()
            # Fail closed: while the full list fails or is not believed, nothing read beside it is acted on.
            if watching and self.healthy:
                await self._check_watched()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch_wake.wait(), timeout=WATCH_INTERVAL if watching else None)

    def _interval(self) -> float:
        fast = time.monotonic() < self._fast_until
        return min(FAST_POLL_INTERVAL, self._poll_interval) if fast else self._poll_interval

    def _pause(self) -> float:
        return max(0.0, self._interval() - (time.monotonic() - self._last_poll_try))

    async def _poll(self, failures: int) -> int:
        """One full-list poll; returns the failures in a row, or -1 when it waited before a second read."""
        self._poll_wanted = False
        started = time.monotonic()
        self._last_poll_try = started
        full = (
            self._held_back is not None
            or self._next_update is None
            or full_relist_due(started, self._last_full, self._full_relist_seconds)
        )
        try:
            answer = await self._slurm.list_jobs(update_time=None if full else self._next_update)
        except SlurmError as error:
            failures += 1
            self.healthy = False
            self.last_error = str(error)
            self._metrics.errors.inc()
            delay = min(self._max_backoff, self._poll_interval * 2 ** min(failures, 6))
            log.warning("Slurm job poll failed (%d in a row, next try in %.1fs): %s", failures, delay, error)
            await asyncio.sleep(delay)
            return failures
        self._metrics.poll_seconds.observe(time.monotonic() - started)
        if full:
            self._last_full = started
            if self._next_update is not None and self._held_back is None:
                self._metrics.full_relists.inc()
        if answer.not_modified:
            # (a submit is a change, so this never speaks about a provisional job)
            self._next_update = answer.next_update_time
            self._applied_as_of = started
            self._metrics.polls.labels("not_modified").inc()
        else:
            verdict = await self._believe(answer.jobs, poll_started=started)
            if verdict is not _Verdict.BELIEVE:
                self._metrics.polls.labels("changed").inc()
                # Keep the index and the cursor; read the full list again (soon, the first time).
                # A list not believed showed nothing: an uncertain submit stays uncertain.
                soon = verdict is _Verdict.RE_READ
                await asyncio.sleep(
                    min(FAST_POLL_INTERVAL, self._poll_interval) if soon else self._poll_interval
                )
                self._poll_wanted = True
                return -1
            self._next_update = answer.next_update_time
            changed = self._replace(answer.jobs, poll_started=started)
            # "repeated": a full list with no job changed (Slurm re-sends a change made in the second
            # the cursor names; a bump of its update time that no job shows looks the same).
            self._metrics.polls.labels("changed" if changed or full else "repeated").inc()
            self._applied_as_of = started
        self._last_poll_started = started
        self.healthy = True
        self.last_error = None
        if not self._synced.is_set():
            self._synced.set()
        return 0

    # ---- watching the jobs just submitted (REST v0.0.42+) -----------------------------------------

    def _watching(self) -> bool:
        if self._states is None or not self._watch or not self._synced.is_set():
            return False
        now = time.monotonic()
        for job_id, watched in list(self._watch.items()):
            if now - watched.since > WATCH_SECONDS:
                del self._watch[job_id]
        return bool(self._watch)

    async def _check_watched(self) -> None:
        """Ask Slurm about only the watched jobs; read a job whose state moved on (out of PENDING after a
        submit, or finished after we ended it), alone, and apply it. Any failure hands them back to the
        full-list polls (poked, so without delay)."""
        assert self._states is not None
        ids = sorted(self._watch)
        self._metrics.state_checks.inc()
        try:
            asked_at = time.monotonic()
            states = await self._states.job_states(ids)
            for job_id in ids:
                watched = self._watch.get(job_id)
                if watched is None:
                    continue
                state = states.get(job_id)
                if state is None or not _moved_on(state, watched):
                    continue
                known = self._jobs.get(job_id)
                if known is not None and known.state is state:
                    del self._watch[job_id]  # a full list already brought it
                    continue
                job = await self._states.get_job(job_id)
                log.debug(
                    "watched job %d is %s, read alone (%.2fs after we %s it)",
                    job_id,
                    job.state.value,
                    time.monotonic() - watched.since,
                    "ended" if watched.until_finished else "submitted",
                )
                self._upsert(job, read_at=asked_at)
                self._watch.pop(job_id, None)
        except SlurmError as error:
            log.info("asking Slurm about %d watched jobs failed (%s); polling the job list", len(ids), error)
            self._watch.clear()
            self.poke()

    def _upsert(self, job: Job, *, read_at: float) -> None:
        """One job as Slurm just said it, read after its submit: it replaces the provisional entry (unless
        a full list that began after this read was applied meanwhile: that one is newer)."""
        if read_at < self._applied_as_of:
            return
        before = self._jobs.get(job.job_id)
        self._provisional.pop(job.job_id, None)
        self._read_alone[job.job_id] = read_at
        if before == job:
            return
        if before is not None:
            self._unindex(before)
        self._jobs[job.job_id] = job
        self._index(job)
        self._listed_stale = True
        if (key := self._pod_key_of(job)) is not None:
            self._on_change(key)
        if self._on_gang_change is not None and (gang := self._gang_key_of(job)) is not None:
            self._on_gang_change(gang)

    async def _believe(self, jobs: Sequence[Job], *, poll_started: float) -> _Verdict:
        """Whether a full list may replace the index: not when it drops many of our active jobs at once,
        until a second read agrees AND the missing jobs, looked up one by one, are really gone. (A job
        read alone after the list began, e.g. one just submitted, is not missing from it.)"""
        known = {
            job_id: job for job_id, job in self._jobs.items() if not self._read_since(job_id, poll_started)
        }
        check = check_vanished(known, {job.job_id for job in jobs}, self._is_ours, share=self._vanish_share)
        held, self._held_back = self._held_back, None
        if held is None:
            if not check.suspicious:
                return _Verdict.BELIEVE
            log.warning(
                "Slurm's job list drops %s at once; keeping the job index and reading the list again "
                "before acting on it",
                check.describe(),
            )
            self._metrics.mass_vanish.labels("held").inc()
            self._held_back = check
            return _Verdict.RE_READ
        if not check.suspicious:
            log.warning(
                "a second read of Slurm's job list does not confirm the first (%s); the first is ignored",
                held.describe(),
            )
            self._metrics.mass_vanish.labels("refuted").inc()
            return _Verdict.BELIEVE
        still_there = await self._still_there(check.vanished[:VANISH_LOOKUPS])
        if still_there is None:
            log.warning("a second read of Slurm's job list confirms: %s; accepting it", check.describe())
            self._metrics.mass_vanish.labels("confirmed").inc()
            return _Verdict.BELIEVE
        # A list that omits jobs slurmctld still has is wrong (a proxy, a broken or foreign slurmrestd):
        # acting on it would delete every bound pod. Keep the index and keep checking.
        self._metrics.mass_vanish.labels("refuted").inc()
        self._held_back = check
        self.healthy = False
        self.last_error = f"Slurm's job list drops {check.describe()}, but {still_there}; not believed"
        log.warning("%s", self.last_error)
        return _Verdict.DISTRUST

    async def _still_there(self, job_ids: Sequence[int]) -> str | None:
        """None when every job is gone (JobNotFound), else what shows one is not (or may not be)."""
        for job_id in job_ids:
            try:
                job = await self._slurm.get_job(job_id)
            except JobNotFound:
                continue
            except SlurmError as error:
                return f"looking up job {job_id} failed ({error})"
            return f"job {job_id} is still there ({job.state.value})"
        return None

    def _read_since(self, job_id: int, poll_started: float) -> bool:
        """Whether the watch read job `job_id` alone after a list that began at `poll_started`."""
        return self._read_alone.get(job_id, float("-inf")) > poll_started

    def _is_ours(self, job: Job) -> bool:
        return self._pod_key_of(job) is not None or self._gang_key_of(job) is not None

    def count_orphan_cancel_failure(self) -> None:
        self._metrics.orphan_cancel_failures.inc()

    def _replace(self, jobs: Iterable[Job], *, poll_started: float) -> int:
        """Apply a full list; returns how many jobs differ from the index. Only those are decoded and
        re-indexed: a list that repeats the last one (Slurm's 1 s `update_time` resolution sends every
        change at least twice) costs a comparison per job, nothing more."""
        fresh = {job.job_id: job for job in jobs}
        for job_id in list(self._read_alone):
            if self._read_since(job_id, poll_started) and job_id in self._jobs:
                fresh[job_id] = self._jobs[job_id]  # read alone after this list began: newer
            else:
                del self._read_alone[job_id]
        changed_keys: set[str] = set()
        changed_gangs: set[str] = set()
        changed = 0
        for job_id in self._jobs.keys() | fresh.keys():
            before, after = self._jobs.get(job_id), fresh.get(job_id)
            if before == after:
                continue
            changed += 1
            for job in (before, after):
                if job is not None and (key := self._pod_key_of(job)) is not None:
                    changed_keys.add(key)
                if job is not None and (gang := self._gang_key_of(job)) is not None:
                    changed_gangs.add(gang)
            if before is not None:
                self._unindex(before)
            if after is not None:
                self._index(after)
        if changed or self._listed is None or self._listed_stale:
            self._jobs = fresh
            self._listed = tuple(fresh.values())
            self._listed_stale = False
        self._expire_provisional(poll_started, seen=set(fresh))
        self._metrics.jobs.set(len(fresh))
        self._metrics.bridge_jobs.set(len(self._markers) + sum(len(ids) for ids in self._by_gang.values()))
        for key in sorted(changed_keys):
            self._on_change(key)
        if self._on_gang_change is not None:
            for gang in sorted(changed_gangs):
                self._on_gang_change(gang)
        return changed

    def _index(self, job: Job) -> None:
        marker = self._marker_of(job)
        if marker is not None:
            self._markers[job.job_id] = marker
            self._by_pod[f"{marker.namespace}/{marker.pod_name}"].add(job.job_id)
        elif (gang := self._gang_key_of(job)) is not None:
            self._by_gang[gang].add(job.job_id)
        else:
            return
        if not job.state.is_finished:
            for node in job.nodes:
                self._by_node[node].add(job.job_id)

    def _unindex(self, job: Job) -> None:
        marker = self._markers.pop(job.job_id, None)
        if marker is not None:
            _discard(self._by_pod, f"{marker.namespace}/{marker.pod_name}", job.job_id)
        elif (gang := self._gang_key_of(job)) is not None:
            _discard(self._by_gang, gang, job.job_id)
        for node in job.nodes:
            _discard(self._by_node, node, job.job_id)

    def _expire_provisional(self, poll_started: float, *, seen: set[int]) -> None:
        # A poll that began after the submit either lists the job (now known for real) or proves it is
        # gone; a poll that began before it says nothing about it.
        for job_id, entry in list(self._provisional.items()):
            if job_id in seen or entry.recorded_at < poll_started:
                if job_id not in seen:
                    log.info("submitted job %d was not listed by a later poll; forgetting it", job_id)
                del self._provisional[job_id]

    def _marker_of(self, job: Job) -> JobMarker | None:
        if self._owners is not None and job.user_name is not None and job.user_name not in self._owners:
            return None
        return decode_marker(job.comment, self._cluster_id)

    def _pod_key_of(self, job: Job) -> str | None:
        marker = self._marker_of(job)
        return f"{marker.namespace}/{marker.pod_name}" if marker is not None else None

    def _gang_key_of(self, job: Job) -> str | None:
        if self._owners is not None and job.user_name is not None and job.user_name not in self._owners:
            return None
        marker = decode_gang_marker(job.comment, self._cluster_id)
        return str(marker.gang_key) if marker is not None else None


def _moved_on(state: JobState, watched: _Watched) -> bool:
    return state.is_finished if watched.until_finished else state is not JobState.PENDING


def _discard(index: dict[str, set[int]], key: str, job_id: int) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(job_id)
        if not ids:
            del index[key]


class _CacheMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.polls = Counter(
            "slurm_bridge_job_polls_total",
            "Polls of slurmrestd's job list, by answer (not_modified: HTTP 304 / nothing changed; changed: "
            "a full list with some job changed, or a relist; repeated: a full list with no job changed).",
            ["answer"],
            registry=registry,
        )
        self.errors = Counter(
            "slurm_bridge_job_poll_errors_total", "Job-list polls that failed.", registry=registry
        )
        self.poll_seconds = Histogram(
            "slurm_bridge_job_poll_duration_seconds",
            "Time one job-list poll took.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.jobs = Gauge("slurm_bridge_slurm_jobs", "Jobs slurmctld lists (all users).", registry=registry)
        self.bridge_jobs = Gauge(
            "slurm_bridge_placeholder_jobs", "Jobs carrying this bridge's marker.", registry=registry
        )
        self.full_relists = Counter(
            "slurm_bridge_job_full_relists_total",
            "Job-list polls made without update_time as a safety net (the periodic full relist).",
            registry=registry,
        )
        self.mass_vanish = Counter(
            "slurm_bridge_job_list_mass_vanish_total",
            "Full job lists that dropped many of the bridge's active jobs at once, by outcome "
            "(held: kept the index and read again; confirmed: a second read agreed and the missing jobs are "
            "gone; refuted: it did not, or a missing job is still there).",
            ["outcome"],
            registry=registry,
        )
        self.state_checks = Counter(
            "slurm_bridge_job_state_checks_total",
            "Asks for the state of only the jobs just submitted (REST v0.0.42+ jobs/state), between polls.",
            registry=registry,
        )
        self.orphan_cancel_failures = Counter(
            "slurm_bridge_orphan_cancel_failures_total",
            "Cancels of orphaned jobs that Slurm failed (retried on the next sweep).",
            registry=registry,
        )
