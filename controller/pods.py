"""The pod reconciler: read a pod and its jobs from the caches, plan (pure), apply the actions in order.

The scheduler shim and the workload controller are the same loop over the same key; each applies only
its own share of the plan (controller/duties.py), so they can run in one process or in two. Every
decision is in controller/plan.py; every effect in controller/effects.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from bridge.config import BridgeConfig
from bridge.objects import NodeInfo, PodInfo, slurm_to_kubernetes_nodes
from bridge.translate import with_owner_options
from bridge.wellknown import LABEL_JOBSET_NAME, LABEL_LWS_NAME
from controller.crash_points import NO_CRASH, CrashPoints, Scope
from controller.duties import Duties
from controller.effects import SUBMIT_REFUSALS, PodEffects
from controller.latency import StartLatency
from controller.plan import (
    AddFinalizerAndLabel,
    BindPod,
    CancelJob,
    DeletePod,
    PodAction,
    PodObservation,
    RecordEvent,
    RemoveFinalizer,
    SetPendingReason,
    SubmitJob,
    plan_orphan_cleanup,
    plan_pod,
)
from controller.ports import Events, JobIndex, JobSubmitter, ObjectCache, PodWriter
from controller.runtime import Result
from kube_client import JOBSETS, LEADER_WORKER_SETS, KubeObject, NotFound, ResourceRef

log = logging.getLogger(__name__)

# A pod labelled with a job the index has not listed is looked at again after this, until a poll decides.
ABSENCE_RECHECK_SECONDS = 1.0
# A pod waiting on something only Slurm or the user can change is looked at again this often anyway.
PENDING_RECHECK_SECONDS = 60.0
# A single pod of a JobSet or LeaderWorkerSet takes job options from that top-level object too
# (bridge/translate.py with_owner_options); its annotations are read again at most this often.
OWNER_TTL_SECONDS = 30.0
_OWNER_LABELS: tuple[tuple[str, ResourceRef], ...] = (
    (LABEL_JOBSET_NAME, JOBSETS),
    (LABEL_LWS_NAME, LEADER_WORKER_SETS),
)


class PodMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.latency = StartLatency(registry, "pod", "a pod")
        self.actions = Counter(
            "slurm_bridge_actions_total", "Actions applied, by kind.", ["action"], registry=registry
        )
        self.submit_errors = Counter(
            "slurm_bridge_submit_errors_total", "Submits Slurm refused or that failed.", registry=registry
        )


class PodReconciler:
    """reconcile("namespace/name"): make the pod and its placeholder job agree."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        kube: PodWriter,
        slurm: JobSubmitter,
        pods: ObjectCache,
        nodes: ObjectCache,
        jobs: JobIndex,
        events: Events,
        components: Collection[str],
        metrics: PodMetrics,
        gang_of: Callable[[KubeObject], str | None] = lambda _pod: None,
        on_gang_member: Callable[[str], None] = lambda _gang_key: None,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        self._config = config
        self._kube = kube
        self._slurm = slurm
        self._pods = pods
        self._nodes = nodes
        self._jobs = jobs
        self._effects = PodEffects(
            kube=kube, slurm=slurm, jobs=jobs, events=events, scope=Scope.POD, crash=crash
        )
        self._duties = Duties.of(components)
        self._metrics = metrics
        # A gang member is planned with its gang (controller/gang_plan.py), never on its own: gang_of
        # names its gang key (None for single pods and basic-policy groups), on_gang_member queues it.
        self._gang_of = gang_of
        self._on_gang_member = on_gang_member
        self._owners: dict[tuple[str, str, str], tuple[float, dict[str, str]]] = {}

    async def reconcile(self, key: str) -> Result:
        raw = self._pods.get(key)
        gang_key = self._gang_of(raw) if raw is not None else None
        if gang_key is not None:
            self._on_gang_member(gang_key)
            return Result()
        pod = await self._with_owner_options(PodInfo.from_api(raw)) if raw is not None else None
        node_map = slurm_to_kubernetes_nodes(
            (NodeInfo.from_api(n) for n in self._nodes.objects()), self._config.node_name_label
        )
        jobs = self._jobs.jobs_for(key)
        label = pod.labelled_job_id if pod is not None else None
        confirmed = (
            label is None or any(j.job_id == label for j in jobs) or self._jobs.absence_confirmed(label)
        )
        observed = PodObservation(
            pod=pod, jobs=jobs, slurm_to_kubernetes_nodes=node_map, labelled_job_absence_confirmed=confirmed
        )
        for action in plan_pod(observed, self._config):
            if not self._duties.applies(action):
                continue
            log.debug("%s: %s", key, action)
            self._metrics.actions.labels(type(action).__name__).inc()
            await self._apply(key, raw, pod, action)
        if not confirmed:
            return Result(requeue_after=ABSENCE_RECHECK_SECONDS)
        if pod is not None and pod.scheduler_name == self._config.scheduler_name and not pod.is_bound:
            return Result(requeue_after=PENDING_RECHECK_SECONDS)
        return Result()

    async def _with_owner_options(self, pod: PodInfo) -> PodInfo:
        """The pod with its top-level owner's job options laid over its own annotations.

        A transient read error raises (the key is retried): planning without the owner's options would
        give another spec digest and replace a pending job for nothing.
        """
        for label, ref in _OWNER_LABELS:
            name = pod.labels.get(label)
            if not name:
                continue
            cache_key = (pod.namespace, ref.plural, name)
            cached = self._owners.get(cache_key)
            now = time.monotonic()
            if cached is None or cached[0] < now:
                try:
                    owner = await self._kube.get(ref, name, namespace=pod.namespace)
                    found = {
                        str(k): str(v)
                        for k, v in ((owner.get("metadata") or {}).get("annotations") or {}).items()
                    }
                except NotFound:
                    found = {}
                cached = (now + OWNER_TTL_SECONDS, found)
                self._owners[cache_key] = cached
            if cached[1]:
                return pod.model_copy(update={"annotations": with_owner_options(pod.annotations, cached[1])})
            return pod
        return pod

    async def _apply(self, key: str, raw: KubeObject | None, pod: PodInfo | None, action: PodAction) -> None:
        if raw is None or pod is None:  # the pod is gone: a plan for it only ends its jobs
            assert isinstance(action, CancelJob), action
        match action:
            case SubmitJob(spec=spec):
                assert raw is not None
                assert pod is not None

                async def tell(reason: str, message: str) -> None:
                    await self._effects.say_pending(raw, reason, message)
                    if reason in SUBMIT_REFUSALS:  # Slurm refused it: an event too
                        await self._effects.record(raw, reason, message, warning=True)

                job_id = await self._effects.submit(
                    spec, what="job", tell=tell, errors=self._metrics.submit_errors
                )
                self._metrics.latency.submitted(pod.creation_timestamp, datetime.now(UTC))
                log.info("%s: submitted Slurm job %d (%s)", key, job_id, spec.name)
            case AddFinalizerAndLabel(job_id=job_id):
                assert raw is not None
                await self._effects.prepare(raw, job_id)
            case SetPendingReason(reason=reason, message=message):
                assert raw is not None
                await self._effects.say_pending(raw, reason, message)
            case BindPod(node_name=node_name, slurm_node=slurm_node, job_id=job_id):
                assert raw is not None
                assert pod is not None
                await self._effects.bind(raw, node_name, slurm_node)
                job = next((j for j in self._jobs.jobs_for(key) if j.job_id == job_id), None)
                started = job.start_time if job is not None else None
                self._metrics.latency.bound(pod.creation_timestamp, started, datetime.now(UTC))
                log.info("%s: bound to %s (Slurm job %d on %s)", key, node_name, job_id, slurm_node)
            case CancelJob(job_id=job_id, outcome=outcome, why=why):
                await self._effects.end_job(action)
                log.info("%s: ended Slurm job %d (%s; %s)", key, job_id, outcome, why)
            case DeletePod(reason=reason, message=message, evict=evict):
                assert raw is not None
                if await self._effects.delete(raw, reason, message, evict=evict):
                    log.info("%s: deleted (%s: %s)", key, reason, message)
            case RemoveFinalizer():
                assert raw is not None
                await self._effects.release(raw)
            case RecordEvent(reason=reason, message=message, warning=warning):
                assert raw is not None
                await self._effects.record(raw, reason, message, warning=warning)

    async def clean_orphans(self) -> int:
        """Cancel this cluster's jobs whose pod is gone; returns how many. Needs both caches synced."""
        if not (self._pods.has_synced and self._jobs.synced):
            return 0
        live = {str((p.get("metadata") or {}).get("uid")) for p in self._pods.objects()}
        doomed = plan_orphan_cleanup(
            self._jobs.owned_jobs(), live, self._config.marker_cluster_id, datetime.now(UTC)
        )
        return await self._effects.cancel_orphans(doomed, "pod")
