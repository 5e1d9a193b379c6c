"""Pure gang decisions: what to do about one gang and its single multi-node placeholder Slurm job.

`plan_gang(observed, config)` looks at the group object, every pod of the gang and the jobs whose gang
marker names it, and returns the actions that move them toward agreement; it remembers nothing between
calls. As in controller/plan.py, an executor applies the actions IN ORDER and stops at the first
failure (the work queue retries the whole gang key), so a later action may rely on an earlier one.

Lifecycle (status phase of a coscheduling PodGroup in brackets):

- [Pending] No job until at least minMember live, unbound pods of ours exist. Options are translated
  and the partition size checked as soon as one member exists, so a broken or impossible gang is
  reported before the rest arrive; nothing is ever submitted for it.
- Waiting longer than the group's scheduleTimeoutSeconds (counted from the oldest waiting member's
  creation; `now` is injected) is reported - PodScheduled=False reason GangScheduleTimeout on the
  members and a warning event on the group - and nothing is submitted. Waiting holds nothing in Slurm,
  so the timeout only reports: when the missing members do arrive, the gang is submitted.
- [Scheduling] One job with one node per member (bridge/gang_translate.py). Members are labelled with
  the job id when the job is seen. While the job is pending, a change of membership or options gives
  another digest: the job is cancelled and a new one submitted.
- [Running] When the job RUNS, every member is bound, each to a DISTINCT allocated node, in rank order
  (bridge/gang.py `member_order`) along job.nodes. A gang never binds in part: if fewer allocated nodes
  than members map to Kubernetes nodes, none is bound and the members say why. Members already bound
  (a retry after a partial failure) keep their nodes; the rest get the free ones.
- [Failed] A member that fails, is deleted, or disappears while the gang runs ends the whole gang
  (failure policy EndGang, the default): the other members are deleted and, once no bound member is
  still running, the job is cancelled with the outcome FAILURE. Failure policy Continue (group
  annotation ``scheduler.slinky.slurm.net/gang-failure-policy: Continue``) lets the others run on.
  Resources are released at terminal, never while a member may still run on its node.
- [Finished] When every member has ended, the job is ended with the members' outcome (SUCCESS when all
  succeeded) and the finalizers come off.

Contract with the executor (in addition to controller/plan.py's for SubmitJob and CancelJob):
- Pods are named by PodRef (name and UID, the namespace is the gang's); use the UID as a precondition.
- RecordGroupEvent records on the group object (for a LeaderWorkerSet group: its leader pod);
  RecordPodEvent on one pod. No other action records events.
- SetMembersPending sets PodScheduled=False (reason, message) on each listed pod.
- AddMemberFinalizers adds the bridge finalizer, and the job-id label when job_id is set, to each pod.
- BindMembers binds every listed pod through pods/binding with annotation ANNOTATION_SLURM_NODE on the
  Binding. A failure part-way is retried: the next plan keeps the bound ones and binds the rest.
- DeleteMembers sets DisruptionTarget=True (reason, message) on each pod, then deletes it.
- SetGroupStatus writes a coscheduling PodGroup's status subresource (phase, running, succeeded,
  failed, scheduleStartTime). SetGroupCondition sets a Workload-API PodGroup's condition
  PodGroupInitiallyScheduled. LabelGroup writes the job-id label on the group object (metadata, so it
  survives a CRD without the field). None of them is planned for a LeaderWorkerSet group.
- After SubmitJob, the job is recorded in the job cache's gang index before the gang is planned again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from bridge.config import BridgeConfig
from bridge.gang import (
    FailurePolicy,
    GangInfo,
    GangKey,
    GangKind,
    GroupStatus,
    member_order,
)
from bridge.gang_marker import GangMarker, decode_gang_marker
from bridge.gang_translate import (
    GangTranslationError,
    gang_job_spec_for,
    gang_spec_digest,
    placeholder_gang_job_for,
)
from bridge.objects import PodInfo
from bridge.pending_reasons import pending_detail
from bridge.translate import JobOutcome, namespace_refusal
from bridge.wellknown import (
    ANNOTATION_SLURM_NODE,
    CONDITION_POD_SCHEDULED,
    PHASE_FAILED,
    PHASE_SUCCEEDED,
    GangReason,
    Reason,
)
from controller.plan import EVICTION_REASONS, CancelJob, SubmitJob, ending, why_job_ended
from slurm_client import Job, JobState

AnyReason = Reason | GangReason


class GangPhase(enum.StrEnum):
    """A coscheduling PodGroup's status.phase, as the bridge writes it."""

    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    RUNNING = "Running"
    FINISHED = "Finished"
    FAILED = "Failed"


