"""Start-up latency histograms a site can alert on: created → submitted, job start → bound, created →
bound, for single pods and for gangs (controller/latency.py, observed by the pod and gang executors)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from controller.gangs import GangMetrics
from controller.latency import gang_created, seconds_between
from controller.pods import PodMetrics, PodReconciler
from slurm_client import JobState
from tests.fakes.kube import FakeCache, FakeEvents, FakeKube
from tests.fakes.slurm import FakeJobIndex, FakeSlurm
from tests.unit import test_gangs_executor as gangs
from tests.unit import test_pods_executor as pods

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "now", "expected"),
    [
        (T0, T0 + timedelta(seconds=1.5), 1.5),
        (T0.replace(tzinfo=None), T0 + timedelta(seconds=2), 2.0),
        (T0 + timedelta(seconds=1), T0, 0.0),
        (None, T0, None),
    ],
    ids=["aware", "naive-is-utc", "clock-skew-never-negative", "unknown"],
)
def test_seconds_between(since: datetime | None, now: datetime, expected: float | None) -> None:
    assert seconds_between(since, now) == expected


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([T0, T0 + timedelta(seconds=3), None], T0 + timedelta(seconds=3)),
        ([T0.replace(tzinfo=None)], T0),
        ([None], None),
        ([], None),
    ],
    ids=["newest-member", "naive-is-utc", "no-member-says", "no-members"],
)
def test_a_gang_is_created_when_its_newest_member_is(
    times: list[datetime | None], expected: datetime | None
) -> None:
    assert gang_created(times) == expected


def count(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(f"{name}_count") or 0.0


def total(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(f"{name}_sum") or 0.0


async def test_a_pod_observes_created_to_submitted_then_started_and_created_to_bound() -> None:
    registry = CollectorRegistry()
    created = datetime.now(UTC) - timedelta(seconds=30)
    pod = pods.raw_pod()
    pod["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    jobs = FakeJobIndex("c1")
    reconciler = PodReconciler(
        pods.CONFIG,
        kube=FakeKube(),
        slurm=FakeSlurm(),
        pods=FakeCache([pod]),
        nodes=FakeCache([{"metadata": {"name": "node1", "labels": {}}}]),
        jobs=jobs,
        events=FakeEvents(),
        components=pods.BOTH,
        metrics=PodMetrics(registry),
    )
    await reconciler.reconcile(pods.KEY)
    assert count(registry, "slurm_bridge_pod_created_to_submitted_seconds") == 1
    assert total(registry, "slurm_bridge_pod_created_to_submitted_seconds") >= 29
    running = pods.job(JobState.RUNNING, job_id=101, nodes=("node1",)).model_copy(
        update={"start_time": datetime.now(UTC) - timedelta(seconds=2)}
    )
    jobs.jobs = [running]
    labelled = copy.deepcopy(pod)
    labelled["metadata"]["labels"]["scheduler.slinky.slurm.net/slurm-jobid"] = "101"
    reconciler._pods = FakeCache([labelled])
    await reconciler.reconcile(pods.KEY)
    assert count(registry, "slurm_bridge_job_started_to_pod_bound_seconds") == 1
    assert 1 <= total(registry, "slurm_bridge_job_started_to_pod_bound_seconds") < 29
    assert count(registry, "slurm_bridge_pod_created_to_bound_seconds") == 1
    assert total(registry, "slurm_bridge_pod_created_to_bound_seconds") >= 29


async def test_a_gang_observes_from_its_newest_member_and_its_jobs_start() -> None:
    registry = CollectorRegistry()
    members = [gangs.raw_pod("w-0"), gangs.raw_pod("w-1")]
    for pod, age in zip(members, (60, 20), strict=True):
        pod["metadata"]["creationTimestamp"] = (gangs.NOW - timedelta(seconds=age)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    h = gangs.Harness(members, [gangs.raw_group()])
    h.reconciler._metrics = GangMetrics(registry)
    await h.reconciler.reconcile(gangs.KEY)
    assert count(registry, "slurm_bridge_gang_created_to_submitted_seconds") == 1
    assert total(registry, "slurm_bridge_gang_created_to_submitted_seconds") == 20  # the newest member
    spec = h.slurm.submitted[0]
    h.slurm_says(h.running(spec).model_copy(update={"start_time": gangs.NOW - timedelta(seconds=3)}))
    for pod in members:
        pod["metadata"]["labels"]["scheduler.slinky.slurm.net/slurm-jobid"] = "101"
    h.pods.cache.update({f"ml/{p['metadata']['name']}": p for p in members})
    await h.reconciler.reconcile(gangs.KEY)
    assert h.kube.of("bind")
    assert total(registry, "slurm_bridge_gang_job_started_to_bound_seconds") == 3
    assert total(registry, "slurm_bridge_gang_created_to_bound_seconds") == 20
    assert count(registry, "slurm_bridge_gang_created_to_bound_seconds") == 1
