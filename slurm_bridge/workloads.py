"""The scheduler shim and the workload controller, built from the config: informers, the Slurm job
cache, the pod and gang reconcilers with their work queues, the NodeSet controller, and what the
leader runs. slurm_bridge/app.py runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from bridge.config import BridgeConfig
from bridge.gang import GangKind
from bridge.startup_checks import StartupRefused, refuse_unsupported
from bridge.wellknown import LABEL_APP_NAME, SLURMD_APP
from controller.crash_points import NO_CRASH, CrashPoints
from controller.gangs import GANG_INDEX, GangMetrics, GangReconciler
from controller.nodesets import NODESET_INDEX, NodeSetReconciler, nodeset_of_pod
from controller.pods import PodMetrics, PodReconciler
from controller.ports import GangSlurm, ObjectReader, SlurmSeen
from controller.runtime import Backoff, Controller, ControllerMetrics, WorkQueue
from controller.slurm_jobs import SlurmJobCache
from controller.tenant_slurm import TenantJobSubmitter, tenant_slurm_users, user_clients_for
from kube_client import (
    COSCHEDULING_POD_GROUPS,
    NAMESPACES,
    NODES,
    NODESETS,
    PODS,
    WORKLOAD_POD_GROUPS,
    EventRecorder,
    Informer,
    KubeClient,
    KubeError,
    KubeObject,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLost,
    ResourceRef,
    serves,
)
from slurm_bridge.exits import LeaseLost
from slurm_bridge.health import Health
from slurm_bridge.routing import EventRouter, gang_key_for_group
from slurm_bridge.shared_view import SharedSlurmView
from slurm_client import SlurmClient

log = logging.getLogger(__name__)

# Its UID is made when a cluster is created and shared by no other: the default cluster id.
CLUSTER_ID_NAMESPACE = "kube-system"
ORPHAN_SWEEP_SECONDS = 30.0
# A pod waiting for slurmrestd to come back is retried at least this often.
MAX_RETRY_SECONDS = 30.0


@dataclass
class NodeSets:
    nodesets: Informer
    pods: Informer
    controller: Controller

    @property
    def informers(self) -> list[Informer]:
        return [self.nodesets, self.pods]


class Workloads:
    """Everything the scheduler and controller components need, wired; `lead()` is the leader's work."""

    def __init__(
        self,
        config: BridgeConfig,
        components: Collection[str],
        *,
        kube: KubeClient,
        slurm: SlurmClient,
        pod_groups: Informer | None,
        workload_groups: Informer | None,
        nodesets: NodeSets | None,
        registry: CollectorRegistry,
        metrics: ControllerMetrics,
        identity: str,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        resync = config.resync_interval_seconds
        self.pods = Informer(
            kube,
            PODS,
            field_selector=f"spec.schedulerName={config.scheduler_name}",
            resync_period=resync,
            name="pods",
        )
        self.nodes = Informer(kube, NODES, label_selector=config.node_selector or None, name="nodes")
        self.pod_groups = pod_groups
        self.workload_groups = workload_groups
        self.nodesets = nodesets
        # Queues first: the router feeds them, the reconcilers are built with the router's callbacks,
        # and the controllers then take the queues (no object needs another that does not exist yet).
        pod_queue = WorkQueue(backoff=Backoff(cap=MAX_RETRY_SECONDS))
        gang_queue = WorkQueue(backoff=Backoff(cap=MAX_RETRY_SECONDS))
        router = EventRouter(pod_queue, gang_queue, workload_groups)
        # Tenant policies may run jobs as other Slurm users: submits and cancels go as the job's owner.
        self.tenant_users = user_clients_for(config)
        submitter: GangSlurm = slurm
        if self.tenant_users is not None:
            submitter = TenantJobSubmitter(slurm, self.tenant_users, config)
        self.jobs = SlurmJobCache(
            slurm,
            config.marker_cluster_id,
            owner=tenant_slurm_users(config),
            poll_interval=config.poll_interval_seconds,
            on_change=router.to_pod,
            on_gang_change=router.to_gang,
            registry=registry,
            full_relist_seconds=config.job_full_relist_seconds,
            vanish_share=config.job_vanish_confirm_share,
            # REST v0.0.42+: a job just submitted is watched through jobs/state, not fast full lists.
            states=slurm if _reads_job_states(slurm) else None,
        )
        events = EventRecorder(kube, "slurm-bridge-scheduler", reporting_instance=identity)
        self.pod_reconciler = PodReconciler(
            config,
            kube=kube,
            slurm=submitter,
            pods=self.pods,
            nodes=self.nodes,
            jobs=self.jobs,
            events=events,
            components=components,
            metrics=PodMetrics(registry),
            gang_of=router.gang_of,
            on_gang_member=router.to_gang,
            crash=crash,
        )
        self.gang_reconciler = GangReconciler(
            config,
            kube=kube,
            slurm=submitter,
            pods=self.pods,
            pod_groups=pod_groups,
            workload_groups=workload_groups,
            nodes=self.nodes,
            jobs=self.jobs,
            events=events,
            components=components,
            metrics=GangMetrics(registry),
            crash=crash,
        )
        workers = config.workers
        self.pod_controller = Controller(
            "pods", self.pod_reconciler, workers=workers, metrics=metrics, queue=pod_queue
        )
        self.gang_controller = Controller(
            "gangs", self.gang_reconciler, workers=workers, metrics=metrics, queue=gang_queue
        )
        router.watch(
            pods=self.pods,
            nodes=self.nodes,
            pod_groups=pod_groups,
            workload_groups=workload_groups,
            jobs=self.jobs,
            node_name_label=config.node_name_label,
        )

    @property
    def informers(self) -> list[Informer]:
        found = [i for i in (self.pods, self.nodes, self.pod_groups, self.workload_groups) if i is not None]
        return found + (self.nodesets.informers if self.nodesets is not None else [])

    @property
    def synced(self) -> bool:
        return all(i.has_synced for i in self.informers) and self.jobs.synced

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.wait_synced() for i in self.informers), self.jobs.wait_synced())
        log.info(
            "caches synced: %d pods, %d nodes, %d Slurm jobs",
            len(self.pods.keys()),
            len(self.nodes.keys()),
            len(self.jobs.all_jobs()),
        )

    async def lead(self) -> None:
        """The leader's work: reconcile every known key, then sweep orphans until cancelled."""
        for key in set(self.pods.keys()) | self.jobs.pod_keys():
            self.pod_controller.enqueue(key)
        gang_keys = set(self.pods.index_values(GANG_INDEX)) | self.jobs.gang_keys()
        gang_keys |= _gangs(self.pod_groups, GangKind.COSCHEDULING) | _gangs(
            self.workload_groups, GangKind.WORKLOAD
        )
        for key in gang_keys:
            self.gang_controller.enqueue(key)
        self.pod_controller.start()
        self.gang_controller.start()
        if self.nodesets is not None:
            for key in self.nodesets.nodesets.keys():  # noqa: SIM118 (an Informer is no mapping)
                self.nodesets.controller.enqueue(key)
            self.nodesets.controller.start()
        try:
            while True:
                await self.pod_reconciler.clean_orphans()
                await self.gang_reconciler.clean_orphans()
                await asyncio.sleep(ORPHAN_SWEEP_SECONDS)
        finally:
            if self.nodesets is not None:
                await self.nodesets.controller.stop(drain=False)
            await self.gang_controller.stop(drain=False)
            await self.pod_controller.stop(drain=False)