# --- Actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodRef:
    name: str
    uid: str


@dataclass(frozen=True)
class SetMembersPending:
    pods: tuple[PodRef, ...]
    reason: AnyReason
    message: str


@dataclass(frozen=True)
class AddMemberFinalizers:
    """One patch per pod: the bridge finalizer and, when job_id is set, the job-id label."""

    pods: tuple[PodRef, ...]
    job_id: int | None


@dataclass(frozen=True)
class MemberBinding:
    pod: PodRef
    node_name: str  # Kubernetes node
    slurm_node: str  # its node in the job's allocation


@dataclass(frozen=True)
class BindMembers:
    job_id: int
    bindings: tuple[MemberBinding, ...]


@dataclass(frozen=True)
class DeleteMembers:
    pods: tuple[PodRef, ...]
    reason: AnyReason
    message: str
    evict: bool = False  # through the Eviction API (Slurm took the allocation back: a preemption)


@dataclass(frozen=True)
class RemoveMemberFinalizers:
    pods: tuple[PodRef, ...]


@dataclass(frozen=True)
class SetGroupStatus:
    status: GroupStatus  # coscheduling PodGroup only


@dataclass(frozen=True)
class SetGroupCondition:
    """Workload-API PodGroup only: condition PodGroupInitiallyScheduled."""

    status: str  # "True" | "False"
    reason: str
    message: str


@dataclass(frozen=True)
class LabelGroup:
    job_id: int


@dataclass(frozen=True)
class RecordGroupEvent:
    reason: AnyReason
    message: str
    warning: bool = False


@dataclass(frozen=True)
class RecordPodEvent:
    pod: PodRef
    reason: AnyReason
    message: str
    warning: bool = False


GangAction = (
    SubmitJob
    | CancelJob
    | SetMembersPending
    | AddMemberFinalizers
    | BindMembers
    | DeleteMembers
    | RemoveMemberFinalizers
    | SetGroupStatus
    | SetGroupCondition
    | LabelGroup
    | RecordGroupEvent
    | RecordPodEvent
)


# --- Observation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GangObservation:
    """Everything plan_gang looks at for one gang key."""

    key: GangKey
    now: datetime  # timezone-aware, like the client's datetimes
    gang: GangInfo | None  # None: the group object (or LWS leader pod) does not exist
    # Every pod whose gang key is `key`, whatever its scheduler or state, from a synced pod cache.
    pods: Sequence[PodInfo] = ()
    # Jobs (finished ones included) whose gang marker names `key`; other clusters' jobs are ignored.
    jobs: Sequence[Job] = ()
    # Annotations of the gang's owner workload (bridge/gang.py `owner_of`), when it exists.
    owner_annotations: Mapping[str, str] = field(default_factory=dict)
    slurm_to_kubernetes_nodes: Mapping[str, str] = field(default_factory=dict)
    # Node count of each Slurm partition; a gang's partition missing here is not checked.
    partition_nodes: Mapping[str, int] = field(default_factory=dict)


_GROUP_WORDS: dict[GangKind, str] = {
    GangKind.WORKLOAD: "PodGroup",
    GangKind.COSCHEDULING: "PodGroup",
    GangKind.LWS: "LeaderWorkerSet group",
}


@dataclass
class _Plan:
    """What one planning pass decided, besides its actions: the facts the group status is made of."""

    actions: list[GangAction] = field(default_factory=list)
    phase: GangPhase = GangPhase.PENDING
    job_id: int | None = None
    submitted: bool = False
    bound: bool = False  # every member of the running job is bound
    waiting: tuple[AnyReason, str] | None = None  # why the members wait, as they are told


@dataclass(frozen=True)
class _View:
    observed: GangObservation
    config: BridgeConfig
    gang: GangInfo
    ours: tuple[PodInfo, ...]  # the gang's pods of our scheduler
    marked: tuple[tuple[Job, GangMarker], ...]  # this cluster's jobs for the key, by job id

    def crew(self, job: Job) -> list[PodInfo]:
        """Our pods labelled with `job`'s id: its members, live or not."""
        return [p for p in self.ours if p.labelled_job_id == job.job_id]

    @cached_property
    def unbound_digest(self) -> str | None:
        """The digest of a job for every live unbound member; None if they cannot become one.

        Computed once per plan: translating a gang translates every member.
        """
        members = [p for p in self.ours if _live(p) and not p.is_bound]
        try:
            return _gang_spec_digest(self, members)
        except GangTranslationError:
            return None


