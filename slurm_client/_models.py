"""Version-neutral models: what callers see, whatever REST API version the server speaks.

Each API-version adapter converts between these and its wire shapes; nothing else in the project
touches wire JSON.
"""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class JobState(enum.StrEnum):
    """Base job state (Slurm's JOB_STATE_BASE); flags such as COMPLETING travel separately."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    UNKNOWN = "UNKNOWN"

    @property
    def is_finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED, JobState.UNKNOWN)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobSpec(_Frozen):
    """What to submit. `None` means "let Slurm decide / site default"."""

    name: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit_minutes: int | None = Field(default=None, ge=1)
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int | None = Field(default=None, ge=1)
    tasks: int | None = Field(default=None, ge=1)
    cpus_per_task: int | None = Field(default=None, ge=1)
    memory_per_node_mb: int | None = Field(default=None, ge=1)
    # TRES-style per-node generic resources, e.g. {"gpu": 2} or {"gpu:a100": 1}
    gres_per_node: dict[str, int] = Field(default_factory=dict)
    exclusive: bool = False
    constraints: str | None = None
    reservation: str | None = None
    licenses: str | None = None
    wckey: str | None = None
    priority: int | None = None
    nice: int | None = None
    excluded_nodes: list[str] = Field(default_factory=list)
    comment: str | None = None
    admin_comment: str | None = None
    hold: bool = False
    environment: dict[str, str] = Field(default_factory=lambda: {"PATH": "/bin:/usr/bin"})
    working_directory: str = "/tmp"
    # Where a batch script's stdout and stderr go; None: Slurm's default (slurm-<id>.out in the working
    # directory). The client's own placeholder always writes to /dev/null: it prints nothing, and a
    # stale slurm-<id>.out of another user would kill it at launch.
    standard_output: str | None = None
    # A batch script; None asks for an allocation that launches nothing (EXTERNAL_JOB where the
    # server supports it). The client falls back to `placeholder_script` otherwise.
    script: str | None = None


class JobUpdate(_Frozen):
    """Fields to change on a job; only the ones set are sent."""

    hold: bool | None = None
    name: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit_minutes: int | None = None
    priority: int | None = None
    nice: int | None = None
    comment: str | None = None
    min_nodes: int | None = None
    excluded_nodes: list[str] | None = None
    admin_comment: str | None = None  # added by the client; not on v0.0.38


class Job(_Frozen):
    job_id: int
    name: str
    state: JobState
    state_flags: frozenset[str] = frozenset()
    state_reason: str | None = None  # Slurm's pending/hold reason, e.g. "Resources", "Priority"
    nodes: tuple[str, ...] = ()  # expanded allocated nodes, in Slurm's order
    node_count: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    user_name: str | None = None
    time_limit_minutes: int | None = None  # None: unlimited / not set
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    comment: str | None = None
    admin_comment: str | None = None
    priority: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    batch: bool | None = None
    # Added by the client (defaults keep older callers working):
    job_flags: frozenset[str] = frozenset()  # Slurm's job flags, e.g. EXTERNAL_JOB
    state_description: str | None = None  # detail for state_reason, when Slurm gives one
    cpus: int | None = None
    tasks: int | None = None
    working_directory: str | None = None


class NodeState(enum.StrEnum):
    IDLE = "IDLE"
    MIXED = "MIXED"
    ALLOCATED = "ALLOCATED"
    DOWN = "DOWN"
    ERROR = "ERROR"
    FUTURE = "FUTURE"
    UNKNOWN = "UNKNOWN"


class Node(_Frozen):
    name: str
    state: NodeState
    state_flags: frozenset[str] = frozenset()  # DRAIN, DRAINING, COMPLETING, NOT_RESPONDING, ...
    reason: str | None = None
    cpus_total: int = 0
    cpus_allocated: int = 0
    memory_total_mb: int = 0
    memory_allocated_mb: int = 0
    gres: dict[str, int] = Field(default_factory=dict)
    gres_used: dict[str, int] = Field(default_factory=dict)
    partitions: tuple[str, ...] = ()
    comment: str | None = None
    features: tuple[str, ...] = ()

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.state_flags


class NodeUpdate(_Frozen):
    """A node change. `state` uses scontrol words: DRAIN, RESUME, DOWN, UNDRAIN."""

    state: str | None = None
    reason: str | None = None
    comment: str | None = None


class Partition(_Frozen):
    name: str
    nodes: tuple[str, ...] = ()
    total_nodes: int = 0
    total_cpus: int = 0
    state: str | None = None
    max_time_minutes: int | None = None
    default: bool = False


class Ping(_Frozen):
    hostname: str
    responding: bool
    mode: str | None = None  # primary / backup


class Diag(_Frozen):
    server_thread_count: int | None = None
    agent_queue_size: int | None = None
    jobs_submitted: int | None = None
    jobs_started: int | None = None
    jobs_completed: int | None = None
    jobs_canceled: int | None = None
    jobs_failed: int | None = None
    jobs_pending: int | None = None
    jobs_running: int | None = None
    schedule_cycle_last_us: int | None = None
    schedule_cycle_mean_us: int | None = None
    bf_cycle_last_us: int | None = None
    bf_cycle_mean_us: int | None = None
    bf_backfilled_jobs: int | None = None
    bf_last_depth: int | None = None


class SubmitResult(_Frozen):
    job_id: int
    warnings: tuple[str, ...] = ()


class JobList(_Frozen):
    """One answer to `list_jobs(update_time=...)`.

    `not_modified` is True when Slurm says no job changed since `update_time` (HTTP 304, or an
    empty answer flagged as such); `jobs` is then empty and means nothing. Otherwise `jobs` is the
    FULL list (Slurm never sends only the changed jobs). Pass `next_update_time` as the next
    call's `update_time`.
    """

    jobs: tuple[Job, ...] = ()
    not_modified: bool = False
    next_update_time: datetime


class CancelOutcome(enum.StrEnum):
    SIGNALLED = "SIGNALLED"  # the cancel/signal was delivered (or queued) by slurmctld
    ALREADY_FINISHED = "ALREADY_FINISHED"  # the job had already ended; nothing was done


class Capabilities(_Frozen):
    """What the server's API version can do, so callers can choose a path up front."""

    api_version: str  # e.g. "v0.0.42"
    supports_external_job: bool = False  # JobSpec.script=None submits flags=[EXTERNAL_JOB]
    supports_node_update: bool = False  # update_node (drain/resume/comment)
    supports_allocate: bool = False  # allocate (job/allocate)
    supports_batch_signal: bool = False  # cancel_job(..., batch_only=True) signals only the batch shell
    supports_admin_comment: bool = False  # JobSpec/JobUpdate admin_comment is accepted
    supports_job_states: bool = False  # job_states(ids): GET jobs/state, the state of only the jobs named
