"""Wiring: build the clients, caches and loops of the chosen components and run them until stopped.

`slurm-bridge run` = scheduler + controller in one process. Only the leader acts (a
coordination.k8s.io Lease); the others keep warm caches and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry, start_http_server

import exporter
from bridge.config import BridgeConfig
from bridge.gang import GangInfo, GangKey, GangKind, gang_key_of
from bridge.startup_checks import StartupRefused, refuse_unsupported
from controller.gangs import GANG_INDEX, GangMetrics, GangReconciler, serves
from controller.nodeset_plan import LABEL_APP_NAME, SLURMD_APP
from controller.nodesets import NODESET_INDEX, NODESETS, NodeSetReconciler, nodeset_of_pod
from controller.pods import PodMetrics, PodReconciler
from controller.runtime import Backoff, Controller, ControllerMetrics
from controller.slurm_jobs import SlurmJobCache
from kube_client import (
    COSCHEDULING_POD_GROUPS,
    NODES,
    PODS,
    WORKLOAD_POD_GROUPS,
    EventRecorder,
    Informer,
    KubeClient,
    KubeError,
    KubeObject,
    LeaderElectionConfig,
    LeaderElector,
    ResourceRef,
    split_key,
)
from slurm_client import JwtKeyAuth, SlurmClient, StaticTokenAuth, TokenFileAuth

log = logging.getLogger(__name__)

ORPHAN_SWEEP_SECONDS = 30.0
# A pod waiting for slurmrestd to come back is retried at least this often.
MAX_RETRY_SECONDS = 30.0


def run(config: BridgeConfig, components: set[str]) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        if components == {"exporter"}:
            asyncio.run(exporter.serve(config))
        else:
            try:
                asyncio.run(run_async(config, components))
            except StartupRefused as exc:
                print(f"slurm-bridge: refusing to start: {exc}", file=sys.stderr)
                return 2
    return 0


def slurm_client_for(config: BridgeConfig) -> SlurmClient:
    s = config.slurm
    auth: httpx.Auth | None = None
    if s.jwt_key_file is not None:
        auth = JwtKeyAuth(s.user, s.jwt_key_file)
    elif s.token_file is not None:
        auth = TokenFileAuth(s.user, s.token_file)
    elif s.token is not None:
        auth = StaticTokenAuth(s.user, s.token.get_secret_value())
    return SlurmClient(s.url, auth=auth, api_version=s.api_version, timeout=s.request_timeout_seconds)


def operator_client_for(config: BridgeConfig) -> SlurmClient | None:
    """A client acting as the NodeSet controller's Slurm operator; None: use the bridge's own client."""
    n, s = config.nodeset, config.slurm
    auth: httpx.Auth
    if n.token_file is not None:
        auth = TokenFileAuth(n.slurm_user or s.user, n.token_file)
    elif n.slurm_user is not None and n.slurm_user != s.user and s.jwt_key_file is not None:
        auth = JwtKeyAuth(n.slurm_user, s.jwt_key_file)
    else:
        return None
    return SlurmClient(s.url, auth=auth, api_version=s.api_version, timeout=s.request_timeout_seconds)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "0.0.0.0", int(port)


async def run_async(
    config: BridgeConfig,
    components: set[str],
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    identity: str | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when stop is None)."""
    registry = registry if registry is not None else CollectorRegistry()
    stop = stop or _stop_on_signals()
    # With the exporter, its server serves the whole registry; otherwise prometheus-client's does.
    with_exporter = "exporter" in components
    if config.metrics_listen_address and not with_exporter:
        host, port = _host_port(config.metrics_listen_address)
        start_http_server(port, addr=host, registry=registry)
    identity = identity or f"{socket.gethostname()}-{os.getpid()}"

    async with _clients(config) as (kube, slurm), _operator(config, slurm) as operator:
        capabilities = await slurm.discover()
        log.info("Slurm at %s speaks REST %s", config.slurm.url, capabilities.api_version)
        refuse_unsupported(config, capabilities)
        pods = Informer(
            kube,
            PODS,
            field_selector=f"spec.schedulerName={config.scheduler_name}",
            resync_period=config.resync_interval_seconds,
            name="pods",
        )
        nodes = Informer(kube, NODES, label_selector=config.node_selector or None, name="nodes")
        # A group API the cluster does not serve (CRD not installed, Kubernetes < 1.37) has no informer:
        # its gangs' members wait for a group that cannot exist (said on the pods), nothing crashes.
        resync = config.resync_interval_seconds
        pod_groups = await _group_informer(kube, COSCHEDULING_POD_GROUPS, resync, "podgroups")
        workload_groups = await _group_informer(kube, WORKLOAD_POD_GROUPS, resync, "workload-podgroups")
        controller: Controller | None = None
        gangs: Controller | None = None

        def enqueue(key: str) -> None:
            if controller is not None:
                controller.enqueue(key)

        def enqueue_gang(key: str) -> None:
            if gangs is not None:
                gangs.enqueue(key)

        def gang_of(pod: KubeObject) -> str | None:
            """The gang key a pod is planned under; None for single pods and basic-policy groups."""
            key = gang_key_of(pod)
            if key is None:
                return None
            if key.kind is GangKind.WORKLOAD and workload_groups is not None:
                group = workload_groups.get(f"{key.namespace}/{key.name}")
                if group is not None and not GangInfo.from_workload_api(group).all_or_nothing:
                    return None
            return str(key)

        def route_members(old: KubeObject | None, new: KubeObject | None) -> bool:
            # Every change of a member (its disappearance included) wakes its gang.
            for pod in (old, new):
                if pod is not None and (gang := gang_of(pod)) is not None:
                    enqueue_gang(gang)
            return False

        def group_changed(kind: GangKind) -> Callable[[str], None]:
            return lambda key: enqueue_gang(_gang(key, kind))

        jobs = SlurmJobCache(
            slurm,
            config.cluster_id,
            owner=config.slurm.user,
            poll_interval=config.poll_interval_seconds,
            on_change=enqueue,
            on_gang_change=enqueue_gang,
            registry=registry,
        )
        events = EventRecorder(kube, "slurm-bridge-scheduler", reporting_instance=identity)
        reconciler = PodReconciler(
            config,
            kube=kube,
            slurm=slurm,
            pods=pods,
            nodes=nodes,
            jobs=jobs,
            events=events,
            components=components,
            metrics=PodMetrics(registry),
            gang_of=gang_of,
            on_gang_member=enqueue_gang,
        )
        gang_reconciler = GangReconciler(
            config,
            kube=kube,
            slurm=slurm,
            pods=pods,
            pod_groups=pod_groups,
            workload_groups=workload_groups,
            nodes=nodes,
            jobs=jobs,
            events=events,
            components=components,
            metrics=GangMetrics(registry),
        )
        controller_metrics = ControllerMetrics(registry)
        controller = Controller(
            "pods",
            reconciler,
            workers=config.workers,
            metrics=controller_metrics,
            backoff=Backoff(cap=MAX_RETRY_SECONDS),
        )
        gangs = Controller(
            "gangs",
            gang_reconciler,
            workers=config.workers,
            metrics=controller_metrics,  # one per registry, shared
            backoff=Backoff(cap=MAX_RETRY_SECONDS),
        )
        pods.add_handler(enqueue)
        pods.add_handler(lambda _key: None, predicate=route_members)
        pods.add_index(GANG_INDEX, lambda pod: [gang] if (gang := gang_of(pod)) is not None else [])
        if pod_groups is not None:
            pod_groups.add_handler(group_changed(GangKind.COSCHEDULING))
        if workload_groups is not None:
            workload_groups.add_handler(group_changed(GangKind.WORKLOAD))

        def node_changed(_key: str) -> None:
            # a node appearing or changing labels can make a waiting bind possible
            for key in jobs.pod_keys():
                enqueue(key)
            for key in jobs.gang_keys():
                enqueue_gang(key)

        nodes.add_handler(node_changed)
        nodesets = await _nodeset_controller(config, components, kube, operator, identity, controller_metrics)

        informers = [i for i in (pods, nodes, pod_groups, workload_groups) if i is not None]
        if nodesets is not None:
            informers += nodesets.informers

        async with contextlib.AsyncExitStack() as stack:
            tasks: list[asyncio.Task[None]] = []
            stack.push_async_callback(_cancel_all, tasks)
            if with_exporter:  # on every replica, leader or not
                tasks.append(
                    asyncio.create_task(
                        exporter.serve(config, registry=registry, stop=stop, slurm=slurm), name="exporter"
                    )
                )
            for informer in informers:
                informer.start()
                stack.push_async_callback(informer.stop)
            tasks.append(asyncio.create_task(jobs.run(), name="slurm-job-cache"))
            await asyncio.gather(*(i.wait_synced() for i in informers), jobs.wait_synced())
            log.info(
                "caches synced: %d pods, %d nodes, %d Slurm jobs",
                len(pods.keys()),
                len(nodes.keys()),
                len(jobs.all_jobs()),
            )

            async def lead() -> None:
                assert controller is not None
                assert gangs is not None
                for key in set(pods.keys()) | jobs.pod_keys():
                    controller.enqueue(key)
                gang_keys = set(pods.index_values(GANG_INDEX)) | jobs.gang_keys()
                gang_keys |= _gangs(pod_groups, GangKind.COSCHEDULING) | _gangs(
                    workload_groups, GangKind.WORKLOAD
                )
                for key in gang_keys:
                    gangs.enqueue(key)
                controller.start()
                gangs.start()
                if nodesets is not None:
                    for key in nodesets.nodesets.keys():  # noqa: SIM118 (an Informer is no mapping)
                        nodesets.controller.enqueue(key)
                    nodesets.controller.start()
                try:
                    while True:
                        await reconciler.clean_orphans()
                        await gang_reconciler.clean_orphans()
                        await asyncio.sleep(ORPHAN_SWEEP_SECONDS)
                finally:
                    if nodesets is not None:
                        await nodesets.controller.stop(drain=False)
                    await gangs.stop(drain=False)
                    await controller.stop(drain=False)

            if config.leader_election.enabled:
                le = config.leader_election
                elector = LeaderElector(
                    kube,
                    LeaderElectionConfig(
                        lease_name=le.lease_name,
                        namespace=le.lease_namespace,
                        identity=identity,
                        lease_duration=le.lease_duration_seconds,
                        renew_deadline=le.renew_deadline_seconds,
                        retry_period=le.retry_period_seconds,
                    ),
                )
                work = asyncio.create_task(elector.run(lead), name="leader")
            else:
                work = asyncio.create_task(lead(), name="work")
            tasks.append(work)
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if work in done and not work.cancelled() and work.exception() is not None:
                raise work.exception()  # type: ignore[misc]
            log.info("stopping")