def plan_gang(observed: GangObservation, config: BridgeConfig) -> list[GangAction]:
    """The actions that bring `observed.key`'s pods, group status and Slurm job into agreement."""
    ours = tuple(member_order(p for p in observed.pods if p.scheduler_name == config.scheduler_name))
    marked = tuple(_marked_jobs(observed.jobs, config.marker_cluster_id, observed.key))
    if not ours and not marked:
        return []  # no pod of our scheduler and no job of ours: another scheduler's group, not ours to write
    gang = observed.gang
    if gang is None or gang.is_deleting:
        return _plan_without_group(observed, ours, marked)
    if not gang.all_or_nothing:
        return []  # basic policy: each pod is planned on its own (controller/plan.py)
    view = _View(observed, config, gang, ours, marked)

    plan = _Plan()
    mine = [(job, m) for job, m in marked if m.group_uid == gang.uid]
    for job, m in marked:
        if m.group_uid != gang.uid and _active(job):
            why = f"Slurm job {job.job_id} belongs to an earlier group of this name (uid {m.group_uid})"
            plan.actions += _release(view, job, Reason.STALE_JOB, why, unbound_too=False)
    active = [pair for pair in mine if _active(pair[0])]
    for job, _ in active[1:]:
        why = f"Slurm job {job.job_id} duplicates job {active[0][0].job_id}"
        plan.actions += _release(view, job, Reason.DUPLICATE_JOB, why, unbound_too=False)
    plan.actions += _leftovers(view)

    if active:
        _plan_with_job(view, *active[0], plan)
    else:
        _plan_without_job(view, mine[-1][0] if mine else None, plan)
    plan.actions += _finalizers_to_remove(view, plan.actions)
    plan.actions += _group_status(view, plan)
    return plan.actions


def gang_recheck_at(observed: GangObservation, config: BridgeConfig) -> datetime | None:
    """When the gang's schedule timeout will pass, if it is waiting for members and it has not yet.

    The reconciler requeues the gang key for then, so the timeout is reported on time.
    """
    gang = observed.gang
    if gang is None or not gang.all_or_nothing:
        return None
    waiting = [
        p
        for p in observed.pods
        if p.scheduler_name == config.scheduler_name
        and _live(p)
        and not p.is_bound
        and p.labelled_job_id is None
    ]
    if len(waiting) >= gang.min_member:
        return None
    deadline = _deadline(gang, waiting)
    return deadline if deadline is not None and deadline > observed.now else None


def plan_gang_orphan_cleanup(
    jobs: Iterable[Job],
    live_group_uids: Iterable[str],
    held_job_ids: Iterable[int],
    cluster_id: str,
    now: datetime,
    min_age: timedelta = timedelta(minutes=1),
) -> list[CancelJob]:
    """Cancel this cluster's active gang jobs whose group is gone and that no live pod still runs on.

    `live_group_uids` are the UIDs of the PodGroups and LWS leader pods in a synced cache;
    `held_job_ids` the job-id labels of live pods (those jobs are the gang reconciler's to release,
    once their pods are terminal). Jobs younger than `min_age` are spared, as in plan_orphan_cleanup.
    """
    live, held = set(live_group_uids), set(held_job_ids)
    return [
        CancelJob(job.job_id, JobOutcome.CANCEL, f"orphan: gang {m.gang_key} (uid {m.group_uid}) is gone")
        for job, m in _decoded(jobs, cluster_id)
        if _active(job)
        and m.group_uid not in live
        and job.job_id not in held
        and job.submit_time is not None
        and now - job.submit_time >= min_age
    ]


# --- With and without a job ---------------------------------------------------------------------------


def _plan_with_job(view: _View, job: Job, marker: GangMarker, plan: _Plan) -> None:
    plan.job_id = job.job_id
    crew = view.crew(job)
    bound = [p for p in crew if p.is_bound]
    if job.state is JobState.PENDING and bound:
        # Slurm requeued the job: its allocation is gone, so no member may keep running.
        plan.phase = GangPhase.SCHEDULING
        message = f"Slurm job {job.job_id} was requeued; deleting the members it had started"
        plan.actions += _delete([p for p in bound if _live(p)], Reason.JOB_REQUEUED, message)
    elif job.state is JobState.RUNNING and bound:
        _plan_running(view, job, crew, plan)
    elif job.state in (JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED) and not bound:
        _plan_unstarted(view, job, marker, plan)
    else:
        # SUSPENDED with members bound (they keep running, as single pods do), or UNKNOWN.
        plan.phase = GangPhase.RUNNING if bound else GangPhase.SCHEDULING


