"""The gang reconciler: read a gang (group object, members, jobs) from the caches, plan, apply in order.

Everything here is I/O; every decision is in controller/gang_plan.py, whose module docstring is the
contract this executor keeps. The key is a gang key, ``<namespace>/<kind>/<name>`` (bridge/gang.py).
As in controller/pods.py, the scheduler shim and the workload controller apply only their own kinds of
action, so the two can run in one process or in two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from bridge import wellknown
from bridge.config import BridgeConfig
from bridge.gang import CONDITION_POD_GROUP_INITIALLY_SCHEDULED, GangInfo, GangKey, GangKind, owner_of
from bridge.objects import NodeInfo, PodInfo, slurm_to_kubernetes_nodes
from controller.eviction import remove_pod
from controller.gang_plan import (
    AddMemberFinalizers,
    BindMembers,
    DeleteMembers,
    GangAction,
    GangObservation,
    GangReason,
    LabelGroup,
    PodRef,
    RecordGroupEvent,
    RecordPodEvent,
    RemoveMemberFinalizers,
    SetGroupCondition,
    SetGroupStatus,
    SetMembersPending,
    gang_recheck_at,
    plan_gang,
    plan_gang_orphan_cleanup,
)
from controller.plan import CancelJob, SubmitJob
from controller.pods import (
    CONTROLLER_EVENTS,
    PENDING_RECHECK_SECONDS,
    SubmitDeferred,
    _with_managed_node_toleration,
)
from controller.runtime import Result, TerminalError
from controller.slurm_jobs import SlurmJobCache, cancel_orphans, end_job
from kube_client import (
    COSCHEDULING_POD_GROUPS,
    JOBSETS,
    LEADER_WORKER_SETS,
    PODS,
    WORKLOAD_POD_GROUPS,
    WORKLOADS,
    EventRecorder,
    Informer,
    KubeClient,
    KubeObject,
    NotFound,
    PatchType,
    ResourceRef,
)
from slurm_client import InvalidRequest, SlurmClient, SlurmError, SlurmTransportError

log = logging.getLogger(__name__)

# The pod informer's index of gang members: gang key -> pod keys (the runner adds it, with `gang_of`).
GANG_INDEX = "gang"
# Partition sizes change rarely; they are read again after this long.
PARTITION_TTL_SECONDS = 300.0
# Owner workloads whose annotations may hold job options, by (API group, kind).
OWNER_RESOURCES: Mapping[tuple[str, str], ResourceRef] = {
    ("scheduling.k8s.io", "Workload"): WORKLOADS,
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): LEADER_WORKER_SETS,
    ("jobset.x-k8s.io", "JobSet"): JOBSETS,
}

GANG_SCHEDULER_ACTIONS: frozenset[type[GangAction]] = frozenset(
    {
        SubmitJob,
        CancelJob,
        AddMemberFinalizers,
        SetMembersPending,
        SetGroupStatus,
        SetGroupCondition,
        LabelGroup,
        RecordGroupEvent,
        RecordPodEvent,
    }
)
GANG_CONTROLLER_ACTIONS: frozenset[type[GangAction]] = frozenset(
    {
        BindMembers,
        CancelJob,
        DeleteMembers,
        RemoveMemberFinalizers,
        AddMemberFinalizers,
        SetGroupStatus,
        SetGroupCondition,
        LabelGroup,
        RecordGroupEvent,
        RecordPodEvent,
    }
)


# When the two run apart, each gang event is recorded once, by the component that does what it describes:
# the controller binds, deletes members and releases jobs; the scheduler submits and says why gangs wait.
GANG_CONTROLLER_EVENTS: frozenset[str] = CONTROLLER_EVENTS | {
    GangReason.MEMBER_FAILED,
    GangReason.MEMBER_DELETED,
    GangReason.MEMBER_LOST,
    GangReason.GROUP_DELETED,
    GangReason.ALLOCATION_TOO_SMALL,
}


def gang_duties(components: Collection[str]) -> frozenset[type[GangAction]]:
    """The gang action kinds the given components ("scheduler", "controller") apply."""
    actions: set[type[GangAction]] = set()
    if "scheduler" in components:
        actions |= GANG_SCHEDULER_ACTIONS
    if "controller" in components:
        actions |= GANG_CONTROLLER_ACTIONS
    return frozenset(actions)


def records_gang_event(components: Collection[str], reason: str) -> bool:
    """Whether the given components record a gang event with this reason (each reason has one owner)."""
    controller = reason in GANG_CONTROLLER_EVENTS
    return ("controller" in components and controller) or ("scheduler" in components and not controller)


class GangMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.actions = Counter(
            "slurm_bridge_gang_actions_total", "Gang actions applied, by kind.", ["action"], registry=registry
        )
        self.submit_errors = Counter(
            "slurm_bridge_gang_submit_errors_total",
            "Gang submits Slurm refused or that failed.",
            registry=registry,
        )


class DiscoverySource(Protocol):
    async def request(self, method: str, path: str) -> KubeObject: ...


async def serves(kube: DiscoverySource, ref: ResourceRef) -> bool:
    """Whether the API server serves `ref` (API discovery); False when its group/version is unknown."""
    try:
        listing = await kube.request("GET", f"/apis/{ref.group}/{ref.version}")
    except NotFound:
        return False
    return any(r.get("name") == ref.plural for r in listing.get("resources") or ())


class GangReconciler:
    """reconcile("namespace/kind/name"): make the gang's pods, group status and Slurm job agree.

    `pod_groups` / `workload_groups` are None when the cluster does not serve that API: a gang of that
    kind then has no group object, and its members wait for one (controller/gang_plan.py).
    """

    def __init__(
        self,
        config: BridgeConfig,
        *,
        kube: KubeClient,
        slurm: SlurmClient,
        pods: Informer,
        pod_groups: Informer | None,
        workload_groups: Informer | None,
        nodes: Informer,
        jobs: SlurmJobCache,
        events: EventRecorder,
        components: Collection[str],
        metrics: GangMetrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._kube = kube
        self._slurm = slurm
        self._pods = pods
        self._groups: dict[GangKind, Informer | None] = {
            GangKind.COSCHEDULING: pod_groups,
            GangKind.WORKLOAD: workload_groups,
        }
        self._nodes = nodes
        self._jobs = jobs
        self._events = events
        self._actions = gang_duties(components)
        self._components = frozenset(components)
        self._metrics = metrics
        self._now = now
        self._monotonic = monotonic
        self._partitions: dict[str, int] = {}
        self._partitions_read_at = float("-inf")

    async def reconcile(self, key: str) -> Result:
        try:
            gang_key = GangKey.parse(key)
        except ValueError as error:
            raise TerminalError(str(error)) from error
        group_raw, gang = self._group(gang_key)
        raw_members = self._pods.by_index(GANG_INDEX, key)
        members = [PodInfo.from_api(p) for p in raw_members]
        node_map = slurm_to_kubernetes_nodes(
            (NodeInfo.from_api(n) for n in self._nodes.objects()), self._config.node_name_label
        )
        observed = GangObservation(
            key=gang_key,
            now=self._now(),
            gang=gang,
            pods=members,
            jobs=self._jobs.jobs_for_gang(key),
            owner_annotations=await self._owner_annotations(gang, members),
            slurm_to_kubernetes_nodes=node_map,
            partition_nodes=await self._partition_nodes(),
        )
        applier = _Applier(
            self, gang_key, group_raw, {p.uid: raw for p, raw in zip(members, raw_members, strict=True)}
        )
        for action in plan_gang(observed, self._config):
            if type(action) not in self._actions:
                continue
            if isinstance(action, (RecordGroupEvent, RecordPodEvent)) and not records_gang_event(
                self._components, action.reason
            ):
                continue
            log.debug("%s: %s", key, action)
            self._metrics.actions.labels(type(action).__name__).inc()
            await applier.apply(action, members)
        return Result(requeue_after=self._requeue_after(observed))

    def _requeue_after(self, observed: GangObservation) -> float | None:
        delays: list[float] = []
        if (at := gang_recheck_at(observed, self._config)) is not None:
            delays.append(max(0.0, (at - observed.now).total_seconds()))
        if any(
            p.scheduler_name == self._config.scheduler_name and not p.is_bound and not p.is_terminal
            for p in observed.pods
        ):
            delays.append(PENDING_RECHECK_SECONDS)  # waiting on Slurm: look again anyway, as for pods
        return min(delays) if delays else None

    def _group(self, key: GangKey) -> tuple[KubeObject | None, GangInfo | None]:
        """The group object (an LWS group's leader pod) and what it says; (None, None) when absent."""
        if key.kind is GangKind.LWS:
            leader = self._pods.get(f"{key.namespace}/{key.name}")
            info = GangInfo.from_lws_leader(PodInfo.from_api(leader)) if leader is not None else None
            return (leader, info) if info is not None and info.key == key else (None, None)
        informer = self._groups[key.kind]
        raw = informer.get(f"{key.namespace}/{key.name}") if informer is not None else None
        if raw is None:
            return None, None
        if key.kind is GangKind.COSCHEDULING:
            return raw, GangInfo.from_coscheduling_api(raw)
        return raw, GangInfo.from_workload_api(raw)

    async def _owner_annotations(self, gang: GangInfo | None, members: Sequence[PodInfo]) -> dict[str, str]:
        """The owner workload's annotations; {} when it has none we can read or is gone.

        A transient error raises (the key is retried): planning without the owner's options would give
        another digest and cancel a pending job for nothing.
        """
        owner = owner_of(gang, members) if gang is not None else None
        ref = OWNER_RESOURCES.get((owner.api_group, owner.kind)) if owner is not None else None
        if owner is None or ref is None or gang is None:
            return {}
        try:
            raw = await self._kube.get(ref, owner.name, namespace=gang.key.namespace)
        except NotFound:
            return {}
        annotations = (raw.get("metadata") or {}).get("annotations") or {}
        return {str(k): str(v) for k, v in annotations.items()}

    async def _partition_nodes(self) -> dict[str, int]:
        """Node count of each partition ("" = the default one), read again every PARTITION_TTL_SECONDS.

        When slurmrestd cannot say, the last answer is kept (empty at first: sizes go unchecked).
        """
        if self._monotonic() - self._partitions_read_at < PARTITION_TTL_SECONDS:
            return self._partitions
        try:
            partitions = await self._slurm.list_partitions()
        except SlurmError as error:
            log.debug("partition sizes unknown (%s); gang sizes go unchecked for now", error)
            return self._partitions
        sizes = {p.name: p.total_nodes or len(p.nodes) for p in partitions}
        default = next((p for p in partitions if p.default), None)
        if default is not None:
            sizes[""] = sizes[default.name]
        self._partitions, self._partitions_read_at = sizes, self._monotonic()
        return sizes

    async def clean_orphans(self) -> int:
        """Cancel this cluster's gang jobs whose group is gone; returns how many. Needs synced caches."""
        groups = [i for i in self._groups.values() if i is not None]
        if not (self._pods.has_synced and self._jobs.synced and all(i.has_synced for i in groups)):
            return 0
        pods = [PodInfo.from_api(p) for p in self._pods.objects()]
        # An LWS group's identity is its leader pod's UID: any live pod's UID may be one.
        live = {str((g.get("metadata") or {}).get("uid")) for i in groups for g in i.objects()}
        live |= {p.uid for p in pods}
        held = {p.labelled_job_id for p in pods if p.labelled_job_id is not None and not p.is_terminal}
        doomed = plan_gang_orphan_cleanup(
            self._jobs.owned_gang_jobs(), live, held, self._config.cluster_id, self._now()
        )
        return await cancel_orphans(self._slurm, self._jobs, doomed, "gang")


class _Applier:
    """Applies one plan's actions for one gang, in order; the first failure raises (the key is retried)."""

    def __init__(
        self, owner: GangReconciler, key: GangKey, group: KubeObject | None, pods: dict[str, KubeObject]
    ) -> None:
        self._r = owner
        self._key = key
        self._group = group
        self._pods = pods  # the members as cached, by UID

    async def apply(self, action: GangAction, members: Sequence[PodInfo]) -> None:
        r, namespace = self._r, self._key.namespace
        match action:
            case SubmitJob():
                await self._submit(action, members)
            case CancelJob(job_id=job_id, outcome=outcome, why=why):
                job = next((j for j in r._jobs.jobs_for_gang(str(self._key)) if j.job_id == job_id), None)
                await end_job(r._slurm, r._jobs, action, job)
                log.info("%s: ended Slurm job %d (%s; %s)", self._key, job_id, outcome, why)
            case SetMembersPending(pods=refs, reason=reason, message=message):
                for ref in refs:
                    await self._set_condition(
                        ref, wellknown.CONDITION_POD_SCHEDULED, "False", reason, message
                    )
            case AddMemberFinalizers(pods=refs, job_id=job_id):
                for ref in refs:
                    await self._prepare(ref, job_id)
            case BindMembers(job_id=job_id, bindings=bindings):
                for b in bindings:
                    await r._kube.bind_pod(
                        namespace,
                        b.pod.name,
                        b.node_name,
                        uid=b.pod.uid,
                        annotations={wellknown.ANNOTATION_SLURM_NODE: b.slurm_node},
                    )
                    log.info(
                        "%s: bound %s to %s (Slurm job %d on %s)",
                        self._key,
                        b.pod.name,
                        b.node_name,
                        job_id,
                        b.slurm_node,
                    )
            case DeleteMembers(pods=refs, reason=reason, message=message):
                for ref in refs:
                    condition = wellknown.CONDITION_DISRUPTION_TARGET
                    if not await self._set_condition(ref, condition, "True", reason, message):
                        continue  # gone already
                    await remove_pod(r._kube, namespace, ref.name, ref.uid, reason)
                    log.info("%s: deleted %s (%s: %s)", self._key, ref.name, reason, message)
            case RemoveMemberFinalizers(pods=refs):
                for ref in refs:
                    current = self._pods.get(ref.uid)
                    if current is None:
                        continue  # not in the cache as that incarnation: nothing of ours to remove
                    await r._kube.remove_finalizer(
                        PODS, ref.name, wellknown.FINALIZER, namespace=namespace, current=current
                    )
            case SetGroupStatus(status=status):
                body: dict[str, Any] = {
                    "phase": status.phase,
                    "running": status.running,
                    "succeeded": status.succeeded,
                    "failed": status.failed,
                }
                if status.schedule_start_time is not None:
                    body["scheduleStartTime"] = _rfc3339(status.schedule_start_time)
                await self._patch_group({"status": body}, subresource="status")
            case SetGroupCondition(status=status, reason=reason, message=message):
                await self._patch_group(
                    {"status": {"conditions": self._conditions(status, reason, message)}},
                    subresource="status",
                )
            case LabelGroup(job_id=job_id):
                await self._patch_group({"metadata": {"labels": {wellknown.LABEL_SLURM_JOB_ID: str(job_id)}}})
            case RecordGroupEvent(reason=reason, message=message, warning=warning):
                if self._group is not None:
                    await self._record(self._group, reason, message, warning)
            case RecordPodEvent(pod=ref, reason=reason, message=message, warning=warning):
                if (raw := self._pods.get(ref.uid)) is not None:
                    await self._record(raw, reason, message, warning)

    async def _submit(self, action: SubmitJob, members: Sequence[PodInfo]) -> None:
        r, spec = self._r, action.spec
        waiting = [PodRef(p.name, p.uid) for p in members if not p.is_bound and not p.is_terminal]
        if not r._jobs.settled:
            raise SubmitDeferred("an earlier submit may have created a job; waiting for the next poll")
        try:
            result = await r._slurm.submit_job(spec)
        except InvalidRequest as error:
            r._metrics.submit_errors.inc()
            message = f"Slurm refused the gang's job: {error}"
            await self._say_pending(waiting, wellknown.Reason.INVALID_JOB_OPTIONS, message)
            raise
        except SlurmError as error:
            r._metrics.submit_errors.inc()
            if not (isinstance(error, SlurmTransportError) and not error.sent):
                r._jobs.submit_outcome_unknown()  # it may exist: never submit blindly again
            message = f"cannot submit to Slurm ({error}); retrying"
            await self._say_pending(waiting, wellknown.Reason.SLURM_UNAVAILABLE, message)
            raise
        r._jobs.record_submitted(result.job_id, spec)
        log.info(
            "%s: submitted Slurm job %d (%s) for %d members",
            self._key,
            result.job_id,
            spec.name,
            len(waiting),
        )

    async def _say_pending(self, refs: Sequence[PodRef], reason: str, message: str) -> None:
        for ref in refs:
            await self._set_condition(ref, wellknown.CONDITION_POD_SCHEDULED, "False", reason, message)

    async def _set_condition(
        self, ref: PodRef, condition_type: str, status: str, reason: str, message: str
    ) -> bool:
        """Set one condition on a member; False when it is gone (or the cache holds another incarnation)."""
        current = self._pods.get(ref.uid)
        if current is None:
            return False
        try:
            await self._r._kube.set_pod_condition(
                self._key.namespace,
                ref.name,
                condition_type=condition_type,
                status=status,
                reason=reason,
                message=message,
                current=current,
            )
        except NotFound:
            return False
        return True

    async def _prepare(self, ref: PodRef, job_id: int | None) -> None:
        """The bridge finalizer, the job-id label (when known) and the bridge's toleration, in one patch."""
        current = self._pods.get(ref.uid)
        if current is None:
            return
        # metadata.uid is a precondition: a same-named successor is not patched.
        metadata: dict[str, Any] = {"uid": ref.uid, "finalizers": [wellknown.FINALIZER]}
        if job_id is not None:
            metadata["labels"] = {wellknown.LABEL_SLURM_JOB_ID: str(job_id)}
        patch: dict[str, Any] = {"metadata": metadata}
        if (tolerations := _with_managed_node_toleration(current)) is not None:
            patch["spec"] = {"tolerations": tolerations}
        await self._r._kube.patch(
            PODS, ref.name, patch, namespace=self._key.namespace, patch_type=PatchType.STRATEGIC
        )

    def _conditions(self, status: str, reason: str, message: str) -> list[dict[str, Any]]:
        """The group's conditions with PodGroupInitiallyScheduled set (a merge patch replaces the list)."""
        kind = CONDITION_POD_GROUP_INITIALLY_SCHEDULED
        existing = list(((self._group or {}).get("status") or {}).get("conditions") or [])
        previous = next((c for c in existing if c.get("type") == kind), None)
        moved = previous is None or previous.get("status") != status
        kept = previous.get("lastTransitionTime") if previous is not None and not moved else None
        condition = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": kept or _rfc3339(self._r._now()),
        }
        return [*(c for c in existing if c.get("type") != kind), condition]

    async def _patch_group(self, patch: Mapping[str, Any], *, subresource: str | None = None) -> None:
        ref = _GROUP_RESOURCES.get(self._key.kind)
        if ref is None or self._group is None:
            return  # an LWS group has no object of its own to write
        await self._r._kube.patch(
            ref, self._key.name, patch, namespace=self._key.namespace, subresource=subresource
        )

    async def _record(self, involved: KubeObject, reason: str, message: str, warning: bool) -> None:
        if warning:
            await self._r._events.warning(involved, reason, message)
        else:
            await self._r._events.normal(involved, reason, message)


_GROUP_RESOURCES: Mapping[GangKind, ResourceRef] = {
    GangKind.COSCHEDULING: COSCHEDULING_POD_GROUPS,
    GangKind.WORKLOAD: WORKLOAD_POD_GROUPS,
}


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