@dataclass
class _NodeSets:
    nodesets: Informer
    pods: Informer
    controller: Controller

    @property
    def informers(self) -> list[Informer]:
        return [self.nodesets, self.pods]


async def _nodeset_controller(
    config: BridgeConfig,
    components: set[str],
    kube: KubeClient,
    slurm: SlurmClient,
    identity: str,
    metrics: ControllerMetrics,
) -> _NodeSets | None:
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
    return _NodeSets(nodesets, pods, controller)


@contextlib.asynccontextmanager
async def _operator(config: BridgeConfig, slurm: SlurmClient) -> AsyncIterator[SlurmClient]:
    operator = operator_client_for(config)
    try:
        yield operator or slurm
    finally:
        if operator is not None:
            await operator.aclose()


def _gang(key: str, kind: GangKind) -> str:
    namespace, name = split_key(key)
    return str(GangKey(namespace=namespace or "default", kind=kind, name=name))


def _gangs(groups: Informer | None, kind: GangKind) -> set[str]:
    keys = groups.keys() if groups is not None else []  # an Informer is no mapping
    return {_gang(key, kind) for key in keys}


async def _group_informer(kube: KubeClient, ref: ResourceRef, resync: float, name: str) -> Informer | None:
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


@contextlib.asynccontextmanager
async def _clients(config: BridgeConfig) -> AsyncIterator[tuple[KubeClient, SlurmClient]]:
    kube = await KubeClient.connect(config.kubernetes.kubeconfig)
    slurm = slurm_client_for(config)
    try:
        yield kube, slurm
    finally:
        await slurm.aclose()
        await kube.close()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