async def build_workloads(
    config: BridgeConfig,
    components: Collection[str],
    *,
    kube: KubeClient,
    slurm: SlurmClient,
    operator: SlurmClient,
    registry: CollectorRegistry,
    identity: str,
    shared: SharedSlurmView | None = None,
    crash: CrashPoints = NO_CRASH,
) -> Workloads:
    resync = config.resync_interval_seconds
    # A group API the cluster does not serve (CRD not installed, Kubernetes < 1.37) has no informer:
    # its gangs' members wait for a group that cannot exist (said on the pods), nothing crashes.
    pod_groups = await group_informer(kube, COSCHEDULING_POD_GROUPS, resync, "podgroups")
    workload_groups = await group_informer(kube, WORKLOAD_POD_GROUPS, resync, "workload-podgroups")
    metrics = ControllerMetrics(registry)  # one per registry, shared by every controller
    nodesets = await build_nodesets(config, components, kube, operator, identity, metrics, shared, crash)
    workloads = Workloads(
        config,
        components,
        kube=kube,
        slurm=slurm,
        pod_groups=pod_groups,
        workload_groups=workload_groups,
        nodesets=nodesets,
        registry=registry,
        metrics=metrics,
        identity=identity,
        crash=crash,
    )
    if shared is not None:
        shared.attach_jobs(workloads.jobs)
    return workloads


