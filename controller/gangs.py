"""The gang reconciler: read a gang (group object, members, jobs) from the caches, plan, apply in order.

Everything here is I/O; every decision is in controller/gang_plan.py, whose module docstring is the
contract this executor keeps. The key is a gang key, ``<namespace>/<kind>/<name>`` (bridge/gang.py).
As in controller/pods.py, the scheduler shim and the workload controller apply only their own kinds of
action, so the two can run in one process or in two.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from bridge.config import BridgeConfig
from bridge.gang import GangInfo, GangKey, GangKind, owner_of
from bridge.objects import NodeInfo, PodInfo, slurm_to_kubernetes_nodes
from bridge.wellknown import (
    CONDITION_POD_GROUP_INITIALLY_SCHEDULED,
    LABEL_SLURM_JOB_ID,
)
from controller.crash_points import NO_CRASH, CrashPoints, Scope
from controller.duties import Duties
from controller.effects import SUBMIT_REFUSALS, PodEffects
from controller.gang_plan import (
    AddMemberFinalizers,
    BindMembers,
    DeleteMembers,
    GangAction,
    GangObservation,
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
from controller.latency import StartLatency, gang_created
from controller.plan import CancelJob, SubmitJob
from controller.pods import PENDING_RECHECK_SECONDS
from controller.ports import Events, GangSlurm, JobIndex, ObjectCache, PodWriter
from controller.runtime import Result, TerminalError
from kube_client import (
    COSCHEDULING_POD_GROUPS,
    JOBSETS,
    LEADER_WORKER_SETS,
    WORKLOAD_POD_GROUPS,
    WORKLOADS,
    KubeObject,
    NotFound,
    ResourceRef,
    upsert_condition,
)
from slurm_client import SlurmError

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


class GangMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        # A gang's creation is when it became whole: its newest member's creation.
        self.latency = StartLatency(registry, "gang", "a gang")
        self.actions = Counter(
            "slurm_bridge_gang_actions_total", "Gang actions applied, by kind.", ["action"], registry=registry
        )
        self.submit_errors = Counter(
            "slurm_bridge_gang_submit_errors_total",
            "Gang submits Slurm refused or that failed.",
            registry=registry,
        )


class GangReconciler:
    """reconcile("namespace/kind/name"): make the gang's pods, group status and Slurm job agree.

    `pod_groups` / `workload_groups` are None when the cluster does not serve that API: a gang of that
    kind then has no group object, and its members wait for one (controller/gang_plan.py).
    """

    def __init__(
        self,
        config: BridgeConfig,
        *,
        kube: PodWriter,
        slurm: GangSlurm,
        pods: ObjectCache,
        pod_groups: ObjectCache | None,
        workload_groups: ObjectCache | None,
        nodes: ObjectCache,
        jobs: JobIndex,
        events: Events,
        components: Collection[str],
        metrics: GangMetrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        self._config = config
        self._kube = kube
        self._slurm = slurm
        self._pods = pods
        self._groups: dict[GangKind, ObjectCache | None] = {
            GangKind.COSCHEDULING: pod_groups,
            GangKind.WORKLOAD: workload_groups,
        }
        self._nodes = nodes
        self._jobs = jobs
        self._effects = PodEffects(
            kube=kube, slurm=slurm, jobs=jobs, events=events, scope=Scope.GANG, crash=crash
        )
        self._duties = Duties.of(components)
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
            if not self._duties.applies(action):
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
            self._jobs.owned_gang_jobs(), live, held, self._config.marker_cluster_id, self._now()
        )
        return await self._effects.cancel_orphans(doomed, "gang")


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
        effects = self._r._effects
        match action:
            case SubmitJob(spec=spec):
                waiting = [PodRef(p.name, p.uid) for p in members if not p.is_bound and not p.is_terminal]

                async def tell(reason: str, message: str) -> None:
                    for ref in waiting:
                        if (pod := self._pods.get(ref.uid)) is not None:
                            await effects.say_pending(pod, reason, message)
                    if reason in SUBMIT_REFUSALS and self._group is not None:
                        await effects.record(self._group, reason, message, warning=True)  # Slurm refused it

                errors = self._r._metrics.submit_errors
                job_id = await effects.submit(spec, what="gang's job", tell=tell, errors=errors)
                created = gang_created(p.creation_timestamp for p in members if not p.is_terminal)
                self._r._metrics.latency.submitted(created, self._r._now())
                log.info(
                    "%s: submitted Slurm job %d (%s) for %d members",
                    self._key,
                    job_id,
                    spec.name,
                    len(waiting),
                )
            case CancelJob(job_id=job_id, outcome=outcome, why=why):
                await effects.end_job(action)
                log.info("%s: ended Slurm job %d (%s; %s)", self._key, job_id, outcome, why)
            case SetMembersPending(pods=refs, reason=reason, message=message):
                for pod in self._cached(refs):
                    await effects.say_pending(pod, reason, message)
            case AddMemberFinalizers(pods=refs, job_id=job_id):
                for pod in self._cached(refs):
                    await effects.prepare(pod, job_id)
            case BindMembers(job_id=job_id, bindings=bindings):
                for b in bindings:
                    pod = self._pods.get(b.pod.uid) or _stub(self._key.namespace, b.pod)
                    await effects.bind(pod, b.node_name, b.slurm_node)
                    log.info(
                        "%s: bound %s to %s (Slurm job %d on %s)",
                        self._key,
                        b.pod.name,
                        b.node_name,
                        job_id,
                        b.slurm_node,
                    )
                job = next(
                    (j for j in self._r._jobs.jobs_for_gang(str(self._key)) if j.job_id == job_id), None
                )
                created = gang_created(p.creation_timestamp for p in members if not p.is_terminal)
                started = job.start_time if job is not None else None
                self._r._metrics.latency.bound(created, started, self._r._now())
            case DeleteMembers(pods=refs, reason=reason, message=message, evict=evict):
                for pod in self._cached(refs):
                    if await effects.delete(pod, reason, message, evict=evict):
                        log.info("%s: deleted %s (%s: %s)", self._key, _name(pod), reason, message)
            case RemoveMemberFinalizers(pods=refs):
                # a member not in the cache as that incarnation has nothing of ours to remove
                for pod in self._cached(refs):
                    await effects.release(pod)
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
                await self._patch_group({"metadata": {"labels": {LABEL_SLURM_JOB_ID: str(job_id)}}})
            case RecordGroupEvent(reason=reason, message=message, warning=warning):
                if self._group is not None:
                    await effects.record(self._group, reason, message, warning=warning)
            case RecordPodEvent(pod=ref, reason=reason, message=message, warning=warning):
                if (raw := self._pods.get(ref.uid)) is not None:
                    await effects.record(raw, reason, message, warning=warning)

    def _cached(self, refs: Sequence[PodRef]) -> list[KubeObject]:
        """The members as the cache holds them, by UID: a member gone (or replaced) is skipped."""
        return [pod for ref in refs if (pod := self._pods.get(ref.uid)) is not None]

    def _conditions(self, status: str, reason: str, message: str) -> list[dict[str, Any]]:
        """The group's conditions with PodGroupInitiallyScheduled set (a merge patch replaces the list)."""
        existing = ((self._group or {}).get("status") or {}).get("conditions")
        kind = CONDITION_POD_GROUP_INITIALLY_SCHEDULED
        return upsert_condition(
            existing, kind, status, reason, message, now=_rfc3339(self._r._now())
        ).conditions

    async def _patch_group(self, patch: Mapping[str, Any], *, subresource: str | None = None) -> None:
        ref = _GROUP_RESOURCES.get(self._key.kind)
        if ref is None or self._group is None:
            return  # an LWS group has no object of its own to write
        with contextlib.suppress(NotFound):  # deleted since the cache saw it: its informer says so next
            await self._r._kube.patch(
                ref, self._key.name, patch, namespace=self._key.namespace, subresource=subresource
            )


_GROUP_RESOURCES: Mapping[GangKind, ResourceRef] = {
    GangKind.COSCHEDULING: COSCHEDULING_POD_GROUPS,
    GangKind.WORKLOAD: WORKLOAD_POD_GROUPS,
}


def _name(pod: KubeObject) -> str:
    return str((pod.get("metadata") or {}).get("name"))


def _stub(namespace: str, ref: PodRef) -> KubeObject:
    """A pod known only by reference (a binding needs no more than its name and UID)."""
    return {"metadata": {"namespace": namespace, "name": ref.name, "uid": ref.uid}}


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
