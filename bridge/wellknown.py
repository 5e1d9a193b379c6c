"""Every name the bridge writes to or reads from Kubernetes objects, in one place.

Pod-facing names follow the Slinky slurm-bridge demo (``slinky.slurm.net/job-name``,
``scheduler.slinky.slurm.net/slurm-jobid``, ...) so manifests written for it keep working.
"""

from __future__ import annotations

import enum
from typing import Final

DEFAULT_SCHEDULER_NAME: Final = "slurm-bridge-scheduler"
DEFAULT_NAMESPACE: Final = "slurm-bridge"
DEFAULT_PARTITION: Final = "slurm-bridge"

# --- Pod annotations that set Slurm job options -------------------------------------------------
# Both prefixes are accepted for every option key; if a pod sets both forms they must agree.
JOB_OPTION_PREFIX: Final = "slinky.slurm.net/"
JOB_OPTION_PREFIX_LONG: Final = "slurmjob.slinky.slurm.net/"
JOB_OPTION_PREFIXES: Final = (JOB_OPTION_PREFIX, JOB_OPTION_PREFIX_LONG)


class JobOption(enum.StrEnum):
    """The option keys that may follow either job-option prefix."""

    JOB_NAME = "job-name"
    ACCOUNT = "account"
    PARTITION = "partition"
    QOS = "qos"
    TIME_LIMIT = "timelimit"  # minutes
    RESERVATION = "reservation"
    CONSTRAINTS = "constraints"
    LICENSES = "licenses"
    WCKEY = "wckey"
    PRIORITY = "priority"
    EXCLUSIVE = "exclusive"
    GRES = "gres"
    MIN_NODES = "min-nodes"
    MAX_NODES = "max-nodes"
    MEM_PER_NODE = "mem-per-node"
    CPU_PER_TASK = "cpu-per-task"


# --- Names the bridge writes on pods --------------------------------------------------------------
# The Slurm node a pod's placeholder job runs on; set through the Binding, so it lives under the
# short job-option prefix and must not be mistaken for an unknown option.
ANNOTATION_SLURM_NODE: Final = JOB_OPTION_PREFIX + "slurm-node"
BRIDGE_OWNED_ANNOTATIONS: Final = frozenset({ANNOTATION_SLURM_NODE})

LABEL_SLURM_JOB_ID: Final = "scheduler.slinky.slurm.net/slurm-jobid"
FINALIZER: Final = "scheduler.slurm.net/finalizer"

# --- Node names ---------------------------------------------------------------------------------
TAINT_MANAGED_NODE: Final = "slinky.slurm.net/managed-node"
# A conventional node label holding the Slurm node name, for `node_name_label` in the config.
LABEL_SLURM_NODE_NAME: Final = "slinky.slurm.net/slurm-nodename"

# --- Kubernetes vocabulary the bridge uses --------------------------------------------------------
CONDITION_POD_SCHEDULED: Final = "PodScheduled"
# Set (with one of the reasons below) on a pod the bridge deletes, as kube-scheduler does on preemption.
CONDITION_DISRUPTION_TARGET: Final = "DisruptionTarget"

PHASE_SUCCEEDED: Final = "Succeeded"
PHASE_FAILED: Final = "Failed"
TERMINAL_PHASES: Final = frozenset({PHASE_SUCCEEDED, PHASE_FAILED})

# Extended resources that become Slurm's `gpu` GRES.
GPU_RESOURCES: Final = ("nvidia.com/gpu", "amd.com/gpu")
GPU_GRES: Final = "gpu"

# --- Job marker -----------------------------------------------------------------------------------
# First token of the Slurm job comment that ties a job to its pod; see bridge/marker.py.
MARKER_PREFIX: Final = "slurm-bridge/v1"

