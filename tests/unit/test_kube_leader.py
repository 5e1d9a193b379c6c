"""Leader election against an in-memory Lease store with compare-and-swap, on short real durations."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Mapping
from typing import Any

import pytest

from kube_client import (
    LEASES,
    AlreadyExists,
    Conflict,
    KubeObject,
    KubeTransportError,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLost,
    NotFound,
    ResourceRef,
)

FAST = {"lease_duration": 0.6, "renew_deadline": 0.4, "retry_period": 0.05}


class FakeLeaseStore:
    """Leases by name; every write bumps resourceVersion and rejects a stale one (like the API server)."""

    def __init__(self) -> None:
        self.leases: dict[str, KubeObject] = {}
        self.version = 0
        self.fail_writes_from: set[str] = set()  # identities whose writes fail (partitioned)
        self.failing_writes = 0  # the next N writes fail with an error that says nothing
        self.hanging_writes = 0  # the next N writes land, but their answer never comes

    def _stamp(self, body: Mapping[str, Any]) -> KubeObject:
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        return stored

    async def get(
        self, ref: ResourceRef, name: str, *, namespace: str | None = None, subresource: str | None = None
    ) -> KubeObject:
        assert ref == LEASES
        await asyncio.sleep(0)
        if name not in self.leases:
            raise NotFound(404, "NotFound", f'leases "{name}" not found')
        return copy.deepcopy(self.leases[name])

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject:
        await asyncio.sleep(0)
        self._check_partition(body)
        name = body["metadata"]["name"]
        if name in self.leases:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        self.leases[name] = self._stamp(body)
        return copy.deepcopy(self.leases[name])

    async def replace(
        self,
        ref: ResourceRef,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> KubeObject:
        await asyncio.sleep(0)
        self._check_partition(body)
        current = self.leases[name]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        self.leases[name] = self._stamp(body)
        if self.hanging_writes:
            self.hanging_writes -= 1
            await asyncio.sleep(60)
        return copy.deepcopy(self.leases[name])

    def _check_partition(self, body: Mapping[str, Any]) -> None:
        if self.failing_writes:
            self.failing_writes -= 1
            raise KubeTransportError("")
        writer = (body.get("spec") or {}).get("holderIdentity")
        if writer in self.fail_writes_from or (not writer and self.fail_writes_from):
            raise KubeTransportError("network partition")

    def holder(self, name: str = "bridge") -> str | None:
        lease = self.leases.get(name)
        return None if lease is None else lease["spec"].get("holderIdentity")


def elector(store: FakeLeaseStore, identity: str, **overrides: Any) -> LeaderElector:
    config = LeaderElectionConfig(
        lease_name="bridge", namespace="kube-system", identity=identity, **{**FAST, **overrides}
    )
    return LeaderElector(store, config)


@pytest.mark.parametrize(
    "durations",
    [
        pytest.param(
            {"lease_duration": 10, "renew_deadline": 10, "retry_period": 2}, id="deadline-not-below-lease"
        ),
        pytest.param(
            {"lease_duration": 10, "renew_deadline": 5, "retry_period": 5}, id="retry-not-below-deadline"
        ),
        pytest.param({"lease_duration": 10, "renew_deadline": 5, "retry_period": 0}, id="zero-retry"),
    ],
)
def test_config_rejects_unsafe_durations(durations: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retry_period"):
        LeaderElectionConfig(
            lease_name="l",
            namespace="n",
            identity="a",
            lease_duration=durations["lease_duration"],
            renew_deadline=durations["renew_deadline"],
            retry_period=durations["retry_period"],
        )


async def test_first_elector_creates_the_lease_and_leads() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")
    async with a.leading():
        assert a.is_leader
        assert store.holder() == "a"
        spec = store.leases["bridge"]["spec"]
        assert spec["leaseDurationSeconds"] == 1  # ceil(0.6)
        assert spec["leaseTransitions"] == 0
    assert not a.is_leader
    assert not store.holder()  # released


async def test_follower_waits_and_takes_over_on_release() -> None:
    store = FakeLeaseStore()
    a, b = elector(store, "a"), elector(store, "b")
    b_leads = asyncio.Event()

    async def follower() -> None:
        async with b.leading():
            b_leads.set()
            await asyncio.sleep(0.05)

    async with a.leading():
        follower_task = asyncio.create_task(follower())
        await asyncio.sleep(0.3)
        assert not b_leads.is_set()
        assert not b.is_leader
        assert b.observed_holder == "a"
        released_at = time.monotonic()
    async with asyncio.timeout(2):
        await b_leads.wait()
    assert time.monotonic() - released_at < 0.3  # a release hands over without waiting for expiry
    await follower_task
    assert store.leases["bridge"]["spec"]["leaseTransitions"] == 1


async def test_follower_takes_over_only_after_a_dead_leader_lease_expires() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a", release_on_exit=False)
    b = elector(store, "b")
    await a.acquire()  # "a" becomes leader, then dies: nothing renews the lease
    died_at = time.monotonic()
    async with asyncio.timeout(3):
        await b.acquire()
    # lease_duration 0.6 s rounds up to 1 s in the Lease; b first observed the record right after.
    assert time.monotonic() - died_at >= 1.0
    assert store.holder() == "b"


async def test_two_electors_never_lead_at_once() -> None:
    store = FakeLeaseStore()
    intervals: list[tuple[str, float, float]] = []

    async def contend(identity: str, rounds: int) -> None:
        candidate = elector(store, identity)
        for _ in range(rounds):
            async with candidate.leading():
                began = time.monotonic()
                await asyncio.sleep(0.03)
                intervals.append((identity, began, time.monotonic()))

    async with asyncio.timeout(20):
        await asyncio.gather(contend("a", 4), contend("b", 4), contend("c", 4))
    intervals.sort(key=lambda interval: interval[1])
    for (_, _, end), (_, begin, _) in itertools.pairwise(intervals):
        assert begin >= end
    assert len(intervals) == 12


async def test_losing_the_lease_cancels_the_leading_work() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")
    work_cancelled = asyncio.Event()
    lost_from = 0.0

    async def lead_then_get_partitioned() -> None:
        nonlocal lost_from
        async with a.leading():
            store.fail_writes_from.add("a")  # renewals fail from now on
            lost_from = time.monotonic()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                work_cancelled.set()
                raise

    with pytest.raises(LeadershipLost):
        await lead_then_get_partitioned()
    assert work_cancelled.is_set()
    assert not a.is_leader
    assert 0.3 <= time.monotonic() - lost_from < 0.6  # about renew_deadline, well before lease_duration


async def test_someone_else_holding_the_lease_is_a_loss_right_away() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")
    started = 0.0

    async def lead_then_get_overwritten() -> None:
        nonlocal started
        async with a.leading():
            lease = store.leases["bridge"]
            lease["spec"]["holderIdentity"] = "intruder"  # e.g. an operator edited the Lease
            lease["metadata"]["resourceVersion"] = "999"
            started = time.monotonic()
            await asyncio.sleep(10)

    with pytest.raises(LeadershipLost, match="taken by 'intruder'"):
        await lead_then_get_overwritten()
    assert time.monotonic() - started < 0.3


async def test_run_returns_the_work_result_and_releases() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")

    async def work() -> str:
        return "done"

    assert await a.run(work) == "done"
    assert not store.holder()


async def test_an_outside_cancel_is_not_reported_as_lost_leadership() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")
    entered = asyncio.Event()

    async def lead() -> None:
        async with a.leading():
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(lead())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store.holder()  # released on the way out


async def test_work_that_ends_with_an_error_still_releases() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")
    with pytest.raises(RuntimeError, match="bug"):
        async with a.leading():
            raise RuntimeError("bug")
    assert not store.holder()


def block_the_loop(seconds: float) -> None:
    """What a synchronous parse of a big answer does to every other task."""
    time.sleep(seconds)


async def test_a_renewal_that_fails_once_is_retried_before_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One retry period fits in the renew deadline: the failed renewal must be retried sooner.
    store = FakeLeaseStore()
    a = elector(store, "a", lease_duration=0.8, renew_deadline=0.5, retry_period=0.3)
    async with a.leading():
        store.failing_writes = 1
        await asyncio.sleep(1.5)
        assert a.is_leader
    assert "renewing lease failed (retrying until the deadline): KubeTransportError" in caplog.text


async def test_a_loop_blocked_past_the_renew_deadline_keeps_a_lease_still_held() -> None:
    # A synchronous parse of a big answer blocks the loop longer than the renew deadline (but less
    # than the lease): nobody can have taken the Lease, and the late renewal proves it.
    store = FakeLeaseStore()
    a = elector(store, "a", lease_duration=1.0)
    async with a.leading():
        block_the_loop(FAST["renew_deadline"] + 0.1)
        await asyncio.sleep(0.3)
        assert a.is_leader
        assert store.holder() == "a"


async def test_a_late_renewal_that_hangs_is_given_up_before_the_lease_expires() -> None:
    # The API server stops answering after a blocked loop overran the renew deadline: the leader stops
    # well before a follower may take the Lease over (at lease_duration).
    store = FakeLeaseStore()
    a = elector(store, "a", lease_duration=1.0)
    started = 0.0

    async def hang(*_args: Any, **_kw: Any) -> KubeObject:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    async def lead_then_block() -> None:
        nonlocal started
        async with a.leading():
            started = time.monotonic()
            block_the_loop(FAST["renew_deadline"] + 0.05)
            store.get = hang  # type: ignore[method-assign]
            await asyncio.sleep(10)

    with pytest.raises(LeadershipLost, match="not renewed"):
        await lead_then_block()
    assert time.monotonic() - started < 1.0


async def test_a_lease_taken_while_the_loop_was_blocked_is_lost() -> None:
    store = FakeLeaseStore()
    a = elector(store, "a")

    async def lead_then_block() -> None:
        async with a.leading():
            block_the_loop(FAST["lease_duration"] + 0.1)
            lease = store.leases["bridge"]
            lease["spec"]["holderIdentity"] = "b"  # a follower took the expired Lease meanwhile
            lease["metadata"]["resourceVersion"] = "999"
            await asyncio.sleep(10)

    with pytest.raises(LeadershipLost, match="taken by 'b'"):
        await lead_then_block()
    assert not a.is_leader


async def test_a_renewal_whose_answer_never_comes_is_retried_before_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The reported symptom: a renewal landed but its answer was lost; the leader waited out the whole
    # deadline on it and then gave up a Lease that still named it ("holder now '<itself>'").
    store = FakeLeaseStore()
    a = elector(store, "a", lease_duration=1.2, renew_deadline=0.8, retry_period=0.1)
    async with a.leading():
        store.hanging_writes = 1
        await asyncio.sleep(1.5)
        assert a.is_leader
        assert store.holder() == "a"
    assert "no answer within" in caplog.text
    assert "past the renew deadline" not in caplog.text  # retried in time, not rescued late