def _plan_unstarted(view: _View, job: Job, marker: GangMarker, plan: _Plan) -> None:
    """The job holds the gang's place but no member is bound yet: check it still fits, then bind."""
    plan.phase = GangPhase.SCHEDULING
    candidates = _waiting(view, job)
    if not candidates:
        why = f"no member is left for Slurm job {job.job_id}"
        plan.phase = GangPhase.PENDING
        plan.actions.append(ending(job, JobOutcome.CANCEL, why))
        plan.actions.append(RecordGroupEvent(Reason.JOB_RELEASED, f"{why}: cancelling it"))
        return
    try:
        desired = _gang_spec_digest(view, candidates)
    except GangTranslationError as error:
        message = f"{error.message} (Slurm job {job.job_id} stays queued with the earlier options)"
        plan.actions += _pending(view, candidates, Reason.INVALID_JOB_OPTIONS, message, plan, warning=True)
        return
    if desired != marker.spec_digest:
        # Cancel and resubmit, as for single pods: most of a job's request cannot be updated in place.
        why = f"Slurm job {job.job_id} no longer matches the gang ({len(candidates)} members now)"
        plan.actions.append(ending(job, JobOutcome.CANCEL, why))
        plan.actions.append(RecordGroupEvent(Reason.JOB_SUPERSEDED, f"{why}; cancelling it"))
        _plan_submission(view, candidates, plan)
        return

    unattached = [p for p in candidates if not p.has_finalizer or p.labelled_job_id != job.job_id]
    if unattached:
        plan.actions.append(AddMemberFinalizers(_refs(unattached), job.job_id))
        message = f"Slurm job {job.job_id} holds the places of {len(candidates)} members"
        plan.actions.append(RecordGroupEvent(Reason.JOB_SUBMITTED, message))
    if job.state is JobState.PENDING:
        detail = pending_detail(job.state_reason)
        message = f"Slurm job {job.job_id} pending{detail}"
        plan.actions += _pending(view, candidates, Reason.JOB_PENDING, message, plan)
    elif job.state is JobState.SUSPENDED:
        message = f"Slurm job {job.job_id} is suspended"
        plan.actions += _pending(view, candidates, Reason.JOB_SUSPENDED, message, plan)
    else:
        plan.actions += _bind(view, job, candidates, already_bound=[], plan=plan)


def _plan_running(view: _View, job: Job, crew: list[PodInfo], plan: _Plan) -> None:
    """The job runs and members are bound: bind any left, or end the gang when it is over."""
    plan.phase = GangPhase.RUNNING
    size = len(job.nodes) or job.node_count or len(crew)
    failed = [p for p in crew if p.phase == PHASE_FAILED]
    deleted = [p for p in crew if p.is_deleting and not p.is_terminal]
    lost = max(0, size - len(crew))
    policy = view.gang.failure_policy or FailurePolicy.END_GANG

    trigger: tuple[GangReason, str] | None = None
    if policy is FailurePolicy.END_GANG:
        if failed:
            trigger = (GangReason.MEMBER_FAILED, f"member {_names(failed)} failed")
        elif deleted:
            trigger = (GangReason.MEMBER_DELETED, f"member {_names(deleted)} was deleted")
        elif lost:
            trigger = (GangReason.MEMBER_LOST, f"{lost} of {size} members are gone")
    over = all(p.is_terminal for p in crew) and (not lost or policy is FailurePolicy.CONTINUE)

    if trigger is not None:
        plan.phase = GangPhase.FAILED
        reason, what = trigger
        message = f"{what}: ending the gang and its Slurm job {job.job_id}"
        plan.actions += _release(view, job, reason, message)
        return
    if over:
        plan.phase = GangPhase.FINISHED if all(p.phase == PHASE_SUCCEEDED for p in crew) else GangPhase.FAILED
        message = f"every member has ended: releasing Slurm job {job.job_id}"
        plan.actions += _release(view, job, Reason.JOB_RELEASED, message)
        return

    # Members labelled but not bound (a bind that failed part-way) get the free nodes.
    rest = [p for p in crew if _live(p) and not p.is_bound]
    bound = [p for p in crew if p.is_bound]
    if rest:
        plan.actions += _bind(view, job, rest, already_bound=bound, plan=plan)
    else:
        plan.bound = True
    late = [p for p in _waiting(view, None) if p.labelled_job_id != job.job_id]
    message = (
        f"the gang runs as Slurm job {job.job_id} on {size} nodes; this pod joined after it started"
        " and waits until the gang has ended"
    )
    plan.actions += _pending(view, late, GangReason.ALREADY_RUNNING, message, None)


