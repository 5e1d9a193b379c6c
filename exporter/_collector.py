"""Snapshot -> Prometheus metric families, purely.

`snapshot_families` turns one `Snapshot` into families and does nothing else: no clock, no I/O.
`health_families` describes the poller itself. `SlurmCollector` is what a registry holds: each
scrape reads the poller's latest status, yields the health families, and yields the Slurm-derived
families only while the snapshot is younger than `stale_after` (older numbers are left out rather
than served as if they were current). Families of one snapshot are built once and reused by every
scrape of that snapshot.

Where Slurm 26.05's own metrics plugin (`MetricsType=metrics/openmetrics`) has a metric, the name,
labels and meaning are Slurm's (see docs/metrics.md); the rest is ours, in base units.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slurm_client import Diag, Job, JobState, Node, NodeState, Partition

from ._snapshot import ErrorKind, JobPoll, Operation, PollerStatus, Snapshot, error_key

MIB = 1024 * 1024

# Pending reasons of jobs that wait only for nodes to be free: what an autoscaler should add
# nodes for. "None" is a job the scheduler has not looked at yet.
DEFAULT_DEMAND_REASONS = frozenset({"Resources", "Priority", "None"})
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
RESERVED_FOR_OTHER_JOB = "May be reserved for other job"  # Slurm's state_description for ReqNodeNotAvail
NO_REASON = "None"  # Slurm's word for "no reason"; the client turns it into None


@dataclass(frozen=True, slots=True)
class CollectorOptions:
    # slurm_user_jobs_*{username} and slurm_account_jobs_*{account}: one series per user (or
    # account) and state, so off by default (see docs/metrics.md, "Cardinality").
    per_user_metrics: bool = False
    # slurm_node_*{node}: about ten series per node.
    per_node_metrics: bool = True
    demand_reasons: frozenset[str] = DEFAULT_DEMAND_REASONS


# --- nodes -----------------------------------------------------------------------------------------

_BASE_STATE_KEYS: Mapping[NodeState, str] = {
    NodeState.FUTURE: "future",
    NodeState.DOWN: "down",
    NodeState.MIXED: "mixed",
    NodeState.ALLOCATED: "alloc",
    NodeState.IDLE: "idle",
    NodeState.UNKNOWN: "unknown",
}

# Node flags as slurmrestd spells them -> our key.
_FLAG_KEYS: tuple[tuple[str, str], ...] = (
    ("COMPLETING", "cg"),
    ("NOT_RESPONDING", "no_resp"),
    ("MAINTENANCE", "maint"),
    ("RESERVED", "resv"),
    ("FAIL", "fail"),
    ("PLANNED", "planned"),
    ("CLOUD", "cloud"),
    ("EXTERNAL", "external"),
    ("DYNAMIC_FUTURE", "dyn_future"),
    ("DYNAMIC_NORM", "dyn_normal"),
    ("INVALID_REG", "invalid_reg"),
    ("POWERED_DOWN", "powered_down"),
    ("POWERING_UP", "powering_up"),
    ("POWERING_DOWN", "powering_down"),
    ("POWER_DOWN", "power_down"),
    ("POWER_UP", "power_up"),
    ("REBOOT_ISSUED", "reboot_issued"),
    ("REBOOT_REQUESTED", "reboot_requested"),
    ("BLOCKED", "blocked"),
)


@dataclass(frozen=True, slots=True)
class _NodeCount:
    key: str
    partition_name: str
    cluster_name: str | None  # Slurm has no cluster-wide twin for a few
    help: str


_NODE_COUNTS: tuple[_NodeCount, ...] = (
    _NodeCount("alloc", "slurm_partition_nodes_alloc", "slurm_nodes_alloc", "Nodes in the Allocated state"),
    _NodeCount("idle", "slurm_partition_nodes_idle", "slurm_nodes_idle", "Nodes in the Idle state"),
    _NodeCount("mixed", "slurm_partition_nodes_mixed", "slurm_nodes_mixed", "Nodes in the Mixed state"),
    _NodeCount("down", "slurm_partition_nodes_down", "slurm_nodes_down", "Nodes in the Down state"),
    _NodeCount(
        "future",
        "slurm_partition_nodes_future",
        "slurm_nodes_future",
        "Nodes in the Future state (declared, not started yet)",
    ),
    _NodeCount(
        "unknown", "slurm_partition_nodes_unknown", "slurm_nodes_unknown", "Nodes in the Unknown state"
    ),
    _NodeCount(
        "drain",
        "slurm_partition_nodes_drain",
        "slurm_nodes_drain",
        "Nodes with the Drain flag and no jobs left (as Slurm counts it: draining nodes are apart)",
    ),
    _NodeCount(
        "drained",
        "slurm_partition_nodes_drained",
        "slurm_nodes_drained",
        "Nodes drained: Drain flag, no jobs",
    ),
    _NodeCount(
        "draining",
        "slurm_partition_nodes_draining",
        "slurm_nodes_draining",
        "Nodes draining: Drain flag while jobs still run or complete on them",
    ),
    _NodeCount("cg", "slurm_partition_nodes_cg", "slurm_nodes_completing", "Nodes with the Completing flag"),
    _NodeCount("no_resp", "slurm_partition_nodes_no_resp", "slurm_nodes_noresp", "Nodes not responding"),
    _NodeCount(
        "maint", "slurm_partition_nodes_maint", "slurm_nodes_maint", "Nodes with the Maintenance flag"
    ),
    _NodeCount("resv", "slurm_partition_nodes_resv", "slurm_nodes_resv", "Nodes with the Reserved flag"),
    _NodeCount("fail", "slurm_partition_nodes_fail", "slurm_nodes_fail", "Nodes with the Fail flag"),
    _NodeCount(
        "planned", "slurm_partition_nodes_planned", "slurm_nodes_planned", "Nodes with the Planned flag"
    ),
    _NodeCount("cloud", "slurm_partition_nodes_cloud", "slurm_nodes_cloud", "Cloud nodes"),
    _NodeCount("external", "slurm_partition_nodes_external", "slurm_nodes_external", "External nodes"),
    _NodeCount(
        "dyn_future",
        "slurm_partition_nodes_dyn_future",
        "slurm_nodes_dyn_future",
        "Dynamic nodes in Future state",
    ),
    _NodeCount("dyn_normal", "slurm_partition_nodes_dyn_normal", "slurm_nodes_dyn_normal", "Dynamic nodes"),
    _NodeCount(
        "invalid_reg",
        "slurm_partition_nodes_invalid_reg",
        "slurm_nodes_invalid_reg",
        "Nodes with the Invalid Registration flag",
    ),
    _NodeCount(
        "powered_down", "slurm_partition_nodes_powered_down", "slurm_nodes_powered_down", "Nodes powered down"
    ),
    _NodeCount(
        "powering_up", "slurm_partition_nodes_powering_up", "slurm_nodes_powering_up", "Nodes powering up"
    ),
    _NodeCount("powering_down", "slurm_partition_nodes_powering_down", None, "Nodes powering down"),
    _NodeCount(
        "power_down",
        "slurm_partition_nodes_power_down",
        "slurm_nodes_power_down",
        "Nodes marked to power down",
    ),
    _NodeCount(
        "power_up", "slurm_partition_nodes_power_up", "slurm_nodes_power_up", "Nodes marked to power up"
    ),
    _NodeCount(
        "reboot_issued",
        "slurm_partition_nodes_reboot_issued",
        "slurm_nodes_reboot_issued",
        "Nodes with the Reboot Issued flag",
    ),
    _NodeCount(
        "reboot_requested",
        "slurm_partition_nodes_reboot_requested",
        "slurm_nodes_reboot_req",
        "Nodes with the Reboot Requested flag",
    ),
    _NodeCount(
        "blocked", "slurm_partition_nodes_blocked", "slurm_nodes_blocked", "Nodes with the Blocked flag"
    ),
)

_BUSY_STATES = frozenset({NodeState.ALLOCATED, NodeState.MIXED})


def node_state_keys(node: Node) -> list[str]:
    """The node-count keys a node adds 1 to: its base state (at most one) and its flags."""
    keys: list[str] = []
    base = _BASE_STATE_KEYS.get(node.state)
    if base is not None:
        keys.append(base)
    flags = node.state_flags
    if flags:
        keys.extend(key for flag, key in _FLAG_KEYS if flag in flags)
        if "DRAIN" in flags:
            if node.state in _BUSY_STATES or "COMPLETING" in flags:
                keys.append("draining")
            else:
                keys.extend(("drain", "drained"))
    return keys


def gpu_count(gres: Mapping[str, int]) -> int:
    """GPUs in a GRES map: `gpu` and typed `gpu:<type>` entries."""
    return sum(count for name, count in gres.items() if name == "gpu" or name.startswith("gpu:"))


@dataclass(slots=True)
class _Resources:
    cpus: int = 0
    cpus_alloc: int = 0
    gpus: int = 0
    gpus_alloc: int = 0
    memory_mib: int = 0
    memory_alloc_mib: int = 0

    def add(self, other: _Resources) -> None:
        self.cpus += other.cpus
        self.cpus_alloc += other.cpus_alloc
        self.gpus += other.gpus
        self.gpus_alloc += other.gpus_alloc
        self.memory_mib += other.memory_mib
        self.memory_alloc_mib += other.memory_alloc_mib

    @property
    def cpus_idle(self) -> int:
        return max(0, self.cpus - self.cpus_alloc)

    @property
    def gpus_idle(self) -> int:
        return max(0, self.gpus - self.gpus_alloc)

    @property
    def memory_idle_mib(self) -> int:
        return max(0, self.memory_mib - self.memory_alloc_mib)


def _partition_cpus_idle(partition: Partition, listed: _Resources) -> int:
    """Slurm's meaning: the partition's configured CPUs minus the allocated ones, so the CPUs of nodes
    slurmrestd does not list (FUTURE) count as idle, as slurmctld's own metric counts them."""
    if partition.total_cpus > 0:
        return max(0, partition.total_cpus - listed.cpus_alloc)
    return listed.cpus_idle


