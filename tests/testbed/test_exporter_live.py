"""The exporter against the real testbed clusters (22.05 / 24.11 / 26.05), one run per version.

Each test reads Slurm through the exporter and checks the numbers against the testbed's fixed shape
(partition slurm-bridge: 4 nodes, 4 CPUs and 8 GiB each, 2 GPUs on slurm-bridge-[2-3]) and against
Slurm's own CLI. Other tests use the same clusters at the same time, so nothing here depends on how
many jobs exist or which nodes are busy. The one job a test submits is held (it never runs), named
`exp-live-*`, and cancelled when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter import DEFAULT_DEMAND_REASONS, Exporter, Snapshot, snapshot_families
from exporter._collector import HELD_REASONS
from slurm_client import Job, JobNotFound, JobSpec, JobState, JwtKeyAuth, SlurmClient
from tests.testbed_env import SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio(loop_scope="session")]

GIB = 1 << 30
BASE_STATES = ("alloc", "idle", "mixed", "down", "future", "unknown")


@contextlib.asynccontextmanager
async def client_for(cluster: SlurmCluster) -> AsyncIterator[SlurmClient]:
    async with SlurmClient(cluster.url, auth=JwtKeyAuth(cluster.user, cluster.jwt_key_file)) as slurm:
        yield slurm


@contextlib.asynccontextmanager
async def held_job(slurm: SlurmClient, cluster: SlurmCluster) -> AsyncIterator[int]:
    spec = JobSpec(
        name=f"exp-live-{uuid.uuid4().hex[:8]}",
        partition=cluster.partition,
        time_limit_minutes=1,
        hold=True,
        script="#!/bin/sh\nsleep 30\n",
    )
    job_id = (await slurm.submit_job(spec)).job_id
    try:
        yield job_id
    finally:
        with contextlib.suppress(JobNotFound):
            await slurm.cancel_job(job_id)


async def refresh_until_listed(exporter: Exporter, job_id: int, within: float = 10.0) -> Job:
    deadline = time.monotonic() + within
    while True:
        assert await exporter.poller.refresh(), exporter.poller.status.last_error
        snapshot = exporter.poller.status.snapshot
        assert snapshot is not None
        for job in snapshot.jobs:
            if job.job_id == job_id and job.state is JobState.PENDING and job.state_reason in HELD_REASONS:
                return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} not seen pending and held within {within} s")
        await asyncio.sleep(0.3)


async def test_exporter_reads_the_cluster(slurm_cluster: SlurmCluster) -> None:
    registry = CollectorRegistry()
    part = {"partition": slurm_cluster.partition}

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    async with (
        client_for(slurm_cluster) as slurm,
        held_job(slurm, slurm_cluster) as job_id,
        Exporter(slurm, registry=registry, interval=1.0) as exporter,
    ):
        job = await refresh_until_listed(exporter, job_id)
        assert sample("slurm_exporter_up") == 1

        # the testbed's fixed shape
        assert sample("slurm_partition_nodes", **part) == 4
        assert sum(sample(f"slurm_partition_nodes_{state}", **part) or 0 for state in BASE_STATES) == 4
        assert sample("slurm_partition_cpus", **part) == 16
        assert sample("slurm_partition_gpus", **part) == 4
        assert sample("slurm_partition_nodes_memory_bytes", **part) == 4 * 8 * GIB
        for node in slurm_cluster.nodes:
            assert sample("slurm_node_cpus", node=node) == 4
            assert sample("slurm_node_memory_bytes", node=node) == 8 * GIB
            assert sample("slurm_node_gpus", node=node) == (2 if node in slurm_cluster.gpu_nodes else 0)
        alloc = sample("slurm_partition_nodes_cpus_alloc", **part)
        idle = sample("slurm_partition_nodes_cpus_idle", **part)
        assert alloc is not None and idle is not None and alloc + idle == 16

        # the held job, under its reason; Slurm's own CLI gives the same reason
        reason = job.state_reason
        assert reason is not None
        assert (sample("slurm_partition_jobs_pending_by_reason", **part, reason=reason) or 0) >= 1
        assert (sample("slurm_partition_jobs_hold", **part) or 0) >= 1
        assert (sample("slurm_partition_jobs_pending", **part) or 0) >= 1
        squeue_reason = slurm_cluster.cli("squeue", "-h", "-j", str(job_id), "-o", "%r").strip()
        assert squeue_reason == reason
        # the same snapshot without the held job: one job less under its reason, and no less demand
        # (a held job needs a release, not nodes)
        snapshot = exporter.poller.status.snapshot
        assert snapshot is not None
        without = replace(snapshot, jobs=tuple(j for j in snapshot.jobs if j.job_id != job_id))
        with_job, without_job = (
            {
                (s.name, frozenset(s.labels.items())): s.value
                for f in snapshot_families(snap)
                for s in f.samples
            }
            for snap in (snapshot, without)
        )
        by_reason = ("slurm_partition_jobs_pending_by_reason", frozenset({**part, "reason": reason}.items()))
        assert with_job[by_reason] - without_job.get(by_reason, 0) == 1
        demanded = ("slurm_partition_nodes_demanded", frozenset(part.items()))
        assert with_job[demanded] == without_job[demanded]

        # scheduler statistics every version reports
        assert (sample("slurm_server_thread_cnt") or 0) >= 1
        assert sample("slurm_sdiag_jobs_submitted") is not None
        assert sample("slurm_scheduler_cycle_mean_seconds") is not None

        # sinfo agrees on the partition's CPUs: "allocated/idle/other/total"
        total_cpus = slurm_cluster.cli("sinfo", "-h", "-p", slurm_cluster.partition, "-o", "%C").strip()
        assert total_cpus.split("/")[-1] == "16"


def samples_of(snapshot: Snapshot) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in snapshot_families(snapshot) for s in f.samples
    }


async def test_a_small_job_counts_as_demand(slurm_cluster: SlurmCluster) -> None:
    """One 1-CPU job: running, it holds its node; pending for nodes, it asks for one. Judged on one
    snapshot with and without the job, so other tests' jobs cannot move the numbers."""
    registry = CollectorRegistry()
    part = frozenset({("partition", slurm_cluster.partition)})
    spec = JobSpec(
        name=f"exp-live-{uuid.uuid4().hex[:8]}",
        partition=slurm_cluster.partition,
        time_limit_minutes=1,
        tasks=1,
        cpus_per_task=1,
        memory_per_node_mb=64,
        script="#!/bin/sh\nsleep 30\n",
    )
    async with (
        client_for(slurm_cluster) as slurm,
        Exporter(slurm, registry=registry, interval=1.0) as exporter,
    ):
        job_id = (await slurm.submit_job(spec)).job_id
        try:
            deadline = time.monotonic() + 8.0
            while True:
                assert await exporter.poller.refresh(), exporter.poller.status.last_error
                snapshot = exporter.poller.status.snapshot
                assert snapshot is not None
                job = next((j for j in snapshot.jobs if j.job_id == job_id), None)
                if job is not None and (job.state is JobState.RUNNING or time.monotonic() > deadline):
                    break
                await asyncio.sleep(0.3)
        finally:
            with contextlib.suppress(JobNotFound):
                await slurm.cancel_job(job_id)
    assert job is not None
    with_job = samples_of(snapshot)
    without_job = samples_of(replace(snapshot, jobs=tuple(j for j in snapshot.jobs if j.job_id != job_id)))
    demanded = ("slurm_partition_nodes_demanded", part)
    added = with_job[demanded] - without_job[demanded]
    if job.state is JobState.RUNNING:
        assert len(job.nodes) == 1
        node = job.nodes[0]
        assert node in slurm_cluster.nodes
        assert added in (0, 1)  # 0 when another running job of the partition shares its node
        held = {
            n for j in snapshot.jobs if j.job_id != job_id and j.state is JobState.RUNNING for n in j.nodes
        }
        assert added == (0 if node in held else 1)
        cpus = ("slurm_partition_jobs_cpus_alloc", part)
        assert with_job[cpus] - without_job[cpus] == job.cpus == 1
        assert (with_job[("slurm_node_cpus_alloc", frozenset({("node", node)}))] or 0) >= 1
    else:  # the partition was busy: pending, it is demand exactly when it waits for nodes
        assert job.state is JobState.PENDING
        waits_for_nodes = (job.state_reason or "None") in DEFAULT_DEMAND_REASONS
        assert added == (1 if waits_for_nodes else 0)


