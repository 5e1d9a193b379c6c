"""The pod reconciler: read a pod and its jobs from the caches, plan (pure), apply the actions in order.

The scheduler shim and the workload controller are the same loop over the same key; each applies
only its own kinds of action (`SCHEDULER_ACTIONS`, `CONTROLLER_ACTIONS`), so they can run in one
process or in two. Everything here is I/O; every decision is in controller/plan.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from bridge import wellknown
from bridge.config import BridgeConfig
from bridge.objects import NodeInfo, PodInfo, slurm_to_kubernetes_nodes
from bridge.translate import with_owner_options
from controller.eviction import remove_pod
from controller.plan import (
    Action,
    AddFinalizerAndLabel,
    BindPod,
    CancelJob,
    DeletePod,
    PodObservation,
    RecordEvent,
    RemoveFinalizer,
    SetPendingReason,
    SubmitJob,
    plan_orphan_cleanup,
    plan_pod,
)
from controller.runtime import Result
from controller.slurm_jobs import SlurmJobCache, cancel_orphans, end_job
from kube_client import (
    JOBSETS,
    LEADER_WORKER_SETS,
    PODS,
    EventRecorder,
    Informer,
    KubeClient,
    KubeObject,
    NotFound,
    PatchType,
    ResourceRef,
    split_key,
)
from slurm_client import InvalidRequest, SlurmClient, SlurmError, SlurmTransportError

log = logging.getLogger(__name__)

SCHEDULER_ACTIONS: frozenset[type[Action]] = frozenset(
    {SubmitJob, AddFinalizerAndLabel, SetPendingReason, RecordEvent, CancelJob}
)
CONTROLLER_ACTIONS: frozenset[type[Action]] = frozenset(
    {BindPod, CancelJob, DeletePod, RemoveFinalizer, RecordEvent, AddFinalizerAndLabel}
)
# When the two run apart, each event is recorded by the component that does what it describes.
_R = wellknown.Reason
CONTROLLER_EVENTS: frozenset[str] = frozenset(
    {
        _R.SCHEDULED,
        _R.JOB_RELEASED,
        _R.NODE_NOT_IN_KUBERNETES,
        _R.JOB_COMPLETED,
        _R.JOB_CANCELLED,
        _R.JOB_FAILED,
        _R.JOB_TIMEOUT,
        _R.JOB_PREEMPTED,
        _R.JOB_NODE_FAIL,
        _R.JOB_BOOT_FAIL,
        _R.JOB_DEADLINE,
        _R.JOB_OUT_OF_MEMORY,
        _R.JOB_VANISHED,
        _R.JOB_REQUEUED,
    }
)
SCHEDULER_EVENTS: frozenset[str] = frozenset(set(_R) - CONTROLLER_EVENTS)


def duties(components: Collection[str]) -> tuple[frozenset[type[Action]], frozenset[str]]:
    """The action kinds and event reasons the given components ("scheduler", "controller") apply."""
    actions: set[type[Action]] = set()
    events: set[str] = set()
    if "scheduler" in components:
        actions |= SCHEDULER_ACTIONS
        events |= SCHEDULER_EVENTS
    if "controller" in components:
        actions |= CONTROLLER_ACTIONS
        events |= CONTROLLER_EVENTS
    return frozenset(actions), frozenset(events)


# A pod waiting on something only Slurm or the user can change is looked at again this often anyway.
PENDING_RECHECK_SECONDS = 60.0
# A single pod of a JobSet or LeaderWorkerSet takes job options from that top-level object too
# (bridge/translate.py with_owner_options); its annotations are read again at most this often.
OWNER_TTL_SECONDS = 30.0
_OWNER_LABELS: tuple[tuple[str, ResourceRef], ...] = (
    ("jobset.sigs.k8s.io/jobset-name", JOBSETS),
    ("leaderworkerset.sigs.k8s.io/name", LEADER_WORKER_SETS),
)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120)


class PodMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.created_to_submitted = Histogram(
            "slurm_bridge_pod_created_to_submitted_seconds",
            "From a pod's creation to the submit of its placeholder Slurm job.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.started_to_bound = Histogram(
            "slurm_bridge_job_started_to_pod_bound_seconds",
            "From the placeholder job's start in Slurm to the pod's binding (Slurm times are whole seconds).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
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
        kube: KubeClient,
        slurm: SlurmClient,
        pods: Informer,
        nodes: Informer,
        jobs: SlurmJobCache,
        events: EventRecorder,
        components: Collection[str],
        metrics: PodMetrics,
        gang_of: Callable[[KubeObject], str | None] = lambda _pod: None,
        on_gang_member: Callable[[str], None] = lambda _gang_key: None,
    ) -> None:
        self._config = config
        self._kube = kube
        self._slurm = slurm
        self._pods = pods
        self._nodes = nodes
        self._jobs = jobs
        self._events = events
        self._actions, self._events_said = duties(components)
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
        observed = PodObservation(pod=pod, jobs=self._jobs.jobs_for(key), slurm_to_kubernetes_nodes=node_map)
        planned = [a for a in plan_pod(observed, self._config) if self._mine(a)]
        for action in planned:
            if raw is None and not isinstance(action, CancelJob):
                continue
            log.debug("%s: %s", key, action)
            self._metrics.actions.labels(type(action).__name__).inc()
            await self._apply(key, raw, pod, action)
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

    def _mine(self, action: Action) -> bool:
        if isinstance(action, RecordEvent):
            return action.reason in self._events_said
        return type(action) in self._actions

    async def _apply(self, key: str, raw: KubeObject | None, pod: PodInfo | None, action: Action) -> None:
        namespace, name = split_key(key)
        assert namespace is not None
        match action:
            case SubmitJob(spec=spec):
                assert pod is not None
                if not self._jobs.settled:
                    raise SubmitDeferred(
                        "an earlier submit may have created a job; waiting for the next poll"
                    )
                try:
                    result = await self._slurm.submit_job(spec)
                except InvalidRequest as error:
                    # Slurm refused what we asked (unknown partition/account, impossible size, ...):
                    # say so on the pod; the work queue retries with backoff in case it gets fixed.
                    self._metrics.submit_errors.inc()
                    await self._say_pending(
                        raw, pod, wellknown.Reason.INVALID_JOB_OPTIONS, f"Slurm refused the job: {error}"
                    )
                    raise
                except SlurmError as error:
                    self._metrics.submit_errors.inc()
                    if not (isinstance(error, SlurmTransportError) and not error.sent):
                        self._jobs.submit_outcome_unknown()  # it may exist: never submit blindly again
                    message = f"cannot submit to Slurm ({error}); retrying"
                    await self._say_pending(raw, pod, wellknown.Reason.SLURM_UNAVAILABLE, message)
                    raise
                self._jobs.record_submitted(result.job_id, spec)
                if pod.creation_timestamp is not None:
                    self._metrics.created_to_submitted.observe(_seconds_since(pod.creation_timestamp))
                log.info("%s: submitted Slurm job %d (%s)", key, result.job_id, spec.name)
            case AddFinalizerAndLabel(job_id=job_id):
                metadata: dict[str, Any] = {"finalizers": [wellknown.FINALIZER]}
                if job_id is not None:
                    metadata["labels"] = {wellknown.LABEL_SLURM_JOB_ID: str(job_id)}
                patch: dict[str, Any] = {"metadata": metadata}
                if (tolerations := _with_managed_node_toleration(raw)) is not None:
                    patch["spec"] = {"tolerations": tolerations}
                # strategic merge: the finalizer list is merged; tolerations (no merge key) are sent whole
                await self._kube.patch(PODS, name, patch, namespace=namespace, patch_type=PatchType.STRATEGIC)
            case SetPendingReason(reason=reason, message=message):
                assert pod is not None
                await self._say_pending(raw, pod, reason, message)
            case BindPod(node_name=node_name, slurm_node=slurm_node, job_id=job_id):
                assert pod is not None
                await self._kube.bind_pod(
                    namespace,
                    name,
                    node_name,
                    uid=pod.uid,
                    annotations={wellknown.ANNOTATION_SLURM_NODE: slurm_node},
                )
                job = next((j for j in self._jobs.jobs_for(key) if j.job_id == job_id), None)
                if job is not None and job.start_time is not None:
                    self._metrics.started_to_bound.observe(max(0.0, _seconds_since(job.start_time)))
                log.info("%s: bound to %s (Slurm job %d on %s)", key, node_name, job_id, slurm_node)
            case CancelJob(job_id=job_id, outcome=outcome, why=why):
                job = next((j for j in self._jobs.jobs_for(key) if j.job_id == job_id), None)
                await end_job(self._slurm, self._jobs, action, job)
                log.info("%s: ended Slurm job %d (%s; %s)", key, job_id, outcome, why)
            case DeletePod(reason=reason, message=message):
                assert pod is not None
                try:
                    await self._kube.set_pod_condition(
                        namespace,
                        name,
                        condition_type=wellknown.CONDITION_DISRUPTION_TARGET,
                        status="True",
                        reason=reason,
                        message=message,
                        current=raw,
                    )
                except NotFound:
                    return
                await remove_pod(self._kube, namespace, name, pod.uid, reason)
                log.info("%s: deleted (%s: %s)", key, reason, message)
            case RemoveFinalizer():
                await self._kube.remove_finalizer(
                    PODS, name, wellknown.FINALIZER, namespace=namespace, current=raw
                )
            case RecordEvent(reason=reason, message=message, warning=warning):
                assert raw is not None
                if warning:
                    await self._events.warning(raw, reason, message)
                else:
                    await self._events.normal(raw, reason, message)

    async def _say_pending(self, raw: KubeObject | None, pod: PodInfo, reason: str, message: str) -> None:
        with contextlib.suppress(NotFound):
            await self._kube.set_pod_condition(
                pod.namespace,
                pod.name,
                condition_type=wellknown.CONDITION_POD_SCHEDULED,
                status="False",
                reason=reason,
                message=message,
                current=raw,
            )

    async def clean_orphans(self) -> int:
        """Cancel this cluster's jobs whose pod is gone; returns how many. Needs both caches synced."""
        if not (self._pods.has_synced and self._jobs.synced):
            return 0
        live = {str((p.get("metadata") or {}).get("uid")) for p in self._pods.objects()}
        doomed = plan_orphan_cleanup(
            self._jobs.owned_jobs(), live, self._config.cluster_id, datetime.now(UTC)
        )
        return await cancel_orphans(self._slurm, self._jobs, doomed, "pod")


class SubmitDeferred(Exception):
    """Not now: retried by the work queue with backoff."""


def _with_managed_node_toleration(raw: KubeObject | None) -> list[dict[str, Any]] | None:
    """The pod's tolerations plus one for the bridged nodes' taint; None when it already tolerates it.

    Tolerations may be added to an existing pod (never removed), so the bridge adds its own instead of
    asking every user to write it.
    """
    existing = list(((raw or {}).get("spec") or {}).get("tolerations") or [])
    for toleration in existing:
        if toleration.get("operator") == "Exists" and not toleration.get("key"):
            return None  # tolerates everything
        if toleration.get("key") == wellknown.TAINT_MANAGED_NODE:
            return None
    return [*existing, {"key": wellknown.TAINT_MANAGED_NODE, "operator": "Exists"}]


def _seconds_since(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()