def _node_resources(node: Node) -> _Resources:
    return _Resources(
        cpus=node.cpus_total,
        cpus_alloc=node.cpus_allocated,
        gpus=gpu_count(node.gres),
        gpus_alloc=gpu_count(node.gres_used),
        memory_mib=node.memory_total_mb,
        memory_alloc_mib=node.memory_allocated_mb,
    )


# --- jobs ------------------------------------------------------------------------------------------

_JOB_BASE_KEYS: Mapping[JobState, str] = {
    JobState.PENDING: "pending",
    JobState.RUNNING: "running",
    JobState.SUSPENDED: "suspended",
    JobState.COMPLETED: "completed",
    JobState.CANCELLED: "cancelled",
    JobState.FAILED: "failed",
    JobState.TIMEOUT: "timeout",
    JobState.NODE_FAIL: "node_failed",
    JobState.PREEMPTED: "preempted",
    JobState.BOOT_FAIL: "bootfail",
    JobState.DEADLINE: "deadline",
    JobState.OUT_OF_MEMORY: "outofmemory",
}
_JOB_FLAG_KEYS: tuple[tuple[str, str], ...] = (
    ("COMPLETING", "completing"),
    ("CONFIGURING", "configuring"),
    ("REQUEUED", "requeued"),
)
_ACTIVE_JOB_STATES = frozenset({JobState.RUNNING, JobState.SUSPENDED})

