"""The collector as tables: a snapshot in, exact samples out; freshness decides what is served."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from exporter import (
    CollectorOptions,
    PollerStatus,
    SlurmCollector,
    Snapshot,
    health_families,
    snapshot_families,
)
from exporter._collector import gpu_count, job_partitions, job_state_keys, node_state_keys
from slurm_client import Diag, Job, JobState, Node, NodeState, Partition

MIB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

Labels = frozenset[tuple[str, str]]


def node(name: str, state: NodeState = NodeState.IDLE, *flags: str, **fields: Any) -> Node:
    values: dict[str, Any] = {"cpus_total": 4, "memory_total_mb": 8192, "partitions": ("p1",)}
    values.update(fields)
    return Node(name=name, state=state, state_flags=frozenset(flags), **values)


def job(job_id: int, state: JobState, partition: str | None = "p1", **fields: Any) -> Job:
    return Job(job_id=job_id, name=f"j{job_id}", state=state, partition=partition, **fields)


def snapshot(
    jobs: Iterable[Job] = (),
    nodes: Iterable[Node] = (),
    partitions: Iterable[Partition] = (),
    diag: Diag | None = None,
    taken_monotonic: float = 100.0,
) -> Snapshot:
    return Snapshot(
        jobs=tuple(jobs),
        nodes=tuple(nodes),
        partitions=tuple(partitions),
        diag=diag or Diag(),
        taken_at=1_800_000_000.0,
        taken_monotonic=taken_monotonic,
    )


def samples(families: Iterable[Metric]) -> dict[tuple[str, Labels], float]:
    out: dict[tuple[str, Labels], float] = {}
    for family in families:
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = sample.value
    return out


def value(table: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    return table.get((name, frozenset(labels.items())))


# --- classification tables -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "flags", "keys"),
    [
        (NodeState.IDLE, (), ["idle"]),
        (NodeState.ALLOCATED, (), ["alloc"]),
        (NodeState.MIXED, (), ["mixed"]),
        (NodeState.DOWN, ("NOT_RESPONDING",), ["down", "no_resp"]),
        (NodeState.FUTURE, (), ["future"]),
        (NodeState.UNKNOWN, (), ["unknown"]),
        (NodeState.ERROR, (), []),
        (NodeState.IDLE, ("DRAIN",), ["idle", "drain", "drained"]),
        (NodeState.MIXED, ("DRAIN",), ["mixed", "draining"]),
        (NodeState.ALLOCATED, ("DRAIN",), ["alloc", "draining"]),
        (NodeState.IDLE, ("DRAIN", "COMPLETING"), ["idle", "cg", "draining"]),
        (NodeState.IDLE, ("CLOUD", "POWERED_DOWN"), ["idle", "cloud", "powered_down"]),
        (NodeState.IDLE, ("MAINTENANCE", "RESERVED"), ["idle", "maint", "resv"]),
        (
            NodeState.IDLE,
            ("REBOOT_REQUESTED", "REBOOT_ISSUED"),
            ["idle", "reboot_issued", "reboot_requested"],
        ),
        (NodeState.IDLE, ("DYNAMIC_NORM", "EXTERNAL"), ["idle", "external", "dyn_normal"]),
        (NodeState.IDLE, ("SOMETHING_NEW",), ["idle"]),
    ],
    ids=[
        "idle",
        "allocated",
        "mixed",
        "down-not-responding",
        "future",
        "unknown",
        "error-counts-in-no-base-state",
        "drained",
        "mixed-draining",
        "allocated-draining",
        "completing-draining",
        "cloud-powered-down",
        "maint-reserved",
        "reboot",
        "dynamic-external",
        "unknown-flag-ignored",
    ],
)
def test_node_state_keys(state: NodeState, flags: tuple[str, ...], keys: list[str]) -> None:
    assert node_state_keys(node("n", state, *flags)) == keys


@pytest.mark.parametrize(
    ("state", "flags", "reason", "keys"),
    [
        (JobState.PENDING, (), "Resources", ["pending", "all"]),
        (JobState.PENDING, (), "JobHeldUser", ["pending", "hold", "all"]),
        (JobState.PENDING, (), "JobHeldAdmin", ["pending", "hold", "all"]),
        (JobState.PENDING, ("REQUEUED",), "BeginTime", ["pending", "requeued", "all"]),
        (JobState.RUNNING, (), None, ["running", "started", "all"]),
        (JobState.RUNNING, ("CONFIGURING",), None, ["running", "started", "configuring", "all"]),
        (JobState.SUSPENDED, (), None, ["suspended", "started", "all"]),
        (JobState.COMPLETED, (), None, ["completed", "finished", "started"]),
        (
            JobState.CANCELLED,
            ("COMPLETING",),
            None,
            ["cancelled", "finished", "started", "completing", "all"],
        ),
        (JobState.FAILED, (), None, ["failed", "finished", "started"]),
        (JobState.TIMEOUT, (), None, ["timeout", "finished", "started"]),
        (JobState.NODE_FAIL, (), None, ["node_failed", "finished", "started"]),
        (JobState.PREEMPTED, (), None, ["preempted", "finished", "started"]),
        (JobState.BOOT_FAIL, (), None, ["bootfail", "finished", "started"]),
        (JobState.DEADLINE, (), None, ["deadline", "finished", "started"]),
        (JobState.OUT_OF_MEMORY, (), None, ["outofmemory", "finished", "started"]),
        # v0.0.38 shows a completing job as COMPLETING only: base unknown, still counted as a job
        (JobState.UNKNOWN, ("COMPLETING",), None, ["completing", "all"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_job_state_keys(state: JobState, flags: tuple[str, ...], reason: str | None, keys: list[str]) -> None:
    assert job_state_keys(job(1, state, state_flags=frozenset(flags), state_reason=reason)) == keys


@pytest.mark.parametrize(
    ("partition", "expected"),
    [("p1", ["p1"]), ("p1,p2", ["p1", "p2"]), (" p1 , ,p2", ["p1", "p2"]), ("", []), (None, [])],
    ids=["one", "several", "spaces-and-empties", "empty", "none"],
)
def test_job_partitions(partition: str | None, expected: list[str]) -> None:
    assert job_partitions(job(1, JobState.PENDING, partition=partition)) == expected


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ({}, 0),
        ({"gpu": 2}, 2),
        ({"gpu:a100": 2, "gpu:v100": 1}, 3),
        ({"gpu": 1, "nic": 4}, 1),
        ({"gpux": 3}, 0),
    ],
    ids=["none", "untyped", "typed", "other-gres", "not-a-gpu"],
)
def test_gpu_count(gres: dict[str, int], gpus: int) -> None:
    assert gpu_count(gres) == gpus


# --- a whole snapshot ------------------------------------------------------------------------------

# p1 = n1 n2 n3, p2 = n3 n4 + f1 (a FUTURE node slurmrestd does not list). n3 is in both.
PARTITIONS = (
    Partition(name="p1", nodes=("n1", "n2", "n3"), total_nodes=3, total_cpus=12),
    Partition(name="p2", nodes=("n3", "n4", "f1"), total_nodes=3, total_cpus=14),
)
NODES = (
    node("n1", NodeState.ALLOCATED, cpus_allocated=4, memory_allocated_mb=2048),
    node(
        "n2",
        NodeState.MIXED,
        cpus_allocated=1,
        memory_allocated_mb=1024,
        gres={"gpu": 2},
        gres_used={"gpu": 1},
    ),
    node("n3", NodeState.IDLE, "DRAIN", gres={"gpu:a100": 4}, gres_used={"gpu:a100": 0}),
    node("n4", NodeState.DOWN, "NOT_RESPONDING", cpus_total=2, memory_total_mb=4096),
)
JOBS = (
    job(1, JobState.RUNNING, nodes=("n1",), cpus=2, user_name="ann", account="phys"),
    job(2, JobState.RUNNING, nodes=("n1", "n2"), cpus=3, user_name="bob", account="phys"),
    job(3, JobState.PENDING, state_reason="Resources", node_count=2, user_name="ann", account="chem"),
    job(4, JobState.PENDING, state_reason="Priority", node_count=1, user_name="ann", account="chem"),
    job(5, JobState.PENDING, state_reason="JobHeldUser", node_count=3, user_name="bob", account="chem"),
    job(6, JobState.PENDING, state_reason=None, node_count=None, user_name="bob", account=None),
    job(7, JobState.PENDING, state_reason="BeginTime", node_count=1, user_name="bob", account="chem"),
    job(8, JobState.PENDING, partition="p1,p2", state_reason="Resources", node_count=1, user_name="cy"),
    job(9, JobState.COMPLETED, nodes=("n2",), cpus=1, user_name="cy"),
    job(10, JobState.CANCELLED, state_flags=frozenset({"COMPLETING"}), nodes=("n2",), cpus=1, user_name="cy"),
    job(11, JobState.RUNNING, partition="p2", nodes=("n3",), cpus=1, user_name="cy"),
    job(12, JobState.PENDING, partition="gone", state_reason="Resources", node_count=5, user_name="cy"),
    job(13, JobState.PENDING, partition="p2", state_reason="PartitionNodeLimit", node_count=9),
)
DIAG = Diag(
    server_thread_count=3,
    jobs_submitted=40,
    schedule_cycle_last_us=2500,
    schedule_cycle_mean_us=1000,
    bf_cycle_last_us=1_500_000,
    bf_cycle_mean_us=None,
    bf_backfilled_jobs=7,
)
FULL = snapshot(JOBS, NODES, PARTITIONS, DIAG)

EXPECTED: list[tuple[str, dict[str, str], float]] = [
    # nodes, cluster-wide (f1 is FUTURE, hidden)
    ("slurm_nodes", {}, 5),
    ("slurm_partitions", {}, 2),
    ("slurm_nodes_alloc", {}, 1),
    ("slurm_nodes_mixed", {}, 1),
    ("slurm_nodes_idle", {}, 1),
    ("slurm_nodes_down", {}, 1),
    ("slurm_nodes_future", {}, 1),
    ("slurm_nodes_drain", {}, 1),
    ("slurm_nodes_drained", {}, 1),
    ("slurm_nodes_draining", {}, 0),
    ("slurm_nodes_noresp", {}, 1),
    ("slurm_nodes_completing", {}, 0),
    # nodes, per partition
    ("slurm_partition_nodes", {"partition": "p1"}, 3),
    ("slurm_partition_nodes_alloc", {"partition": "p1"}, 1),
    ("slurm_partition_nodes_mixed", {"partition": "p1"}, 1),
    ("slurm_partition_nodes_idle", {"partition": "p1"}, 1),
    ("slurm_partition_nodes_drain", {"partition": "p1"}, 1),
    ("slurm_partition_nodes_future", {"partition": "p1"}, 0),
    ("slurm_partition_nodes_idle", {"partition": "p2"}, 1),
    ("slurm_partition_nodes_down", {"partition": "p2"}, 1),
    ("slurm_partition_nodes_no_resp", {"partition": "p2"}, 1),
    ("slurm_partition_nodes_future", {"partition": "p2"}, 1),
    ("slurm_partition_nodes_drain", {"partition": "p2"}, 1),
    # resources, per partition (listed nodes only; CPUs total is Slurm's configured number)
    ("slurm_partition_cpus", {"partition": "p1"}, 12),
    ("slurm_partition_nodes_cpus_alloc", {"partition": "p1"}, 5),
    ("slurm_partition_nodes_cpus_idle", {"partition": "p1"}, 7),
    ("slurm_partition_cpus", {"partition": "p2"}, 14),
    ("slurm_partition_nodes_cpus_alloc", {"partition": "p2"}, 0),
    ("slurm_partition_nodes_cpus_idle", {"partition": "p2"}, 14),  # f1 (FUTURE) counts idle, as in Slurm
    ("slurm_partition_gpus", {"partition": "p1"}, 6),
    ("slurm_partition_nodes_gpus_alloc", {"partition": "p1"}, 1),
    ("slurm_partition_nodes_gpus_idle", {"partition": "p1"}, 5),
    ("slurm_partition_gpus", {"partition": "p2"}, 4),
    ("slurm_partition_nodes_memory_bytes", {"partition": "p1"}, 3 * 8192 * MIB),
    ("slurm_partition_nodes_memory_alloc_bytes", {"partition": "p1"}, 3072 * MIB),
    ("slurm_partition_nodes_memory_idle_bytes", {"partition": "p1"}, (3 * 8192 - 3072) * MIB),
    ("slurm_partition_nodes_memory_bytes", {"partition": "p2"}, (8192 + 4096) * MIB),
    # resources, per node
    ("slurm_node_cpus", {"node": "n1"}, 4),
    ("slurm_node_cpus_alloc", {"node": "n1"}, 4),
    ("slurm_node_cpus_idle", {"node": "n1"}, 0),
    ("slurm_node_cpus_idle", {"node": "n2"}, 3),
    ("slurm_node_gpus", {"node": "n2"}, 2),
    ("slurm_node_gpus_alloc", {"node": "n2"}, 1),
    ("slurm_node_gpus_idle", {"node": "n2"}, 1),
    ("slurm_node_gpus", {"node": "n3"}, 4),
    ("slurm_node_gpus", {"node": "n1"}, 0),
    ("slurm_node_memory_bytes", {"node": "n4"}, 4096 * MIB),
    ("slurm_node_memory_alloc_bytes", {"node": "n1"}, 2048 * MIB),
    ("slurm_node_memory_idle_bytes", {"node": "n1"}, 6144 * MIB),
    # jobs, cluster-wide: each job once
    ("slurm_jobs", {}, 13),  # every job listed, finished ones too (Slurm 26.05's meaning)
    ("slurm_jobs_pending", {}, 8),
    ("slurm_jobs_running", {}, 3),
    ("slurm_jobs_completed", {}, 1),
    ("slurm_jobs_cancelled", {}, 1),
    ("slurm_jobs_completing", {}, 1),
    ("slurm_jobs_finished", {}, 2),
    ("slurm_jobs_started", {}, 5),
    ("slurm_jobs_hold", {}, 1),
    ("slurm_jobs_cpus_alloc", {}, 6),
    ("slurm_jobs_nodes_alloc", {}, 3),
    # jobs, per partition: the two-partition pending job counts in both
    ("slurm_partition_jobs", {"partition": "p1"}, 9),
    ("slurm_partition_jobs_pending", {"partition": "p1"}, 6),
    ("slurm_partition_jobs_running", {"partition": "p1"}, 2),
    ("slurm_partition_jobs_hold", {"partition": "p1"}, 1),
    ("slurm_partition_jobs_cpus_alloc", {"partition": "p1"}, 5),
    ("slurm_partition_jobs_min_job_nodes", {"partition": "p1"}, 3),
    ("slurm_partition_jobs_min_job_nodes_nohold", {"partition": "p1"}, 2),
    ("slurm_partition_jobs", {"partition": "p2"}, 3),
    ("slurm_partition_jobs_pending", {"partition": "p2"}, 2),
    ("slurm_partition_jobs_running", {"partition": "p2"}, 1),
    ("slurm_partition_jobs_wait_part_node_limit", {"partition": "p2"}, 1),
    ("slurm_partition_jobs_wait_part_node_limit", {"partition": "p1"}, 0),
    # a partition only jobs name still gets job series
    ("slurm_partition_jobs_pending", {"partition": "gone"}, 1),
    # pending by reason
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p1", "reason": "Resources"}, 2),
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p1", "reason": "Priority"}, 1),
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p1", "reason": "JobHeldUser"}, 1),
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p1", "reason": "None"}, 1),
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p1", "reason": "BeginTime"}, 1),
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p2", "reason": "Resources"}, 1),
    ("slurm_partition_jobs_pending_by_reason", {"partition": "p2", "reason": "PartitionNodeLimit"}, 1),
    # demand: p1 = nodes of running jobs {n1, n2} + pending Resources(2) + Priority(1) + None(1 node
    # when unsaid) + the two-partition job (1); held, BeginTime and the completing job add nothing.
    ("slurm_partition_nodes_demanded", {"partition": "p1"}, 2 + 2 + 1 + 1 + 1),
    # p2 = {n3} + the two-partition job (1); PartitionNodeLimit is not demand
    ("slurm_partition_nodes_demanded", {"partition": "p2"}, 1 + 1),
    ("slurm_partition_nodes_demanded", {"partition": "gone"}, 5),
    # scheduler: Slurm's names in microseconds, ours in seconds; unknown fields left out
    ("slurm_server_thread_cnt", {}, 3),
    ("slurm_sdiag_jobs_submitted", {}, 40),
    ("slurm_schedule_cycle_last", {}, 2500),
    ("slurm_sched_mean_cycle", {}, 1000),
    ("slurm_bf_cycle_last", {}, 1_500_000),
    ("slurm_backfilled_jobs", {}, 7),
    ("slurm_scheduler_cycle_last_seconds", {}, 0.0025),
    ("slurm_scheduler_cycle_mean_seconds", {}, 0.001),
    ("slurm_backfill_cycle_last_seconds", {}, 1.5),
]


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    EXPECTED,
    ids=[f"{n}{{{','.join(f'{k}={v}' for k, v in sorted(lb.items()))}}}" for n, lb, _ in EXPECTED],
)
def test_snapshot_samples(name: str, labels: dict[str, str], expected: float) -> None:
    table = samples(snapshot_families(FULL))
    assert value(table, name, **labels) == pytest.approx(expected)


def test_fields_slurm_does_not_report_are_left_out() -> None:
    names = {name for name, _ in samples(snapshot_families(FULL))}
    assert "slurm_bf_mean_cycle" not in names
    assert "slurm_backfill_cycle_mean_seconds" not in names
    assert "slurm_agent_queue_size" not in names
    assert "slurm_bf_last_depth" not in names


def test_pending_by_reason_has_only_reasons_seen() -> None:
    table = samples(snapshot_families(FULL))
    reasons = {dict(lb)["reason"] for name, lb in table if name == "slurm_partition_jobs_pending_by_reason"}
    assert reasons == {"Resources", "Priority", "JobHeldUser", "None", "BeginTime", "PartitionNodeLimit"}


def test_every_partition_gets_zero_rows_when_idle() -> None:
    table = samples(snapshot_families(snapshot(nodes=NODES, partitions=PARTITIONS)))
    for partition in ("p1", "p2"):
        assert value(table, "slurm_partition_jobs_pending", partition=partition) == 0
        assert value(table, "slurm_partition_nodes_demanded", partition=partition) == 0
    assert value(table, "slurm_jobs", **{}) == 0


@pytest.mark.parametrize(
    ("reasons", "p1_demand"),
    [
        (frozenset({"Resources", "Priority", "None"}), 7),
        (frozenset({"Resources", "Priority"}), 6),
        (frozenset({"Resources"}), 5),
        (frozenset(), 2),
    ],
    ids=["default", "no-unconsidered", "resources-only", "running-only"],
)
def test_demand_reasons_are_configurable(reasons: frozenset[str], p1_demand: int) -> None:
    table = samples(snapshot_families(FULL, CollectorOptions(demand_reasons=reasons)))
    assert value(table, "slurm_partition_nodes_demanded", partition="p1") == p1_demand


def test_demand_counts_a_node_shared_by_running_jobs_once() -> None:
    jobs = [job(i, JobState.RUNNING, nodes=("n1",), cpus=1) for i in range(5)]
    table = samples(snapshot_families(snapshot(jobs, NODES, PARTITIONS)))
    assert value(table, "slurm_partition_nodes_demanded", partition="p1") == 1
    assert value(table, "slurm_partition_jobs_cpus_alloc", partition="p1") == 5


def test_suspended_jobs_hold_their_nodes() -> None:
    jobs = [job(1, JobState.SUSPENDED, nodes=("n1", "n2"), cpus=8)]
    table = samples(snapshot_families(snapshot(jobs, NODES, PARTITIONS)))
    assert value(table, "slurm_partition_nodes_demanded", partition="p1") == 2
    assert value(table, "slurm_jobs_cpus_alloc") == 8


def test_per_user_metrics_are_off_by_default() -> None:
    names = {name for name, _ in samples(snapshot_families(FULL))}
    assert not any(name.startswith(("slurm_user_", "slurm_account_")) for name in names)


def test_per_user_metrics() -> None:
    table = samples(snapshot_families(FULL, CollectorOptions(per_user_metrics=True)))
    assert value(table, "slurm_user_jobs_pending", username="ann") == 2
    assert value(table, "slurm_user_jobs_running", username="ann") == 1
    assert value(table, "slurm_user_jobs_cpus_alloc", username="bob") == 3
    assert value(table, "slurm_user_jobs_nodes_alloc", username="bob") == 2
    assert value(table, "slurm_user_jobs_hold", username="bob") == 1
    assert value(table, "slurm_account_jobs_pending", account="chem") == 4
    assert value(table, "slurm_account_jobs_running", account="phys") == 2
    # jobs without an account: an empty label value, as Slurm leaves the label out
    assert value(table, "slurm_account_jobs_pending", account="") == 4
    assert value(table, "slurm_user_jobs", username="") == 1


def test_per_node_metrics_can_be_turned_off() -> None:
    names = {name for name, _ in samples(snapshot_families(FULL, CollectorOptions(per_node_metrics=False)))}
    assert not any(name.startswith("slurm_node_") for name in names)
    assert "slurm_partition_nodes_cpus_alloc" in names


def test_families_are_a_pure_function_of_the_snapshot() -> None:
    assert samples(snapshot_families(FULL)) == samples(snapshot_families(FULL))


# --- health and freshness --------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def registry_with(status: PollerStatus, clock: Clock, stale_after: float = 30.0) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SlurmCollector(lambda: status, stale_after=stale_after, monotonic=clock))
    return registry


def slurm_series(registry: CollectorRegistry) -> set[str]:
    return {
        sample.name
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.startswith("slurm_exporter_")
    }


def ok_status(snap: Snapshot) -> PollerStatus:
    return PollerStatus(snapshot=snap, last_ok=True, last_duration=0.25, refreshes={"success": 3})


def test_before_the_first_refresh_only_health_is_served() -> None:
    registry = registry_with(PollerStatus(), Clock())
    assert registry.get_sample_value("slurm_exporter_up") == 0
    assert registry.get_sample_value("slurm_exporter_last_refresh_age_seconds") is None
    assert registry.get_sample_value("slurm_exporter_refreshes_total", {"result": "success"}) == 0
    assert slurm_series(registry) == set()


def test_fresh_snapshot_is_served_and_up() -> None:
    clock = Clock(105.0)
    registry = registry_with(ok_status(snapshot(JOBS, NODES, PARTITIONS, taken_monotonic=100.0)), clock)
    assert registry.get_sample_value("slurm_exporter_up") == 1
    assert registry.get_sample_value("slurm_exporter_last_refresh_age_seconds") == 5.0
    assert registry.get_sample_value("slurm_exporter_last_refresh_timestamp_seconds") == 1_800_000_000.0
    assert registry.get_sample_value("slurm_exporter_last_refresh_duration_seconds") == 0.25
    assert registry.get_sample_value("slurm_exporter_stale_after_seconds") == 30.0
    assert registry.get_sample_value("slurm_partition_jobs_pending", {"partition": "p1"}) == 6


def test_failed_refresh_is_down_but_recent_data_is_still_served() -> None:
    snap = snapshot(JOBS, NODES, PARTITIONS, taken_monotonic=100.0)
    status = PollerStatus(
        snapshot=snap,
        last_ok=False,
        last_duration=3.0,
        errors={"nodes/transport": 2},
        refreshes={"failure": 2},
    )
    registry = registry_with(status, Clock(110.0))
    assert registry.get_sample_value("slurm_exporter_up") == 0
    errors = {"operation": "nodes", "kind": "transport"}
    assert registry.get_sample_value("slurm_exporter_slurmrestd_errors_total", errors) == 2
    assert registry.get_sample_value("slurm_exporter_refreshes_total", {"result": "failure"}) == 2
    assert registry.get_sample_value("slurm_partition_jobs_pending", {"partition": "p1"}) == 6


@pytest.mark.parametrize("last_ok", [True, False], ids=["last-ok", "last-failed"])
def test_stale_snapshot_is_left_out_not_zeroed(last_ok: bool) -> None:
    snap = snapshot(JOBS, NODES, PARTITIONS, taken_monotonic=100.0)
    status = PollerStatus(snapshot=snap, last_ok=last_ok)
    registry = registry_with(status, Clock(130.5), stale_after=30.0)
    assert registry.get_sample_value("slurm_exporter_up") == 0
    assert registry.get_sample_value("slurm_exporter_last_refresh_age_seconds") == 30.5
    assert slurm_series(registry) == set()
    text = generate_latest(registry).decode()
    assert "slurm_partition_jobs_pending" not in text
    assert "slurm_partition_nodes_demanded" not in text


def test_snapshot_at_the_bound_is_still_fresh() -> None:
    registry = registry_with(ok_status(snapshot(taken_monotonic=100.0)), Clock(130.0), stale_after=30.0)
    assert registry.get_sample_value("slurm_exporter_up") == 1
    assert registry.get_sample_value("slurm_jobs") == 0


def test_error_counters_are_preset_for_every_operation_and_kind() -> None:
    families = health_families(PollerStatus(), 0.0, 30.0)
    errors = next(f for f in families if f.name == "slurm_exporter_slurmrestd_errors")
    assert errors.type == "counter"
    assert len(errors.samples) == 4 * 7
    assert all(sample.value == 0 for sample in errors.samples)


def test_families_of_one_snapshot_are_built_once() -> None:
    snap = snapshot(JOBS, NODES, PARTITIONS)
    status = ok_status(snap)
    collector = SlurmCollector(lambda: status, stale_after=30.0, monotonic=Clock())
    first = [f for f in collector.collect() if not f.name.startswith("slurm_exporter_")]
    second = [f for f in collector.collect() if not f.name.startswith("slurm_exporter_")]
    assert all(a is b for a, b in zip(first, second, strict=True))
    status = ok_status(snapshot(JOBS[:1], NODES, PARTITIONS))
    third = [f for f in collector.collect() if not f.name.startswith("slurm_exporter_")]
    assert third[0] is not first[0]


def test_exposition_is_valid_and_counters_end_in_total() -> None:
    registry = registry_with(ok_status(FULL), Clock())
    text = generate_latest(registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
            assert f"\n{name}{{" in text
        else:
            assert not name.endswith("_total"), name
    assert all(name.startswith("slurm_") for name in types)


def test_docs_list_every_metric() -> None:
    """docs/metrics.md has a row for every family the exporter can emit, and no others."""
    options = CollectorOptions(per_user_metrics=True)
    emitted = {f.name for f in snapshot_families(FULL, options)}
    full_diag = Diag(**{name: 1 for name in Diag.model_fields})
    emitted |= {f.name for f in snapshot_families(snapshot(diag=full_diag), options)}
    emitted |= {
        f.name + ("_total" if f.type == "counter" else "")
        for f in health_families(ok_status(FULL), 100.0, 30.0)
    }
    documented = set(re.findall(r"^\| `(slurm_[a-z0-9_]+)`", DOCS.read_text(), re.MULTILINE))
    assert sorted(emitted - documented) == []
    assert sorted(documented - emitted) == []


# --- rendering and warming -------------------------------------------------------------------------


def test_render_is_the_text_exposition_of_collect() -> None:
    clock = Clock()
    status = ok_status(FULL)
    collector = SlurmCollector(lambda: status, stale_after=30.0, monotonic=clock)
    registry = CollectorRegistry()
    registry.register(collector)
    assert collector.render() == generate_latest(registry)


@pytest.mark.parametrize(
    ("status", "now"),
    [
        (PollerStatus(), 100.0),
        (
            PollerStatus(snapshot=snapshot(JOBS, NODES, PARTITIONS, taken_monotonic=100.0), last_ok=False),
            200.0,
        ),
    ],
    ids=["no-snapshot", "stale"],
)
def test_render_without_a_fresh_snapshot_is_health_only(status: PollerStatus, now: float) -> None:
    collector = SlurmCollector(lambda: status, stale_after=30.0, monotonic=Clock(now))
    text = collector.render().decode()
    assert "slurm_exporter_up 0.0" in text
    names = set(re.findall(r"^(slurm_[a-z0-9_]+)", text, re.MULTILINE))
    assert names and all(name.startswith("slurm_exporter_") for name in names)


def test_warm_builds_ahead_so_scrapes_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter._collector as module

    builds: list[Snapshot] = []
    real = module.snapshot_families

    def counting(snap: Snapshot, options: CollectorOptions | None = None) -> list[Metric]:
        builds.append(snap)
        return real(snap, options)

    monkeypatch.setattr(module, "snapshot_families", counting)
    status = ok_status(FULL)
    collector = SlurmCollector(lambda: status, stale_after=30.0, monotonic=Clock())
    builds.clear()  # the constructor's describe() probe
    collector.warm(render=True)
    assert builds == [FULL]
    collector.render()
    list(collector.collect())
    collector.warm(render=True)
    assert builds == [FULL]


def test_warm_without_a_fresh_snapshot_does_nothing() -> None:
    collector = SlurmCollector(PollerStatus, stale_after=30.0, monotonic=Clock())
    collector.warm(render=True)
    assert collector.render().startswith(b"# HELP slurm_exporter_up")


def test_describe_lets_a_registry_refuse_duplicates() -> None:
    registry = CollectorRegistry()
    registry.register(SlurmCollector(PollerStatus, stale_after=30.0))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(SlurmCollector(PollerStatus, stale_after=30.0))


def test_family_names_cover_everything_emitted() -> None:
    options = CollectorOptions(per_user_metrics=True)
    collector = SlurmCollector(lambda: ok_status(FULL), stale_after=30.0, options=options, monotonic=Clock())
    assert {family.name for family in collector.collect()} <= collector.family_names
    default = SlurmCollector(PollerStatus, stale_after=30.0)
    assert not any(name.startswith("slurm_user_") for name in default.family_names)