async def build_nodesets(
    config: BridgeConfig,
    components: Collection[str],
    kube: KubeClient,
    slurm: SlurmClient,
    identity: str,
    metrics: ControllerMetrics,
    seen: SlurmSeen | None = None,
    crash: CrashPoints = NO_CRASH,
) -> NodeSets | None:
    """The NodeSet controller, when on, part of the controller component, and the CRD is served."""
    if "controller" not in components or not config.nodeset.enabled:
        return None
    try:
        served = await serves(kube, NODESETS)
    except KubeError as error:
        log.warning("cannot tell whether NodeSets are served (%s); the NodeSet controller is off", error)
        return None
    if not served:
        log.info("%s/%s is not served; the NodeSet controller is off", NODESETS.api_version, NODESETS.plural)
        return None
    resync = config.resync_interval_seconds
    namespace = config.nodeset.namespace
    nodesets = Informer(kube, NODESETS, namespace=namespace, resync_period=resync, name="nodesets")
    pods = Informer(
        kube,
        PODS,
        namespace=namespace,
        label_selector=f"{LABEL_APP_NAME}={SLURMD_APP}",
        resync_period=resync,
        name="slurmd-pods",
    )
    pods.add_index(NODESET_INDEX, nodeset_of_pod)
    reconciler = NodeSetReconciler(
        kube=kube,
        slurm=slurm,
        nodesets=nodesets,
        pods=pods,
        events=EventRecorder(kube, "slurm-bridge-nodeset-controller", reporting_instance=identity),
        resync_seconds=config.nodeset.resync_seconds,
        seen=seen,
        # A shared view older than a few polls means its reader is stuck: then Slurm is asked directly.
        seen_max_age=max(10.0, 3 * config.poll_interval_seconds),
        crash=crash,
    )
    controller = Controller(
        "nodesets", reconciler, workers=2, metrics=metrics, backoff=Backoff(cap=MAX_RETRY_SECONDS)
    )
    nodesets.add_handler(controller.enqueue)

    def pod_changed(old: KubeObject | None, new: KubeObject | None) -> bool:
        for pod in (old, new):
            if pod is not None:
                for key in nodeset_of_pod(pod):
                    controller.enqueue(key)
        return False

    pods.add_handler(lambda _key: None, predicate=pod_changed)
    return NodeSets(nodesets, pods, controller)


async def group_informer(kube: KubeClient, ref: ResourceRef, resync: float, name: str) -> Informer | None:
    """An informer of a gang group API, or None (logged once) when the cluster does not serve it."""
    try:
        served = await serves(kube, ref)
    except KubeError as error:
        log.warning(
            "cannot tell whether %s/%s is served (%s); its gangs are off", ref.api_version, ref.plural, error
        )
        return None
    if not served:
        log.info(
            "%s/%s is not served; gangs of that kind wait for it (restart once installed)",
            ref.api_version,
            ref.plural,
        )
        return None
    return Informer(kube, ref, resync_period=resync, name=name)


def _reads_job_states(slurm: SlurmClient) -> bool:
    try:
        return slurm.capabilities.supports_job_states
    except RuntimeError:  # not discovered (a client that never spoke to Slurm): full lists only
        return False