# key -> HELP; the metric is slurm_<scope>_jobs_<key> (slurm_<scope>_jobs for "all").
_JOB_COUNTS: tuple[tuple[str, str], ...] = (
    ("all", "Jobs not yet completed (pending, running, suspended, or finished but still completing)"),
    ("pending", "Jobs in the Pending state"),
    ("running", "Jobs in the Running state"),
    ("suspended", "Jobs in the Suspended state"),
    ("completed", "Jobs in the Completed state"),
    ("cancelled", "Jobs in the Cancelled state"),
    ("failed", "Jobs in the Failed state"),
    ("timeout", "Jobs in the Timeout state"),
    ("node_failed", "Jobs in the Node Failed state"),
    ("preempted", "Jobs in the Preempted state"),
    ("bootfail", "Jobs in the Boot Fail state"),
    ("deadline", "Jobs in the Deadline state"),
    ("outofmemory", "Jobs in the Out Of Memory state"),
    ("completing", "Jobs with the Completing flag"),
    ("configuring", "Jobs with the Configuring flag"),
    ("requeued", "Jobs with the Requeued flag"),
    ("hold", "Pending jobs held by a user or an administrator"),
    ("finished", "Jobs that have finished, whatever the outcome"),
    ("started", "Jobs that have started (running, suspended or finished)"),
)


_LISTED_HELP = "Jobs slurmctld lists, finished ones included (until MinJobAge purges them)"