def _plan_without_job(view: _View, last: Job | None, plan: _Plan) -> None:
    """No active job: report how the last one ended, then gather the members of the next."""
    current = view.gang.status.phase
    if current in (GangPhase.FINISHED, GangPhase.FAILED):
        plan.phase = GangPhase(current)  # the pods of a finished round may be gone by now
    if last is not None:
        crew = view.crew(last)
        if crew:
            succeeded = all(p.phase == PHASE_SUCCEEDED for p in crew)
            plan.phase = GangPhase.FINISHED if succeeded else GangPhase.FAILED
        plan.job_id = last.job_id
    waiting = _waiting(view, None)
    if waiting:
        plan.phase = GangPhase.PENDING
        _plan_submission(view, waiting, plan)


def _plan_submission(view: _View, members: Sequence[PodInfo], plan: _Plan) -> None:
    if not members:
        return
    gang, config = view.gang, view.config
    refusal = namespace_refusal(members[0], config)
    if refusal is not None:
        plan.actions += _pending(view, members, Reason.NAMESPACE_NOT_ALLOWED, refusal, plan, warning=True)
        return
    if gang.failure_policy is None:
        known = ", ".join(p.value for p in FailurePolicy)
        message = f"the group's failure policy is not one of {known}"
        plan.actions += _pending(view, members, Reason.INVALID_JOB_OPTIONS, message, plan, warning=True)
        return
    try:
        spec = placeholder_gang_job_for(gang, member_order(members), config, view.observed.owner_annotations)
    except GangTranslationError as error:
        plan.actions += _pending(view, members, Reason.INVALID_JOB_OPTIONS, error.message, plan, warning=True)
        return
    needed = max(len(members), gang.min_member)
    available = view.observed.partition_nodes.get(spec.partition or "")
    if available is not None and needed > available:
        message = (
            f"the gang needs {needed} nodes (one per member) but partition {spec.partition!r} has "
            f"{available}; it can never run, so nothing is submitted"
        )
        plan.actions += _pending(view, members, GangReason.LARGER_THAN_PARTITION, message, plan, warning=True)
        return
    if len(members) < gang.min_member:
        deadline = _deadline(gang, members)
        if deadline is not None and view.observed.now >= deadline:
            message = (
                f"only {len(members)} of {gang.min_member} members after {gang.schedule_timeout_seconds}s"
                " (scheduleTimeoutSeconds); nothing is submitted until all of them exist"
            )
            reason: AnyReason = GangReason.SCHEDULE_TIMEOUT
        else:
            message = f"waiting for members: {len(members)} of {gang.min_member} exist"
            reason = GangReason.WAITING_FOR_MEMBERS
        timed_out = reason is GangReason.SCHEDULE_TIMEOUT
        plan.actions += _pending(view, members, reason, message, plan, warning=timed_out)
        return
    unprepared = [p for p in members if not p.has_finalizer]
    # Finalizers first: a member deleted right after the submit still comes back to us.
    if unprepared:
        plan.actions.append(AddMemberFinalizers(_refs(unprepared), None))
    plan.actions.append(SubmitJob(spec))
    plan.phase = GangPhase.SCHEDULING
    plan.submitted = True


def _plan_without_group(
    observed: GangObservation, ours: Sequence[PodInfo], marked: Sequence[tuple[Job, GangMarker]]
) -> list[GangAction]:
    """The group object (or LWS leader) is gone, or not created yet: nothing may run for it.

    Bound members are deleted and their job cancelled once none of them still runs; unbound members
    wait for the group (their job, if one was pending, is cancelled). There is no group to record
    events on, so the members' conditions say it, with an event on each waiting pod.
    """
    key = observed.key
    what = f"{_GROUP_WORDS[key.kind]} {key.namespace}/{key.name}"
    actions: list[GangAction] = []
    held: set[int] = set()
    for job, _ in marked:
        if not _active(job):
            continue
        crew = [p for p in ours if p.labelled_job_id == job.job_id]
        message = f"{what} is gone: ending its gang and Slurm job {job.job_id}"
        doomed = [p for p in crew if _live(p) and p.is_bound]
        actions += _delete(doomed, GangReason.GROUP_DELETED, message, event=False)
        if any(p.is_bound and not p.is_terminal for p in crew):
            held.add(job.job_id)  # release at terminal: its members may still run on the allocation
        else:
            actions.append(ending(job, _outcome(crew), message, _exit_code(crew)))
    active = {job.job_id for job, _ in marked if _active(job)}
    for (reason, message), pods in _bound_leftovers(ours, marked, active).items():
        actions += _delete(pods, reason, message, event=False)
    message = f"{what} does not exist; the pod waits for it"
    for pod in ours:
        if _live(pod) and not pod.is_bound and not _shown(pod, GangReason.GROUP_NOT_FOUND, message):
            ref = _ref(pod)
            actions.append(SetMembersPending((ref,), GangReason.GROUP_NOT_FOUND, message))
            actions.append(RecordPodEvent(ref, GangReason.GROUP_NOT_FOUND, message, warning=True))
    done = [
        p for p in ours if p.has_finalizer and not _live(p) and not (p.is_bound and p.labelled_job_id in held)
    ]
    if done:
        actions.append(RemoveMemberFinalizers(_refs(done)))
    return actions