def successes(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("slurm_exporter_refreshes_total", {"result": "success"}) or 0


async def test_metrics_served_over_http(slurm_cluster: SlurmCluster) -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    async with client_for(slurm_cluster) as slurm:
        exporter = Exporter(slurm, registry=registry, interval=0.5, listen="127.0.0.1:0")
        async with exporter:
            address = exporter.address
            assert address is not None
            task = asyncio.create_task(exporter.run(stop))
            try:
                async with asyncio.timeout(10):
                    while registry.get_sample_value("slurm_exporter_up") != 1:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                    # a second refresh, to see the update_time poll in the counters
                    while successes(registry) < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                async with httpx.AsyncClient() as http:
                    started = time.perf_counter()
                    reply = await http.get(f"http://127.0.0.1:{address[1]}/metrics")
                    elapsed = time.perf_counter() - started
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=15)
    assert reply.status_code == 200
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }
    part = frozenset({("partition", slurm_cluster.partition)})
    assert samples[("slurm_exporter_up", frozenset())] == 1
    assert samples[("slurm_partition_nodes", part)] == 4
    assert samples[("slurm_partition_cpus", part)] == 16
    polls = sum(v for (name, _), v in samples.items() if name == "slurm_exporter_job_polls_total")
    assert polls >= 2
    assert elapsed < 1.0  # served from the cache; the bench measures it properly


# REST v0.0.38 answers a token signed with another key with HTTP 500 and error -1: the client cannot
# tell it from any other failure there.
REFUSED_TOKEN_KIND = {"22.05": "api"}


async def test_refused_token_counts_as_an_auth_error(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    wrong_key = tmp_path / "jwt.key"
    wrong_key.write_bytes(os.urandom(32))
    registry = CollectorRegistry()
    # no `async with`: entering would discover the API version, and that read is refused too
    slurm = SlurmClient(slurm_cluster.url, auth=JwtKeyAuth(slurm_cluster.user, wrong_key))
    try:
        async with Exporter(slurm, registry=registry, interval=1.0) as exporter:
            assert await exporter.poller.refresh() is False
            assert registry.get_sample_value("slurm_exporter_up") == 0
            errors = {"operation": "nodes", "kind": REFUSED_TOKEN_KIND.get(slurm_cluster.version, "auth")}
            assert registry.get_sample_value("slurm_exporter_slurmrestd_errors_total", errors) == 1
            assert (
                registry.get_sample_value("slurm_partition_nodes", {"partition": slurm_cluster.partition})
                is None
            )
    finally:
        await slurm.aclose()