def job_state_keys(job: Job) -> list[str]:
    """The job-count keys a job adds 1 to."""
    keys: list[str] = []
    state = job.state
    base = _JOB_BASE_KEYS.get(state)
    if base is not None:
        keys.append(base)
    finished = state.is_finished
    flags = job.state_flags
    if finished:
        keys.append("finished")
    if finished or state in _ACTIVE_JOB_STATES:
        keys.append("started")
    if flags:
        keys.extend(key for flag, key in _JOB_FLAG_KEYS if flag in flags)
    if state is JobState.PENDING and job.state_reason in HELD_REASONS:
        keys.append("hold")
    if not finished or "COMPLETING" in flags:
        keys.append("all")
    return keys


def job_partitions(job: Job) -> list[str]:
    """The partitions a job is in: a pending job may name several ("a,b"), it counts in each."""
    raw = job.partition
    if not raw:
        return []
    if "," not in raw:
        return [raw]
    return [part for part in (p.strip() for p in raw.split(",")) if part]


@dataclass(slots=True)
class _JobTally:
    counts: Counter[str] = field(default_factory=Counter)
    listed: int = 0  # every job, finished ones included
    cpus_alloc: int = 0
    nodes: set[str] = field(default_factory=set)  # nodes of running/suspended jobs
    min_job_nodes: int = 0
    min_job_nodes_nohold: int = 0
    pending_nodes_demanded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # pending jobs by reason


def _tally(tally: _JobTally, job: Job, keys: list[str], demand_reasons: frozenset[str]) -> None:
    counts = tally.counts
    tally.listed += 1
    for key in keys:
        counts[key] += 1
    state = job.state
    if state in _ACTIVE_JOB_STATES:
        tally.cpus_alloc += job.cpus or 0
        tally.nodes.update(job.nodes)
    elif state is JobState.PENDING:
        reason = job.state_reason or NO_REASON
        tally.reasons[reason] += 1
        wanted = job.node_count or 1
        tally.min_job_nodes = max(tally.min_job_nodes, wanted)
        if reason not in HELD_REASONS:
            tally.min_job_nodes_nohold = max(tally.min_job_nodes_nohold, wanted)
        if reason in demand_reasons or _waits_behind_a_job_for_nodes(job, reason):
            tally.pending_nodes_demanded += wanted


def _waits_behind_a_job_for_nodes(job: Job, reason: str) -> bool:
    """ReqNodeNotAvail because the nodes it could use are kept for a job ahead of it: in a partition
    short of nodes only the first pending job says Resources, the ones behind it say this (seen on the
    testbed's all-FUTURE `nodeset` partition). More nodes would start them too, so they are demand; a
    ReqNodeNotAvail that names unavailable nodes (UnavailableNodes:...) is not."""
    return reason == "ReqNodeNotAvail" and RESERVED_FOR_OTHER_JOB in (job.state_description or "")


# --- families --------------------------------------------------------------------------------------


