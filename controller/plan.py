"""Pure reconcile decisions: what to do about one pod and its placeholder Slurm job(s).

`plan_pod(observed, config)` looks at the pod as it is now and the jobs whose marker names it, and
returns the actions that move both toward agreement; it remembers nothing between calls. An executor
applies the actions IN ORDER and stops at the first failure (the work queue retries the whole key),
so a later action may rely on an earlier one having succeeded - e.g. RemoveFinalizer after CancelJob.

Contract with the executor and the job cache:
- RecordEvent is the only source of events; the other actions record none themselves.
- SetPendingReason sets condition PodScheduled=False (reason, message).
- DeletePod sets condition DisruptionTarget=True (reason, message), then deletes the pod.
- BindPod binds through the pods/binding subresource with annotation ANNOTATION_SLURM_NODE=slurm_node
  on the Binding (the API server copies a Binding's annotations onto the pod).
- CancelJob: with `signal`, the batch shell is signalled (flags=BATCH_JOB); without, a plain cancel. The
  planner decides which (`ending`). A job already finished is success.
- After SubmitJob succeeds, the executor records the new job in the job cache before the pod is
  reconciled again (write-through); otherwise the next reconcile could submit a second job. (A
  duplicate is still caught - the oldest job is kept, the rest cancelled - but costs a submit.)
- The pod's job-id label is written only for a job the cache has seen, so a labelled job missing
  from a synced cache really left slurmctld ("vanished"). Don't plan before the cache's first sync.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge.config import BridgeConfig
from bridge.marker import JobMarker, decode_marker
from bridge.objects import PodInfo
from bridge.pending_reasons import pending_detail
from bridge.translate import (
    JobOutcome,
    TenantPolicyError,
    TranslationError,
    Verdict,
    job_spec_for,
    placeholder_job_for,
    select_pod,
    spec_digest,
)
from bridge.wellknown import CONDITION_POD_SCHEDULED, PHASE_SUCCEEDED, Reason
from slurm_client import Job, JobSpec, JobState

# --- Actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitJob:
    spec: JobSpec  # complete: marker comment set, script chosen by the placeholder mode


@dataclass(frozen=True)
class AddFinalizerAndLabel:
    """One patch: add the bridge finalizer and, when job_id is set, the job-id label."""

    job_id: int | None


@dataclass(frozen=True)
class SetPendingReason:
    reason: Reason
    message: str


@dataclass(frozen=True)
class BindPod:
    node_name: str  # Kubernetes node
    slurm_node: str  # first node of the job's allocation
    job_id: int


@dataclass(frozen=True)
class CancelJob:
    """End a placeholder job. With `exit_code`, the batch placeholder is told to exit with it (Slurm
    records COMPLETED 0:0 or FAILED N:0; SlurmClient.end_placeholder); without, a plain cancel (an
    external placeholder, or a job nothing ran for). Decided by `ending()`."""

    job_id: int
    outcome: JobOutcome
    why: str  # for logs
    exit_code: int | None = None
    comment: str | None = field(default=None, compare=False)  # the job's comment, as last seen


@dataclass(frozen=True)
class DeletePod:
    reason: Reason
    message: str
    evict: bool = False  # through the Eviction API (Slurm took the allocation back: a preemption)


@dataclass(frozen=True)
class RemoveFinalizer:
    pass


@dataclass(frozen=True)
class RecordEvent:
    reason: Reason
    message: str
    warning: bool = False


PodAction = (
    SubmitJob
    | AddFinalizerAndLabel
    | SetPendingReason
    | BindPod
    | CancelJob
    | DeletePod
    | RemoveFinalizer
    | RecordEvent
)


# --- Observation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodObservation:
    """Everything plan_pod looks at for one pod key (namespace/name)."""

    pod: PodInfo | None  # None: the pod no longer exists
    # Jobs (from the cache, finished ones included) whose marker names this pod's namespace/name.
    # Jobs without this cluster's marker are ignored; jobs of an earlier pod of the same name
    # (another UID) are cancelled as stale.
    jobs: Sequence[Job] = ()
    slurm_to_kubernetes_nodes: Mapping[str, str] = field(default_factory=dict)
    # The job the pod's job-id label names is missing from `jobs`: has a poll of Slurm that started after
    # that was first noticed confirmed it? (Another process may have labelled the pod for a job this
    # cache has not listed yet: the scheduler and the controller run apart.)
    labelled_job_absence_confirmed: bool = True


# Why a job ended, as the pod's (or gang members') deletion reason and event message.
_JOB_ENDINGS: dict[JobState, tuple[Reason, str]] = {
    JobState.COMPLETED: (Reason.JOB_COMPLETED, "completed"),
    JobState.CANCELLED: (Reason.JOB_CANCELLED, "was cancelled in Slurm (scancel)"),
    JobState.FAILED: (Reason.JOB_FAILED, "failed"),
    JobState.TIMEOUT: (Reason.JOB_TIMEOUT, "reached its time limit"),
    JobState.PREEMPTED: (Reason.JOB_PREEMPTED, "was preempted"),
    JobState.NODE_FAIL: (Reason.JOB_NODE_FAIL, "ended with a node failure"),
    JobState.BOOT_FAIL: (Reason.JOB_BOOT_FAIL, "ended with a node boot failure"),
    JobState.DEADLINE: (Reason.JOB_DEADLINE, "reached its deadline"),
    JobState.OUT_OF_MEMORY: (Reason.JOB_OUT_OF_MEMORY, "ran out of memory"),
}


def why_job_ended(state: JobState) -> tuple[Reason, str]:
    """The reason and the words ("was preempted", ...) for a job that ended in `state`."""
    return _JOB_ENDINGS.get(state, (Reason.JOB_FAILED, f"ended {state}"))


# States in which a job holds an allocation that a running pod may be using.
_HOLDING = frozenset({JobState.RUNNING, JobState.SUSPENDED})


def plan_pod(observed: PodObservation, config: BridgeConfig) -> list[PodAction]:
    pod = observed.pod
    marked = _marked_jobs(observed.jobs, config.marker_cluster_id)
    if pod is None:
        return [ending(job, JobOutcome.CANCEL, "its pod is gone") for job, _ in marked if _active(job)]
    if pod.scheduler_name != config.scheduler_name:
        return []

    actions: list[PodAction] = []
    mine: list[tuple[Job, JobMarker]] = []
    for job, marker in marked:
        if marker.pod_uid == pod.uid:
            mine.append((job, marker))
        elif _active(job):
            why = f"Slurm job {job.job_id} belongs to an earlier pod of this name (uid {marker.pod_uid})"
            actions += _cancel_unwanted(job, Reason.STALE_JOB, why)

    primary, duplicates = _primary_job(mine, pod.labelled_job_id)
    for job in duplicates:
        kept = primary[0].job_id if primary is not None else None
        why = f"Slurm job {job.job_id} duplicates job {kept}"
        actions += _cancel_unwanted(job, Reason.DUPLICATE_JOB, why)

    if pod.is_terminal:
        return actions + _release_for_terminal_pod(pod, primary)
    if pod.is_deleting:
        return actions + _release_for_deleted_pod(pod, primary)
    return actions + _plan_live_pod(pod, primary, observed, config)


def plan_orphan_cleanup(
    jobs: Iterable[Job],
    live_pod_uids: Collection[str],
    cluster_id: str,
    now: datetime,
    min_age: timedelta = timedelta(minutes=1),
) -> list[CancelJob]:
    """Cancel this cluster's active placeholder jobs whose pod no longer exists.

    Only jobs with this cluster's marker are considered; a job without a positive marker is never
    touched. `live_pod_uids` must come from a synced pod cache; jobs younger than `min_age` (or with
    no submit time yet) are spared, so a pod another replica has only just seen is not mistaken
    for a gone one. `now` is timezone-aware, like the client's datetimes.
    """
    return [
        ending(job, JobOutcome.CANCEL, f"orphan: pod {m.namespace}/{m.pod_name} (uid {m.pod_uid}) is gone")
        for job, m in _marked_jobs(jobs, cluster_id)
        if _active(job)
        and m.pod_uid not in live_pod_uids
        and job.submit_time is not None
        and now - job.submit_time >= min_age
    ]


# --- Pieces -------------------------------------------------------------------------------------------


def _plan_live_pod(
    pod: PodInfo, primary: tuple[Job, JobMarker] | None, observed: PodObservation, config: BridgeConfig
) -> list[PodAction]:
    slurm_to_kubernetes_nodes = observed.slurm_to_kubernetes_nodes
    if primary is None:
        if pod.labelled_job_id is not None:
            if not config.namespace_allowed(pod.namespace):
                return []  # labelled by another bridge that manages this namespace: not ours
            if not observed.labelled_job_absence_confirmed:
                return []  # the cache may not have listed that job yet: look again after the next poll
            message = f"Slurm job {pod.labelled_job_id} left slurmctld before its end was seen"
            return _delete_pod(Reason.JOB_VANISHED, message)
        if pod.is_bound:
            return []  # bound by someone else (e.g. spec.nodeName set by hand): not ours to manage
        return _plan_submission(pod, config)

    job, marker = primary
    if job.state.is_finished:
        if not pod.is_bound and _desired_digest(pod, config) not in (None, marker.spec_digest):
            return _plan_submission(pod, config)  # the job we cancelled when the pod's options changed
        reason, ended = why_job_ended(job.state)
        why = f" ({job.state_reason})" if job.state_reason else ""  # e.g. BadConstraints
        return _delete_pod(reason, f"Slurm job {job.job_id} {ended}{why}; deleting the pod")

    actions: list[PodAction] = []
    if not pod.has_finalizer or pod.labelled_job_id != job.job_id:
        actions.append(AddFinalizerAndLabel(job.job_id))
        actions.append(RecordEvent(Reason.JOB_SUBMITTED, f"Slurm job {job.job_id} holds this pod's place"))

    if job.state is JobState.PENDING:
        if pod.is_bound:
            # Slurm requeued the job: its allocation is gone, so the pod must not keep running.
            return actions + _delete_pod(Reason.JOB_REQUEUED, f"Slurm job {job.job_id} was requeued")
        return actions + _plan_pending(pod, job, marker, config)
    if pod.is_bound:
        return actions
    if job.state is JobState.SUSPENDED:
        return actions + _set_pending(pod, Reason.JOB_SUSPENDED, f"Slurm job {job.job_id} is suspended")
    if job.state is JobState.RUNNING:
        return actions + _bind(pod, job, slurm_to_kubernetes_nodes)
    return actions  # UNKNOWN: look again when the cache has more


def _plan_submission(pod: PodInfo, config: BridgeConfig) -> list[PodAction]:
    selection = select_pod(pod, config)
    if selection.verdict is Verdict.REFUSE and selection.reason is not None:
        return _set_pending(pod, selection.reason, selection.message, warning=True)
    if selection.verdict is not Verdict.SUBMIT:
        return []
    try:
        spec = placeholder_job_for(pod, config)
    except TranslationError as error:
        return _set_pending(pod, _refusal_reason(error), error.message, warning=True)
    # Finalizer first: a pod deleted right after the submit still comes back to us for its job.
    prepare: list[PodAction] = [] if pod.has_finalizer else [AddFinalizerAndLabel(None)]
    return [*prepare, SubmitJob(spec)]


def _refusal_reason(error: TranslationError) -> Reason:
    """A request the tenant policy forbids says so; any other untranslatable pod has bad options."""
    return (
        Reason.TENANT_POLICY_VIOLATION if isinstance(error, TenantPolicyError) else Reason.INVALID_JOB_OPTIONS
    )


def _plan_pending(pod: PodInfo, job: Job, marker: JobMarker, config: BridgeConfig) -> list[PodAction]:
    try:
        desired = job_spec_for(pod, config)
    except TranslationError as error:
        message = f"{error.message} (Slurm job {job.job_id} stays queued with the earlier options)"
        return _set_pending(pod, _refusal_reason(error), message, warning=True)
    if spec_digest(desired) != marker.spec_digest:
        # Cancel and resubmit rather than update: most of a job's request (CPUs, memory, GRES) cannot
        # be changed through an update, and one path is easier to trust. The job loses its queue place.
        why = f"Slurm job {job.job_id} no longer matches the pod's options"
        return [
            ending(job, JobOutcome.CANCEL, why),
            RecordEvent(Reason.JOB_SUPERSEDED, f"{why}; cancelling it and submitting a new one"),
            *_plan_submission(pod, config),
        ]
    detail = pending_detail(job.state_reason)
    return _set_pending(pod, Reason.JOB_PENDING, f"Slurm job {job.job_id} pending{detail}")


def _bind(pod: PodInfo, job: Job, slurm_to_kubernetes_nodes: Mapping[str, str]) -> list[PodAction]:
    if not job.nodes:
        return []  # RUNNING without a node list yet: the next job update brings it
    slurm_node = job.nodes[0]
    node_name = slurm_to_kubernetes_nodes.get(slurm_node)
    if node_name is None:
        message = f"Slurm job {job.job_id} runs on Slurm node {slurm_node}, which is no Kubernetes node"
        return _set_pending(pod, Reason.NODE_NOT_IN_KUBERNETES, message, warning=True)
    return [
        BindPod(node_name=node_name, slurm_node=slurm_node, job_id=job.job_id),
        RecordEvent(
            Reason.SCHEDULED, f"Successfully assigned {pod.key} to {node_name} (Slurm job {job.job_id})"
        ),
    ]


def _release_for_terminal_pod(pod: PodInfo, primary: tuple[Job, JobMarker] | None) -> list[PodAction]:
    actions: list[PodAction] = []
    if primary is not None and _active(primary[0]):
        job = primary[0]
        outcome = JobOutcome.SUCCESS if pod.phase == PHASE_SUCCEEDED else JobOutcome.FAILURE
        actions.append(ending(job, outcome, f"pod {pod.phase}", pod.failed_exit_code))
        actions.append(RecordEvent(Reason.JOB_RELEASED, f"pod {pod.phase}: ending Slurm job {job.job_id}"))
    if pod.has_finalizer:
        actions.append(RemoveFinalizer())
    return actions


def _release_for_deleted_pod(pod: PodInfo, primary: tuple[Job, JobMarker] | None) -> list[PodAction]:
    actions: list[PodAction] = []
    job = primary[0] if primary is not None else None
    if job is not None and _active(job):
        if pod.is_bound and job.state in _HOLDING:
            # Release at terminal, not Terminating: the containers may still run on the allocation.
            return []
        why = "pod deleted before it was bound" if not pod.is_bound else "pod deleted"
        actions.append(ending(job, JobOutcome.CANCEL, why))
        actions.append(RecordEvent(Reason.JOB_RELEASED, f"{why}: cancelling Slurm job {job.job_id}"))
    if pod.has_finalizer:
        actions.append(RemoveFinalizer())
    return actions


def _delete_pod(reason: Reason, message: str) -> list[PodAction]:
    evict = reason in EVICTION_REASONS
    return [RecordEvent(reason, message, warning=True), DeletePod(reason, message, evict)]


def _set_pending(pod: PodInfo, reason: Reason, message: str, *, warning: bool = False) -> list[PodAction]:
    """PodScheduled=False with this reason and message, plus an event - only when it changes."""
    current = pod.condition(CONDITION_POD_SCHEDULED)
    shown = (current.status, current.reason, current.message) if current is not None else None
    if shown == ("False", reason, message):
        return []
    return [SetPendingReason(reason, message), RecordEvent(reason, message, warning)]


def _cancel_unwanted(job: Job, reason: Reason, why: str) -> list[PodAction]:
    return [ending(job, JobOutcome.CANCEL, why), RecordEvent(reason, f"cancelling: {why}", warning=True)]


def ending(job: Job, outcome: JobOutcome, why: str, failed_exit_code: int | None = None) -> CancelJob:
    """How to end `job`: only a running placeholder can report an outcome. A batch placeholder (or one of
    unknown kind) exits with the pod's code (0, or the failed container's, 1 when unknown); an external
    one ignores signals and is cancelled plainly."""
    outcome = outcome if job.state is JobState.RUNNING else JobOutcome.CANCEL
    if outcome is JobOutcome.CANCEL or job.batch is False:
        return CancelJob(job.job_id, outcome, why)
    exit_code = 0 if outcome is JobOutcome.SUCCESS else (failed_exit_code or 1)
    return CancelJob(job.job_id, outcome, why, exit_code, job.comment)


# Job endings Kubernetes users know as evictions: Slurm took the resources back, by preempting the job
# (PreemptMode=CANCEL) or requeueing it (PreemptMode=REQUEUE, `scontrol requeue`, a node failure).
EVICTION_REASONS: frozenset[str] = frozenset({Reason.JOB_PREEMPTED, Reason.JOB_REQUEUED})


def _active(job: Job) -> bool:
    return not job.state.is_finished


def _marked_jobs(jobs: Iterable[Job], cluster_id: str) -> list[tuple[Job, JobMarker]]:
    marked = ((job, decode_marker(job.comment, cluster_id)) for job in jobs)
    return sorted(((job, m) for job, m in marked if m is not None), key=lambda pair: pair[0].job_id)


def _primary_job(
    mine: Sequence[tuple[Job, JobMarker]], labelled_job_id: int | None
) -> tuple[tuple[Job, JobMarker] | None, list[Job]]:
    """The job that stands for the pod, and the active duplicates to cancel.

    With active jobs, the oldest (lowest id) one is kept. With none, the labelled job (or the newest)
    tells how the pod's job ended.
    """
    active = [pair for pair in mine if _active(pair[0])]
    if active:
        return active[0], [job for job, _ in active[1:]]
    labelled = [pair for pair in mine if pair[0].job_id == labelled_job_id]
    if labelled:
        return labelled[0], []
    return (mine[-1] if mine else None), []


def _desired_digest(pod: PodInfo, config: BridgeConfig) -> str | None:
    try:
        return spec_digest(job_spec_for(pod, config))
    except TranslationError:
        return None