# --- Names read from other projects' objects (gangs: bridge/gang.py) -------------------------------------
LABEL_COSCHEDULING_POD_GROUP: Final = "scheduling.x-k8s.io/pod-group"
LABEL_LWS_NAME: Final = "leaderworkerset.sigs.k8s.io/name"
LABEL_LWS_GROUP_INDEX: Final = "leaderworkerset.sigs.k8s.io/group-index"
LABEL_LWS_WORKER_INDEX: Final = "leaderworkerset.sigs.k8s.io/worker-index"
ANNOTATION_LWS_SIZE: Final = "leaderworkerset.sigs.k8s.io/size"
LABEL_JOBSET_NAME: Final = "jobset.sigs.k8s.io/jobset-name"
# Indexed Jobs (and so JobSet pods) carry their completion index as an annotation and a label.
JOB_COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
CONDITION_POD_GROUP_INITIALLY_SCHEDULED: Final = "PodGroupInitiallyScheduled"
# Read on group objects. Not under a job-option prefix: it is no Slurm option, and must not be reported
# as an unknown one.
ANNOTATION_GANG_FAILURE_POLICY: Final = "scheduler.slinky.slurm.net/gang-failure-policy"

# --- NodeSets (controller/nodeset_plan.py, controller/nodesets.py) ---------------------------------------
# The reason the NodeSet controller drains a node with (Slurm may append to it).
DRAIN_REASON_PREFIX: Final = "slurm-bridge scale-in"
# The slurmd pods of NodeSet N carry these labels; the selector written to status.selector.
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_APP_INSTANCE: Final = "app.kubernetes.io/instance"
SLURMD_APP: Final = "slurmd"
# Condition type on the NodeSet.
CONDITION_SCALED: Final = "Scaled"
# The Slurm partition a NodeSet's nodes belong to; default: the NodeSet's name (as slurm-operator names
# the partition it creates for a set).
ANNOTATION_PARTITION: Final = "slurm-bridge.io/partition"


class Reason(enum.StrEnum):
    """Condition and event reasons (CamelCase, as Kubernetes expects)."""

    # PodScheduled=False while the pod waits
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    INVALID_JOB_OPTIONS = "InvalidSlurmJobOptions"
    TENANT_POLICY_VIOLATION = "SlurmTenantPolicyViolation"  # bridge/tenancy.py refuses the request
    JOB_PENDING = "SlurmJobPending"
    JOB_SUSPENDED = "SlurmJobSuspended"
    NODE_NOT_IN_KUBERNETES = "SlurmNodeNotInKubernetes"
    SLURM_UNAVAILABLE = "SlurmUnavailable"  # slurmrestd down, slow or failing: retried with backoff
    # Slurm refused the bridge's credentials or this user's right to submit: an operator must act
    SLURM_ACCESS_DENIED = "SlurmAccessDenied"
    # lifecycle events
    JOB_SUBMITTED = "SlurmJobSubmitted"
    SCHEDULED = "Scheduled"
    JOB_SUPERSEDED = "SlurmJobSuperseded"
    DUPLICATE_JOB = "DuplicateSlurmJob"
    STALE_JOB = "StaleSlurmJob"
    JOB_RELEASED = "SlurmJobReleased"
    ORPHAN_JOB = "OrphanSlurmJob"
    # the job ended while its pod was not terminal: the pod is deleted with one of these
    JOB_COMPLETED = "SlurmJobCompleted"
    JOB_CANCELLED = "SlurmJobCancelled"
    JOB_FAILED = "SlurmJobFailed"
    JOB_TIMEOUT = "SlurmJobTimeout"
    JOB_PREEMPTED = "SlurmJobPreempted"
    JOB_NODE_FAIL = "SlurmJobNodeFail"
    JOB_BOOT_FAIL = "SlurmJobBootFail"
    JOB_DEADLINE = "SlurmJobDeadline"
    JOB_OUT_OF_MEMORY = "SlurmJobOutOfMemory"
    JOB_VANISHED = "SlurmJobVanished"
    JOB_REQUEUED = "SlurmJobRequeued"


class GangReason(enum.StrEnum):
    """Condition and event reasons for gangs (controller/gang_plan.py)."""

    WAITING_FOR_MEMBERS = "GangWaitingForMembers"
    SCHEDULE_TIMEOUT = "GangScheduleTimeout"
    LARGER_THAN_PARTITION = "GangLargerThanPartition"
    GROUP_NOT_FOUND = "GangGroupNotFound"
    GROUP_DELETED = "GangGroupDeleted"
    MEMBER_FAILED = "GangMemberFailed"
    MEMBER_DELETED = "GangMemberDeleted"
    MEMBER_LOST = "GangMemberLost"
    ALREADY_RUNNING = "GangAlreadyRunning"
    ALLOCATION_TOO_SMALL = "GangAllocationTooSmall"