def _gauge(
    name: str, help_text: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _single(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _node_families(snapshot: Snapshot, options: CollectorOptions) -> list[Metric]:
    by_name = {node.name: node for node in snapshot.nodes}
    node_keys = {node.name: node_state_keys(node) for node in snapshot.nodes}
    node_res = {node.name: _node_resources(node) for node in snapshot.nodes}
    # Nodes a partition names that slurmrestd does not list are FUTURE nodes (hidden from lists).
    hidden: set[str] = set()
    part_counts: dict[str, Counter[str]] = {}
    part_res: dict[str, _Resources] = {}
    for partition in snapshot.partitions:
        counts: Counter[str] = Counter()
        res = _Resources()
        for name in partition.nodes:
            if name in by_name:
                counts.update(node_keys[name])
                res.add(node_res[name])
            else:
                hidden.add(name)
                counts["future"] += 1
        part_counts[partition.name] = counts
        part_res[partition.name] = res
    cluster: Counter[str] = Counter()
    for keys in node_keys.values():
        cluster.update(keys)
    cluster["future"] += len(hidden)

    partitions = snapshot.partitions
    families: list[Metric] = [
        _single("slurm_nodes", "Nodes known to Slurm, including FUTURE ones", len(by_name) + len(hidden)),
        _single("slurm_partitions", "Partitions", len(partitions)),
        _gauge(
            "slurm_partition_nodes",
            "Nodes in the partition (Slurm's configured count)",
            ["partition"],
            (([p.name], p.total_nodes) for p in partitions),
        ),
    ]
    for count in _NODE_COUNTS:
        if count.cluster_name is not None:
            families.append(_single(count.cluster_name, count.help, cluster[count.key]))
        families.append(
            _gauge(
                count.partition_name,
                f"{count.help}, in the partition",
                ["partition"],
                (([p.name], part_counts[p.name][count.key]) for p in partitions),
            )
        )

    def per_partition(name: str, help_text: str, value: Callable[[Partition, _Resources], float]) -> Metric:
        return _gauge(
            name, help_text, ["partition"], (([p.name], value(p, part_res[p.name])) for p in partitions)
        )

    families += [
        per_partition(
            "slurm_partition_cpus",
            "CPUs in the partition (Slurm's configured total)",
            lambda p, r: p.total_cpus,
        ),
        per_partition(
            "slurm_partition_nodes_cpus_alloc",
            "CPUs allocated to jobs on the partition's listed nodes",
            lambda p, r: r.cpus_alloc,
        ),
        per_partition(
            "slurm_partition_nodes_cpus_idle",
            "CPUs of the partition not allocated (whatever the node state; FUTURE nodes' CPUs included)",
            _partition_cpus_idle,
        ),
        per_partition("slurm_partition_gpus", "GPUs on the partition's listed nodes", lambda p, r: r.gpus),
        per_partition(
            "slurm_partition_nodes_gpus_alloc",
            "GPUs allocated to jobs on the partition's listed nodes",
            lambda p, r: r.gpus_alloc,
        ),
        per_partition(
            "slurm_partition_nodes_gpus_idle",
            "GPUs not allocated on the partition's listed nodes",
            lambda p, r: r.gpus_idle,
        ),
        per_partition(
            "slurm_partition_nodes_memory_bytes",
            "Memory (Slurm's RealMemory) of the partition's listed nodes, in bytes",
            lambda p, r: r.memory_mib * MIB,
        ),
        per_partition(
            "slurm_partition_nodes_memory_alloc_bytes",
            "Memory allocated to jobs on the partition's listed nodes, in bytes",
            lambda p, r: r.memory_alloc_mib * MIB,
        ),
        per_partition(
            "slurm_partition_nodes_memory_idle_bytes",
            "Memory not allocated on the partition's listed nodes, in bytes",
            lambda p, r: r.memory_idle_mib * MIB,
        ),
    ]
    if options.per_node_metrics:
        families += _per_node_families(node_res)
    return families


def _per_node_families(node_res: Mapping[str, _Resources]) -> list[Metric]:
    items = sorted(node_res.items())

    def per_node(name: str, help_text: str, value: Callable[[_Resources], float]) -> Metric:
        return _gauge(name, help_text, ["node"], (([node], value(res)) for node, res in items))

    return [
        per_node("slurm_node_cpus", "CPUs of the node", lambda r: r.cpus),
        per_node("slurm_node_cpus_alloc", "CPUs of the node allocated to jobs", lambda r: r.cpus_alloc),
        per_node("slurm_node_cpus_idle", "CPUs of the node not allocated", lambda r: r.cpus_idle),
        per_node("slurm_node_gpus", "GPUs of the node", lambda r: r.gpus),
        per_node("slurm_node_gpus_alloc", "GPUs of the node allocated to jobs", lambda r: r.gpus_alloc),
        per_node("slurm_node_gpus_idle", "GPUs of the node not allocated", lambda r: r.gpus_idle),
        per_node(
            "slurm_node_memory_bytes",
            "Memory (Slurm's RealMemory) of the node, in bytes",
            lambda r: r.memory_mib * MIB,
        ),
        per_node(
            "slurm_node_memory_alloc_bytes",
            "Memory of the node allocated to jobs, in bytes",
            lambda r: r.memory_alloc_mib * MIB,
        ),
        per_node(
            "slurm_node_memory_idle_bytes",
            "Memory of the node not allocated to jobs, in bytes",
            lambda r: r.memory_idle_mib * MIB,
        ),
    ]


def _count_name(prefix: str, key: str) -> str:
    return prefix if key == "all" else f"{prefix}_{key}"


def _job_families(snapshot: Snapshot, options: CollectorOptions) -> list[Metric]:
    demand_reasons = options.demand_reasons
    cluster = _JobTally()
    parts: dict[str, _JobTally] = {p.name: _JobTally() for p in snapshot.partitions}
    users: dict[str, _JobTally] = {}
    accounts: dict[str, _JobTally] = {}
    for job in snapshot.jobs:
        keys = job_state_keys(job)
        _tally(cluster, job, keys, demand_reasons)
        for name in job_partitions(job):
            tally = parts.get(name)
            if tally is None:
                tally = parts[name] = _JobTally()
            _tally(tally, job, keys, demand_reasons)
        if options.per_user_metrics:
            for table, owner in ((users, job.user_name or ""), (accounts, job.account or "")):
                tally = table.get(owner)
                if tally is None:
                    tally = table[owner] = _JobTally()
                _tally(tally, job, keys, demand_reasons)

    part_items = sorted(parts.items())
    families: list[Metric] = []
    for key, help_text in _JOB_COUNTS:
        if key == "all":
            # Slurm 26.05's cluster-wide (and per user/account) plain count is every job it still lists;
            # only the per-partition one leaves finished jobs out (seen side by side with slurmctld)
            families.append(_single("slurm_jobs", _LISTED_HELP, cluster.listed))
        else:
            families.append(_single(_count_name("slurm_jobs", key), help_text, cluster.counts[key]))
        families.append(
            _gauge(
                _count_name("slurm_partition_jobs", key),
                f"{help_text}, in the partition",
                ["partition"],
                (([name], tally.counts[key]) for name, tally in part_items),
            )
        )
    families += [
        _single("slurm_jobs_cpus_alloc", "CPUs allocated to running and suspended jobs", cluster.cpus_alloc),
        _single("slurm_jobs_nodes_alloc", "Nodes holding running or suspended jobs", len(cluster.nodes)),
        _gauge(
            "slurm_partition_jobs_cpus_alloc",
            "CPUs allocated to running and suspended jobs of the partition",
            ["partition"],
            (([name], tally.cpus_alloc) for name, tally in part_items),
        ),
        _gauge(
            "slurm_partition_jobs_min_job_nodes",
            "Largest node count asked for by a pending job of the partition",
            ["partition"],
            (([name], tally.min_job_nodes) for name, tally in part_items),
        ),
        _gauge(
            "slurm_partition_jobs_min_job_nodes_nohold",
            "Largest node count asked for by a pending job of the partition, held jobs left out",
            ["partition"],
            (([name], tally.min_job_nodes_nohold) for name, tally in part_items),
        ),
        _gauge(
            "slurm_partition_jobs_wait_part_node_limit",
            "Pending jobs of the partition waiting on the partition's node limit (PartitionNodeLimit)",
            ["partition"],
            (([name], tally.reasons.get("PartitionNodeLimit", 0)) for name, tally in part_items),
        ),
        _gauge(
            "slurm_partition_jobs_pending_by_reason",
            "Pending jobs of the partition by Slurm's pending reason (None: not yet considered)",
            ["partition", "reason"],
            (
                ([name, reason], count)
                for name, tally in part_items
                for reason, count in sorted(tally.reasons.items())
            ),
        ),
        _gauge(
            "slurm_partition_nodes_demanded",
            "Nodes the partition's queue asks for: nodes held by its running and suspended jobs plus "
            "the nodes requested by its jobs pending for " + ", ".join(sorted(demand_reasons)),
            ["partition"],
            (([name], len(tally.nodes) + tally.pending_nodes_demanded) for name, tally in part_items),
        ),
    ]
    if options.per_user_metrics:
        families += _owner_families("slurm_user_jobs", "username", "user", users)
        families += _owner_families("slurm_account_jobs", "account", "account", accounts)
    return families


def _owner_families(prefix: str, label: str, what: str, tallies: Mapping[str, _JobTally]) -> list[Metric]:
    items = sorted(tallies.items())
    families: list[Metric] = [
        _gauge(
            _count_name(prefix, key),
            f"{_LISTED_HELP if key == 'all' else help_text}, per {what}",
            [label],
            (([owner], tally.listed if key == "all" else tally.counts[key]) for owner, tally in items),
        )
        for key, help_text in _JOB_COUNTS
    ]
    families += [
        _gauge(
            f"{prefix}_cpus_alloc",
            f"CPUs allocated to running and suspended jobs, per {what}",
            [label],
            (([owner], tally.cpus_alloc) for owner, tally in items),
        ),
        _gauge(
            f"{prefix}_nodes_alloc",
            f"Nodes holding running or suspended jobs, per {what}",
            [label],
            (([owner], len(tally.nodes)) for owner, tally in items),
        ),
    ]
    return families


# (Diag field, Slurm's metric name, HELP)
_DIAG_NATIVE: tuple[tuple[str, str, str], ...] = (
    ("server_thread_count", "slurm_server_thread_cnt", "Active slurmctld threads"),
    ("agent_queue_size", "slurm_agent_queue_size", "Outgoing RPC retry queue length"),
    ("jobs_submitted", "slurm_sdiag_jobs_submitted", "Jobs submitted since the last statistics reset"),
    ("jobs_started", "slurm_sdiag_jobs_started", "Jobs started since the last statistics reset"),
    ("jobs_completed", "slurm_sdiag_jobs_completed", "Jobs completed since the last statistics reset"),
    ("jobs_canceled", "slurm_sdiag_jobs_canceled", "Jobs cancelled since the last statistics reset"),
    ("jobs_failed", "slurm_sdiag_jobs_failed", "Jobs failed since the last statistics reset"),
    ("jobs_pending", "slurm_sdiag_jobs_pending", "Jobs pending when slurmctld last counted"),
    ("jobs_running", "slurm_sdiag_jobs_running", "Jobs running when slurmctld last counted"),
    (
        "schedule_cycle_last_us",
        "slurm_schedule_cycle_last",
        "Last main scheduling cycle time, in microseconds",
    ),
    ("schedule_cycle_mean_us", "slurm_sched_mean_cycle", "Mean main scheduling cycle time, in microseconds"),
    ("bf_cycle_last_us", "slurm_bf_cycle_last", "Last backfill cycle time, in microseconds"),
    ("bf_cycle_mean_us", "slurm_bf_mean_cycle", "Mean backfill cycle time, in microseconds"),
    (
        "bf_backfilled_jobs",
        "slurm_backfilled_jobs",
        "Jobs started by backfill since the last statistics reset",
    ),
    ("bf_last_depth", "slurm_bf_last_depth", "Jobs the last backfill cycle considered"),
)
# (Diag field in microseconds, our name in seconds, HELP)
_DIAG_SECONDS: tuple[tuple[str, str, str], ...] = (
    ("schedule_cycle_last_us", "slurm_scheduler_cycle_last_seconds", "Last main scheduling cycle time"),
    ("schedule_cycle_mean_us", "slurm_scheduler_cycle_mean_seconds", "Mean main scheduling cycle time"),
    ("bf_cycle_last_us", "slurm_backfill_cycle_last_seconds", "Last backfill cycle time"),
    ("bf_cycle_mean_us", "slurm_backfill_cycle_mean_seconds", "Mean backfill cycle time"),
)


def _diag_families(diag: Diag) -> list[Metric]:
    families: list[Metric] = []
    for attribute, name, help_text in _DIAG_NATIVE:
        value = getattr(diag, attribute)
        if value is not None:  # a field this Slurm does not report is left out, not zero
            families.append(_single(name, help_text, value))
    for attribute, name, help_text in _DIAG_SECONDS:
        value = getattr(diag, attribute)
        if value is not None:
            families.append(_single(name, f"{help_text}, in seconds", value / 1_000_000))
    return families


def snapshot_families(snapshot: Snapshot, options: CollectorOptions | None = None) -> list[Metric]:
    """Every Slurm-derived family for one snapshot. Pure: same snapshot in, same samples out."""
    options = options or CollectorOptions()
    return [
        *_node_families(snapshot, options),
        *_job_families(snapshot, options),
        *_diag_families(snapshot.diag),
    ]


def health_families(status: PollerStatus, now_monotonic: float, stale_after: float) -> list[Metric]:
    """How the exporter's reads of Slurm are going. `now_monotonic` is the scrape's clock reading."""
    snapshot = status.snapshot
    age = None if snapshot is None else max(0.0, now_monotonic - snapshot.taken_monotonic)
    up = bool(status.last_ok) and age is not None and age <= stale_after
    families: list[Metric] = [
        _single(
            "slurm_exporter_up",
            "1 when the last refresh from slurmrestd succeeded and its data is fresh, else 0",
            1 if up else 0,
        ),
        _single(
            "slurm_exporter_stale_after_seconds",
            "Age beyond which Slurm-derived series are left out of scrapes",
            stale_after,
        ),
    ]
    if snapshot is not None and age is not None:
        families += [
            _single(
                "slurm_exporter_last_refresh_timestamp_seconds",
                "Unix time the last successful refresh began",
                snapshot.taken_at,
            ),
            _single(
                "slurm_exporter_last_refresh_age_seconds",
                "Seconds since the last successful refresh began",
                age,
            ),
        ]
    if status.last_duration is not None:
        families.append(
            _single(
                "slurm_exporter_last_refresh_duration_seconds",
                "Seconds the latest refresh took, successful or not",
                status.last_duration,
            )
        )
    refreshes = CounterMetricFamily(
        "slurm_exporter_refreshes", "Refreshes from slurmrestd by result", labels=["result"]
    )
    for result in ("success", "failure"):
        refreshes.add_metric([result], status.refreshes.get(result, 0))
    errors = CounterMetricFamily(
        "slurm_exporter_slurmrestd_errors",
        "Failed slurmrestd reads by operation and kind of failure",
        labels=["operation", "kind"],
    )
    for operation in Operation:
        for kind in ErrorKind:
            errors.add_metric([operation.value, kind.value], status.errors.get(error_key(operation, kind), 0))
    polls = CounterMetricFamily(
        "slurm_exporter_job_polls",
        "Successful job reads by answer (not_modified: Slurm said nothing changed, the cache was reused)",
        labels=["answer"],
    )
    for answer in JobPoll:
        polls.add_metric([answer.value], status.job_polls.get(answer.value, 0))
    families += [refreshes, errors, polls]
    return families


class _Families(Collector):
    """A fixed list of families, for rendering them with prometheus_client's exposition."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _probe_families(options: CollectorOptions) -> list[Metric]:
    """One family of every name the collector can emit with `options` (for describe())."""
    probe = Snapshot(
        jobs=(),
        nodes=(),
        partitions=(),
        diag=Diag(**dict.fromkeys(Diag.model_fields, 1)),
        taken_at=0.0,
        taken_monotonic=0.0,
    )
    status = PollerStatus(snapshot=probe, last_ok=True, last_duration=0.0)
    return [*health_families(status, 0.0, 1.0), *snapshot_families(probe, options)]


class SlurmCollector(Collector):
    """A registry's view of a poller: health always, Slurm-derived series only while fresh.

    `collect()` serves any registry. `render()` gives the same page as text exposition, with the
    snapshot part rendered once per snapshot: what the exporter's own HTTP server sends, because
    formatting ~10,000 samples costs tens of milliseconds per scrape otherwise.
    """

    def __init__(
        self,
        status: Callable[[], PollerStatus],
        *,
        stale_after: float,
        options: CollectorOptions | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after must be positive")
        self._status = status
        self._stale_after = stale_after
        self._options = options or CollectorOptions()
        self._monotonic = monotonic
        self._described = _probe_families(self._options)
        self.family_names = frozenset(family.name for family in self._described)
        # (snapshot, its families) and (snapshot, their exposition): scrapes of an unchanged
        # snapshot reuse them. Each tuple is swapped whole, so concurrent scrapes (the HTTP server
        # has a thread per request) at worst build the same thing twice.
        self._cache: tuple[Snapshot, list[Metric]] | None = None
        self._rendered: tuple[Snapshot, bytes] | None = None

    def describe(self) -> Iterator[Metric]:
        """Every family this collector may emit, so a registry can refuse duplicate names."""
        return iter(self._described)

    def collect(self) -> Iterator[Metric]:
        status, now, snapshot = self._read()
        yield from health_families(status, now, self._stale_after)
        if snapshot is not None:
            yield from self._families(snapshot)

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of what `collect()` would yield now."""
        status, now, snapshot = self._read()
        health = generate_latest(_Families(health_families(status, now, self._stale_after)))
        if snapshot is None:
            return health
        rendered = self._rendered
        if rendered is None or rendered[0] is not snapshot:  # not warmed yet: build it here
            rendered = (snapshot, generate_latest(_Families(self._families(snapshot))))
            self._rendered = rendered
        return health + rendered[1]

    def warm(self, *, render: bool) -> None:
        """Build (and with `render`, render) the current snapshot's families ahead of scrapes."""
        _, _, snapshot = self._read()
        if snapshot is None:
            return
        families = self._families(snapshot)
        rendered = self._rendered
        if render and (rendered is None or rendered[0] is not snapshot):
            self._rendered = (snapshot, generate_latest(_Families(families)))

    def _read(self) -> tuple[PollerStatus, float, Snapshot | None]:
        """The status, the clock, and the snapshot if it is fresh enough to serve."""
        status = self._status()
        now = self._monotonic()
        snapshot = status.snapshot
        if snapshot is not None and now - snapshot.taken_monotonic > self._stale_after:
            snapshot = None
        return status, now, snapshot

    def _families(self, snapshot: Snapshot) -> list[Metric]:
        cached = self._cache
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        families = snapshot_families(snapshot, self._options)
        self._cache = (snapshot, families)
        return families