# --- Pieces -------------------------------------------------------------------------------------------


def _waiting(view: _View, job: Job | None) -> list[PodInfo]:
    """Live unbound members that may go into `job` (or the next one).

    That is the unlabelled ones, those labelled with `job`, and those whose labelled job is no more
    without having ended for them (superseded, of an earlier incarnation, or never seen).
    """
    others = {j.job_id for j, _ in view.marked if _active(j) and (job is None or j.job_id != job.job_id)}
    return [
        p
        for p in view.ours
        if _live(p)
        and not p.is_bound
        and (
            p.labelled_job_id is None
            or (job is not None and p.labelled_job_id == job.job_id)
            or (p.labelled_job_id not in others and not _ended_with(view, p))
        )
    ]


def _ended_with(view: _View, pod: PodInfo) -> bool:
    """Whether an unbound pod's labelled (finished) job ended for the gang as it still is.

    A job cancelled because the gang changed (another digest) is no reason to delete its members:
    they go into the next job. A job of the same digest that ended before it started (scancel, a
    failed boot) takes its waiting members with it, as for single pods.
    """
    for job, marker in view.marked:
        if job.job_id == pod.labelled_job_id:
            if marker.group_uid != view.gang.uid:
                return False  # an earlier incarnation's job: the pod waits for this one
            return not _active(job) and view.unbound_digest == marker.spec_digest
    return False


def _leftovers(view: _View) -> list[GangAction]:
    """Delete live members whose labelled job has ended (or left slurmctld unseen) under them.

    Bound ones always: they run without an allocation. Unbound ones only when their job ended for
    the gang as it still is (`_ended_with`); otherwise they wait for the next job.
    """
    active_ids = {job.job_id for job, _ in view.marked if _active(job)}
    endings = _bound_leftovers(view.ours, view.marked, active_ids)
    for job, _ in view.marked:
        if _active(job):
            continue
        reason, ended = why_job_ended(job.state)
        waiting = [
            p
            for p in view.ours
            if p.labelled_job_id == job.job_id and _live(p) and not p.is_bound and _ended_with(view, p)
        ]
        if waiting:
            message = f"Slurm job {job.job_id} {ended}; deleting the gang's members"
            endings.setdefault((reason, message), []).extend(waiting)
    actions: list[GangAction] = []
    for (why, message), pods in endings.items():
        actions += _delete(pods, why, message)
    return actions


def _bound_leftovers(
    ours: Sequence[PodInfo], marked: Sequence[tuple[Job, GangMarker]], active: set[int]
) -> dict[tuple[AnyReason, str], list[PodInfo]]:
    """Live bound members labelled with a job that is no longer active, by why it ended."""
    jobs = {job.job_id: job for job, _ in marked}
    endings: dict[tuple[AnyReason, str], list[PodInfo]] = {}
    for pod in ours:
        label = pod.labelled_job_id
        if label is None or label in active or not _live(pod) or not pod.is_bound:
            continue
        job = jobs.get(label)
        if job is None:
            ending: tuple[AnyReason, str] = (
                Reason.JOB_VANISHED,
                f"Slurm job {label} left slurmctld before its end was seen",
            )
        else:
            reason, ended = why_job_ended(job.state)
            ending = (reason, f"Slurm job {label} {ended}; deleting the gang's members")
        endings.setdefault(ending, []).append(pod)
    return endings