def _gangs(groups: Informer | None, kind: GangKind) -> set[str]:
    keys = groups.keys() if groups is not None else []  # an Informer is no mapping
    return {gang_key_for_group(key, kind) for key in keys}


async def start_workloads(
    config: BridgeConfig,
    components: frozenset[str],
    stack: contextlib.AsyncExitStack,
    slurm: SlurmClient,
    operator: SlurmClient,
    registry: CollectorRegistry,
    identity: str,
    health: Health,
    *,
    shared: SharedSlurmView | None = None,
) -> asyncio.Task[None]:
    """Build and start the scheduler/controller; returns the task doing the leader's work."""
    kube = await KubeClient.connect(config.kubernetes.kubeconfig)
    stack.push_async_callback(kube.close)
    config = await resolve_cluster_id(config, kube)
    capabilities = await slurm.discover()
    log.info("Slurm at %s speaks REST %s", config.slurm.url, capabilities.api_version)
    refuse_unsupported(config, capabilities)  # StartupRefused: slurm_bridge/app.py says why, exit 2
    # Test-only (controller/crash_points.py): read once, here; unset, it never does anything.
    try:
        crash = CrashPoints.from_environment(os.environ)
    except ValueError as bad:
        raise StartupRefused(str(bad)) from bad  # slurm_bridge/app.py says why, exit 2
    if crash.point is not None:
        log.warning("kill point armed: the process will die at %s:%d", crash.point, crash.nth)
    workloads = await build_workloads(
        config,
        components,
        kube=kube,
        slurm=slurm,
        operator=operator,
        registry=registry,
        identity=identity,
        shared=shared,
        crash=crash,
    )
    if workloads.tenant_users is not None:
        stack.push_async_callback(workloads.tenant_users.aclose)
    health.add_readiness_check("caches", lambda: (workloads.synced, "informers and Slurm job cache synced"))
    health.add_readiness_check(
        "slurm", lambda: (workloads.jobs.healthy, workloads.jobs.last_error or "job list polled")
    )
    for informer in workloads.informers:
        informer.start()
        stack.push_async_callback(informer.stop)
    poller = asyncio.create_task(workloads.jobs.run(), name="slurm-job-cache")
    stack.push_async_callback(_cancel, poller)
    await workloads.wait_synced()
    if not config.leader_election.enabled:
        return asyncio.create_task(workloads.lead(), name="work")
    le = config.leader_election
    elector = LeaderElector(
        kube,
        LeaderElectionConfig(
            lease_name=lease_name(le.lease_name, components),
            namespace=le.lease_namespace,
            identity=identity,
            lease_duration=le.lease_duration_seconds,
            renew_deadline=le.renew_deadline_seconds,
            retry_period=le.retry_period_seconds,
        ),
    )
    return asyncio.create_task(_lead_while_elected(elector, workloads), name="leader")


async def _lead_while_elected(elector: LeaderElector, workloads: Workloads) -> None:
    try:
        await elector.run(workloads.lead)
    except LeadershipLost as lost:
        raise LeaseLost(f"lost the leader Lease ({lost})") from lost


def lease_name(base: str, components: Collection[str]) -> str:
    """One Lease per set of duties: scheduler and controller run apart must not wait on each other."""
    duties = sorted({"scheduler", "controller"} & set(components))
    return base if len(duties) == 2 else f"{base}-{'-'.join(duties)}"


async def resolve_cluster_id(config: BridgeConfig, kube: ObjectReader) -> BridgeConfig:
    """The config with `cluster_id` set: as configured, else the kube-system namespace's UID."""
    if config.cluster_id is not None:
        return config
    namespace = await kube.get(NAMESPACES, CLUSTER_ID_NAMESPACE)
    uid = str((namespace.get("metadata") or {}).get("uid") or "")
    if not uid:
        raise RuntimeError(f"namespace {CLUSTER_ID_NAMESPACE} has no UID to derive the cluster id from")
    log.info("cluster id %s (the UID of namespace %s; set cluster_id to fix one)", uid, CLUSTER_ID_NAMESPACE)
    return config.model_copy(update={"cluster_id": uid})


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