def _release(
    view: _View, job: Job, reason: AnyReason, message: str, *, unbound_too: bool = True
) -> list[GangAction]:
    """End `job`: delete its live members (bound ones only, unless `unbound_too`), and cancel it once
    none of them may still run on its allocation; then their finalizers come off.

    Members are deleted with `reason`; the cancel is announced as JOB_RELEASED, except for the
    single-pod reasons (stale, duplicate), which keep their own as controller/plan.py does.
    """
    crew = view.crew(job)
    doomed = [p for p in crew if _live(p) and (unbound_too or p.is_bound)]
    actions = _delete(doomed, reason, message)
    if any(p.is_bound and not p.is_terminal for p in crew):
        return actions  # release at terminal, not while a member's containers may still run
    outcome = _outcome(crew)
    actions.append(ending(job, outcome, message, _exit_code(crew)))
    warning = reason is not Reason.JOB_RELEASED or outcome is not JobOutcome.SUCCESS
    announced = reason if reason in (Reason.STALE_JOB, Reason.DUPLICATE_JOB) else Reason.JOB_RELEASED
    actions.append(RecordGroupEvent(announced, message, warning))
    done = [p for p in crew if p.has_finalizer and (not _live(p) or p in doomed)]
    if done:
        actions.append(RemoveMemberFinalizers(_refs(done)))
    return actions


def _finalizers_to_remove(view: _View, planned: Sequence[GangAction]) -> list[GangAction]:
    """Finalizers of ended or deleted members that no active job still holds (and no plan removes yet)."""
    active = {job.job_id for job, _ in view.marked if _active(job)}
    released = {ref for a in planned if isinstance(a, RemoveMemberFinalizers) for ref in a.pods}
    done = [
        p
        for p in view.ours
        if p.has_finalizer
        and not _live(p)
        and (not p.is_bound or p.labelled_job_id not in active)
        and _ref(p) not in released
    ]
    return [RemoveMemberFinalizers(_refs(done))] if done else []


def _bind(
    view: _View, job: Job, members: Sequence[PodInfo], *, already_bound: Sequence[PodInfo], plan: _Plan
) -> list[GangAction]:
    """Bind every member to its own node of the job's allocation, or none of them (saying why)."""
    if not job.nodes:
        return []  # RUNNING without a node list yet: the next job update brings it
    to_kubernetes = view.observed.slurm_to_kubernetes_nodes
    used_slurm = {p.annotations.get(ANNOTATION_SLURM_NODE) for p in already_bound}
    used_kubernetes = {p.node_name for p in already_bound}
    free = [n for n in job.nodes if n not in used_slurm]
    usable: list[tuple[str, str]] = []
    for slurm_node in free:
        node_name = to_kubernetes.get(slurm_node)
        if node_name is not None and node_name not in used_kubernetes:
            usable.append((slurm_node, node_name))
            used_kubernetes.add(node_name)
    if len(usable) < len(members):
        missing = [n for n in free if n not in {s for s, _ in usable}]
        message = (
            f"Slurm job {job.job_id} holds {len(free)} free nodes ({', '.join(free)}) for {len(members)}"
            f" members, {len(usable)} of them distinct Kubernetes nodes"
        )
        if missing:
            message += f" (no Kubernetes node: {', '.join(missing)})"
        reason: AnyReason = Reason.NODE_NOT_IN_KUBERNETES if missing else GangReason.ALLOCATION_TOO_SMALL
        if already_bound:
            # Part of the gang is bound (a bind cut short) and the rest cannot be: it would stay half
            # started forever. A gang never runs in part: end it whole.
            plan.phase = GangPhase.FAILED
            return _release(view, job, reason, message + f"; ending the gang and its Slurm job {job.job_id}")
        message += "; binding none, since a gang never starts in part"
        return _pending(view, members, reason, message, plan, warning=True)
    plan.bound = True
    bindings = tuple(
        MemberBinding(_ref(pod), node_name, slurm_node)
        for pod, (slurm_node, node_name) in zip(members, usable, strict=False)
    )
    events: list[GangAction] = [
        RecordPodEvent(
            b.pod,
            Reason.SCHEDULED,
            f"Successfully assigned {view.gang.key.namespace}/{b.pod.name} to {b.node_name}"
            f" (Slurm job {job.job_id}, node {b.slurm_node})",
        )
        for b in bindings
    ]
    return [BindMembers(job.job_id, bindings), *events]


def _pending(
    view: _View,
    pods: Sequence[PodInfo],
    reason: AnyReason,
    message: str,
    plan: _Plan | None,
    *,
    warning: bool = False,
) -> list[GangAction]:
    """PodScheduled=False with this reason and message on the pods not showing it yet, plus one event."""
    if plan is not None:
        plan.waiting = (reason, message)
    changed = [p for p in pods if not _shown(p, reason, message)]
    if not changed:
        return []
    return [SetMembersPending(_refs(changed), reason, message), RecordGroupEvent(reason, message, warning)]


def _delete(
    pods: Sequence[PodInfo], reason: AnyReason, message: str, *, event: bool = True
) -> list[GangAction]:
    doomed = [p for p in pods if not p.is_deleting]
    if not doomed:
        return []
    announce: list[GangAction] = [RecordGroupEvent(reason, message, warning=True)] if event else []
    return [*announce, DeleteMembers(_refs(doomed), reason, message, reason in EVICTION_REASONS)]


def _group_status(view: _View, plan: _Plan) -> list[GangAction]:
    gang = view.gang
    if gang.key.kind is GangKind.LWS:
        return []
    actions: list[GangAction] = []
    if plan.job_id is not None and gang.labelled_job_id != plan.job_id:
        actions.append(LabelGroup(plan.job_id))
    if gang.key.kind is GangKind.COSCHEDULING:
        phases = [p.phase for p in view.ours]
        desired = GroupStatus(
            phase=plan.phase.value,
            running=phases.count("Running"),
            succeeded=phases.count(PHASE_SUCCEEDED),
            failed=phases.count(PHASE_FAILED),
            schedule_start_time=view.observed.now if plan.submitted else gang.status.schedule_start_time,
        )
        if desired != gang.status:
            actions.append(SetGroupStatus(desired))
    else:
        actions += _scheduled_condition(gang, plan)
    return actions


def _scheduled_condition(gang: GangInfo, plan: _Plan) -> list[GangAction]:
    current = gang.scheduled_condition
    if current is not None and current.status == "True":
        return []  # terminal: it never reverts, whatever happens to the gang later
    if plan.bound:
        wanted = ("True", "Scheduled", f"every member is bound (Slurm job {plan.job_id})")
    elif plan.waiting is not None:
        wanted = ("False", "Unschedulable", plan.waiting[1])
    else:
        return []
    if current is not None and (current.status, current.reason, current.message) == wanted:
        return []
    return [SetGroupCondition(*wanted)]


def _gang_spec_digest(view: _View, members: Sequence[PodInfo]) -> str:
    """The digest the gang's job would have with `members`; raises GangTranslationError."""
    spec = gang_job_spec_for(view.gang, member_order(members), view.config, view.observed.owner_annotations)
    return gang_spec_digest(spec)


def _deadline(gang: GangInfo, waiting: Sequence[PodInfo]) -> datetime | None:
    created = [p.creation_timestamp for p in waiting if p.creation_timestamp is not None]
    if gang.schedule_timeout_seconds is None or not created:
        return None
    return min(created) + timedelta(seconds=gang.schedule_timeout_seconds)


def _outcome(crew: Sequence[PodInfo]) -> JobOutcome:
    if crew and all(p.phase == PHASE_SUCCEEDED for p in crew):
        return JobOutcome.SUCCESS
    if any(p.phase == PHASE_FAILED for p in crew):
        return JobOutcome.FAILURE
    return JobOutcome.CANCEL


def _exit_code(crew: Sequence[PodInfo]) -> int | None:
    """The first failed member's first failed container's exit code (None when none is known)."""
    return next((p.failed_exit_code for p in crew if p.failed_exit_code), None)


def _shown(pod: PodInfo, reason: AnyReason, message: str) -> bool:
    current = pod.condition(CONDITION_POD_SCHEDULED)
    return current is not None and (current.status, current.reason, current.message) == (
        "False",
        reason,
        message,
    )


def _live(pod: PodInfo) -> bool:
    return not pod.is_terminal and not pod.is_deleting


def _active(job: Job) -> bool:
    return not job.state.is_finished


def _ref(pod: PodInfo) -> PodRef:
    return PodRef(pod.name, pod.uid)


def _refs(pods: Iterable[PodInfo]) -> tuple[PodRef, ...]:
    return tuple(_ref(p) for p in pods)


def _names(pods: Sequence[PodInfo]) -> str:
    return ", ".join(p.name for p in pods)


def _decoded(jobs: Iterable[Job], cluster_id: str) -> list[tuple[Job, GangMarker]]:
    marked = ((job, decode_gang_marker(job.comment, cluster_id)) for job in jobs)
    return sorted(((job, m) for job, m in marked if m is not None), key=lambda pair: pair[0].job_id)


def _marked_jobs(jobs: Iterable[Job], cluster_id: str, key: GangKey) -> list[tuple[Job, GangMarker]]:
    return [(job, m) for job, m in _decoded(jobs, cluster_id) if m.gang_key == key]
