"""kube_client against the real kube-apiserver 1.37 + kwok testbed; every test works in a fresh namespace."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from controller.runtime import Controller, ControllerMetrics, Result
from kube_client import (
    CUSTOM_RESOURCE_DEFINITIONS,
    EVENTS,
    NAMESPACES,
    PODS,
    Conflict,
    EventRecorder,
    Informer,
    KubeClient,
    KubeObject,
    LeaderElectionConfig,
    LeaderElector,
    NotFound,
    ObjectList,
    PatchType,
    ResourceRef,
    WatchStream,
    field_index,
    split_key,
)
from tests import testbed_env
from tests.testbed_env import ENV_FILE, KubeCluster, read_env

pytestmark = pytest.mark.testbed

# Nobody else binds these pods: no scheduler has this name (the bridge's own components ignore it too).
SCHEDULER_NAME = "kube-client-live-test"


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> KubeCluster:
    """The lead's `kube` fixture, except that a testbed already up is used as is (no up.sh run)."""
    if ENV_FILE.exists():
        kube = testbed_env.Testbed.from_env(read_env()).kube
        assert kube is not None
        return kube
    kube_fixture: KubeCluster = request.getfixturevalue("kube")
    return kube_fixture


@pytest_asyncio.fixture(loop_scope="function")
async def client(cluster: KubeCluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.from_kubeconfig(cluster.kubeconfig, field_manager="kube-client-live") as kube:
        yield kube


@pytest_asyncio.fixture(loop_scope="function")
async def namespace(client: KubeClient) -> AsyncIterator[str]:
    name = f"kc-live-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    async def default_service_account() -> bool:
        # Pod admission refuses pods until the service-account controller made "default".
        try:
            await client.get(ResourceRef("", "v1", "serviceaccounts"), "default", namespace=name)
        except NotFound:
            return False
        return True

    await wait_until("default service account", default_service_account)
    yield name
    await client.delete(NAMESPACES, name)


async def wait_until(what: str, probe: Callable[[], Awaitable[Any]], within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


def pod_manifest(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kc-live", **labels}},
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "main", "image": "busybox", "resources": {"requests": {"cpu": "10m"}}}],
        },
    }


async def create_pod(client: KubeClient, namespace: str, name: str, **labels: str) -> KubeObject:
    return await client.create(PODS, pod_manifest(name, **labels), namespace=namespace)


# ---- informer ----------------------------------------------------------------------------------------


async def test_informer_follows_create_update_delete_across_watch_restarts(
    client: KubeClient, namespace: str
) -> None:
    informer = Informer(client, PODS, namespace=namespace, watch_timeout_seconds=1, resync_period=None)
    informer.add_index("role", lambda pod: [pod["metadata"].get("labels", {}).get("role", "")])
    delivered: list[str] = []
    informer.add_handler(delivered.append)
    async with informer:
        async with asyncio.timeout(10):
            await informer.wait_synced()
        assert len(informer) == 0

        await create_pod(client, namespace, "a", role="first")
        await wait_until("ADDED a", lambda: _async(informer.get(f"{namespace}/a") is not None))
        assert f"{namespace}/a" in delivered

        # The server ends each watch after 1-2 s; the informer must carry on from its resourceVersion.
        await wait_until("two watch restarts", lambda: _async(informer.stats.watches >= 3), within=15)
        await client.patch(PODS, "a", {"metadata": {"labels": {"role": "second"}}}, namespace=namespace)
        await wait_until(
            "MODIFIED a", lambda: _async(informer.keys_by_index("role", "second") == {f"{namespace}/a"})
        )

        await client.delete_pod(namespace, "a", grace_period_seconds=0)
        await wait_until("DELETED a", lambda: _async(informer.get(f"{namespace}/a") is None))
        assert informer.stats.lists == 1  # restarts resumed the watch; no relist was needed
        assert informer.stats.errors == 0


class CompactedFirstWatch:
    """Passes calls through, but the first watch resumes from resourceVersion "1", long compacted away:
    what an informer sees after a disconnect longer than etcd's history."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._first = True

    async def list_objects(self, ref: ResourceRef, **kwargs: Any) -> ObjectList:
        return await self._client.list_objects(ref, **kwargs)

    async def open_watch(self, ref: ResourceRef, **kwargs: Any) -> WatchStream:
        if self._first:
            self._first = False
            kwargs["resource_version"] = "1"
        return await self._client.open_watch(ref, **kwargs)


async def test_informer_relists_when_its_resource_version_expired(client: KubeClient, namespace: str) -> None:
    await create_pod(client, namespace, "before")
    informer = Informer(CompactedFirstWatch(client), PODS, namespace=namespace, resync_period=None)
    async with informer:
        await wait_until("relist after 410", lambda: _async(informer.stats.lists == 2))
        assert informer.stats.expired == 1
        await create_pod(client, namespace, "after")
        await wait_until("ADDED after", lambda: _async(informer.get(f"{namespace}/after") is not None))
        assert informer.get(f"{namespace}/before") is not None


async def test_informer_on_cluster_scoped_nodes(client: KubeClient, cluster: KubeCluster) -> None:
    informer = Informer(
        client, ResourceRef("", "v1", "nodes", namespaced=False, kind="Node"), resync_period=None
    )
    async with informer:
        async with asyncio.timeout(10):
            await informer.wait_synced()
        assert set(cluster.nodes) <= set(informer.keys())
        node = informer.get(cluster.nodes[0])
        assert node is not None
        assert node["kind"] == "Node"


# ---- writes ------------------------------------------------------------------------------------------


async def test_bind_is_idempotent_and_kwok_runs_the_pod(
    client: KubeClient, namespace: str, cluster: KubeCluster
) -> None:
    created = await create_pod(client, namespace, "bound")
    uid = created["metadata"]["uid"]
    node, other_node = cluster.nodes[0], cluster.nodes[1]

    await client.bind_pod(namespace, "bound", node, uid=uid)
    await client.bind_pod(namespace, "bound", node, uid=uid)  # a retried bind is a success
    with pytest.raises(Conflict):
        await client.bind_pod(namespace, "bound", other_node)

    async def running() -> bool:
        pod = await client.get(PODS, "bound", namespace=namespace)
        return bool(pod.get("status", {}).get("phase") == "Running")

    await wait_until("kwok to run the bound pod", running, within=30)
    pod = await client.get(PODS, "bound", namespace=namespace)
    assert pod["spec"]["nodeName"] == node


async def test_bind_refuses_another_incarnation(
    client: KubeClient, namespace: str, cluster: KubeCluster
) -> None:
    await create_pod(client, namespace, "reborn")
    with pytest.raises(Conflict):
        await client.bind_pod(
            namespace, "reborn", cluster.nodes[0], uid="00000000-0000-0000-0000-000000000000"
        )


async def test_delete_pod_is_idempotent(client: KubeClient, namespace: str) -> None:
    created = await create_pod(client, namespace, "doomed")
    assert not await client.delete_pod(namespace, "doomed", uid="00000000-0000-0000-0000-000000000000")
    assert await client.delete_pod(
        namespace, "doomed", grace_period_seconds=0, uid=created["metadata"]["uid"]
    )
    await wait_until("pod gone", lambda: _gone(client, PODS, "doomed", namespace))
    assert not await client.delete_pod(namespace, "doomed")


async def test_finalizers_add_and_remove(client: KubeClient, namespace: str) -> None:
    created = await create_pod(client, namespace, "guarded")
    assert "finalizers" not in created["metadata"]
    assert await client.add_finalizer(PODS, "guarded", "slurm.example.com/job", namespace=namespace)
    assert not await client.add_finalizer(PODS, "guarded", "slurm.example.com/job", namespace=namespace)
    # A stale copy (from before the first add) makes the guarded patch fail once, then succeed on reread.
    assert await client.add_finalizer(
        PODS, "guarded", "other.example.com/f", namespace=namespace, current=created
    )
    pod = await client.get(PODS, "guarded", namespace=namespace)
    assert pod["metadata"]["finalizers"] == ["slurm.example.com/job", "other.example.com/f"]

    assert await client.remove_finalizer(PODS, "guarded", "slurm.example.com/job", namespace=namespace)
    assert not await client.remove_finalizer(PODS, "guarded", "slurm.example.com/job", namespace=namespace)
    assert await client.remove_finalizer(PODS, "guarded", "other.example.com/f", namespace=namespace)
    pod = await client.get(PODS, "guarded", namespace=namespace)
    assert not pod["metadata"].get("finalizers")


async def test_pod_condition_patch(client: KubeClient, namespace: str) -> None:
    await create_pod(client, namespace, "cond")
    written = await client.set_pod_condition(
        namespace,
        "cond",
        condition_type="SlurmJobPending",
        status="True",
        reason="Resources",
        message="job 7",
    )
    assert written is not None
    condition = _condition(written, "SlurmJobPending")
    assert (condition["status"], condition["reason"], condition["message"]) == ("True", "Resources", "job 7")
    first_transition = condition["lastTransitionTime"]

    unchanged = await client.set_pod_condition(
        namespace,
        "cond",
        condition_type="SlurmJobPending",
        status="True",
        reason="Resources",
        message="job 7",
    )
    assert unchanged is None

    reworded = await client.set_pod_condition(
        namespace, "cond", condition_type="SlurmJobPending", status="True", reason="Priority", message="job 7"
    )
    assert reworded is not None
    assert _condition(reworded, "SlurmJobPending")["lastTransitionTime"] == first_transition
    assert sum(c["type"] == "SlurmJobPending" for c in reworded["status"]["conditions"]) == 1


async def test_events_are_created_and_aggregated(client: KubeClient, namespace: str) -> None:
    pod = await create_pod(client, namespace, "noisy")
    pod = await client.get(PODS, "noisy", namespace=namespace)
    recorder = EventRecorder(client, "kube-client-live", reporting_instance="pytest")
    for _ in range(3):
        await recorder.warning(pod, "SlurmPending", "waiting for resources")
    await recorder.normal(pod, "Bound", "bound to slurm-bridge-0")

    listing = await client.list_objects(
        EVENTS, namespace=namespace, field_selector=f"involvedObject.uid={pod['metadata']['uid']}"
    )
    by_reason = {event["reason"]: event for event in listing.items}
    assert set(by_reason) == {"SlurmPending", "Bound"}
    assert by_reason["SlurmPending"]["count"] == 3
    assert by_reason["SlurmPending"]["type"] == "Warning"
    assert by_reason["SlurmPending"]["involvedObject"]["name"] == "noisy"
    assert by_reason["SlurmPending"]["reportingComponent"] == "kube-client-live"
    assert by_reason["Bound"]["count"] == 1
    assert recorder.writes_failed == 0


# ---- custom resources --------------------------------------------------------------------------------


async def test_custom_resource_crud_and_status(client: KubeClient, namespace: str) -> None:
    group = f"{namespace}.example.com"
    crd_name = f"widgets.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    await client.create(CUSTOM_RESOURCE_DEFINITIONS, crd)
    widgets = ResourceRef(group, "v1", "widgets", namespaced=True, kind="Widget")
    try:

        async def established() -> bool:
            current = await client.get(CUSTOM_RESOURCE_DEFINITIONS, crd_name)
            conditions: list[dict[str, Any]] = (current.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        await wait_until("CRD established", established)

        async def created() -> KubeObject | None:
            # Discovery can lag "Established" by a moment: retry a 404 on the new resource.
            try:
                return await client.create(
                    widgets,
                    {
                        "apiVersion": f"{group}/v1",
                        "kind": "Widget",
                        "metadata": {"name": "w"},
                        "spec": {"size": 1},
                    },
                    namespace=namespace,
                )
            except NotFound:
                return None

        widget = await wait_until("widget created", created)
        assert widget["spec"] == {"size": 1}

        listing = await client.list_objects(widgets, namespace=namespace)
        assert [item["metadata"]["name"] for item in listing.items] == ["w"]
        assert listing.items[0]["kind"] == "Widget"

        patched = await client.patch(
            widgets,
            "w",
            {"spec": {"size": 3}},
            namespace=namespace,
            resource_version=widget["metadata"]["resourceVersion"],
        )
        assert patched["spec"]["size"] == 3
        with pytest.raises(Conflict):  # the resourceVersion precondition is enforced
            await client.patch(
                widgets,
                "w",
                {"spec": {"size": 4}},
                namespace=namespace,
                resource_version=widget["metadata"]["resourceVersion"],
            )

        status_patched = await client.patch(
            widgets, "w", {"status": {"phase": "Ready"}}, namespace=namespace, subresource="status"
        )
        assert status_patched["status"] == {"phase": "Ready"}
        # The main resource ignores status writes when the status subresource is on.
        await client.patch(widgets, "w", {"status": {"phase": "Ignored"}}, namespace=namespace)
        assert (await client.get(widgets, "w", namespace=namespace))["status"] == {"phase": "Ready"}

        json_patched = await client.patch(
            widgets,
            "w",
            [{"op": "replace", "path": "/spec/size", "value": 5}],
            namespace=namespace,
            patch_type=PatchType.JSON,
        )
        assert json_patched["spec"]["size"] == 5

        assert await client.delete(widgets, "w", namespace=namespace) is not None
        assert await client.delete(widgets, "w", namespace=namespace) is None
    finally:
        await client.delete(CUSTOM_RESOURCE_DEFINITIONS, crd_name)


# ---- leader election ---------------------------------------------------------------------------------


async def test_two_electors_one_leader_then_handover_on_release_and_on_expiry(
    client: KubeClient, cluster: KubeCluster, namespace: str
) -> None:
    durations = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.3}
    async with await KubeClient.from_kubeconfig(cluster.kubeconfig) as second_client:

        def elector(kube: KubeClient, identity: str, release_on_exit: bool = True) -> LeaderElector:
            config = LeaderElectionConfig(
                lease_name="bridge-leader",
                namespace=namespace,
                identity=identity,
                release_on_exit=release_on_exit,
                **durations,
            )
            return LeaderElector(kube, config)

        leading: set[str] = set()
        overlaps: list[set[str]] = []
        order: list[str] = []

        async def lead(candidate: LeaderElector, hold: float) -> None:
            async with candidate.leading():
                identity = candidate.config.identity
                if leading:
                    overlaps.append({*leading, identity})
                leading.add(identity)
                order.append(identity)
                try:
                    await asyncio.sleep(hold)
                finally:
                    leading.discard(identity)

        a = elector(client, "a")
        b = elector(second_client, "b")
        task_a = asyncio.create_task(lead(a, 4.0))
        await wait_until("a leads", lambda: _async(a.is_leader))
        task_b = asyncio.create_task(lead(b, 1.0))
        await asyncio.sleep(2.0)
        assert not b.is_leader  # a renews; b keeps waiting
        await task_a  # a releases on exit...
        released = time.monotonic()
        await wait_until("b leads", lambda: _async(b.is_leader), within=5)
        assert time.monotonic() - released < 1.5  # ...so b needn't wait for expiry
        await task_b
        assert order == ["a", "b"]

        # Now "c" dies while leading without releasing; "a" must wait out the lease (3 s) first.
        c = elector(second_client, "c", release_on_exit=False)
        task_c = asyncio.create_task(lead(c, 60.0))
        await wait_until("c leads", lambda: _async(c.is_leader))
        task_c.cancel()
        died = time.monotonic()
        await asyncio.gather(task_c, return_exceptions=True)
        await asyncio.wait_for(lead(a, 0.1), timeout=15)
        assert time.monotonic() - died >= durations["lease_duration"]
        assert order == ["a", "b", "c", "a"]
        assert overlaps == []

        lease = await client.get(
            ResourceRef("coordination.k8s.io", "v1", "leases", kind="Lease"),
            "bridge-leader",
            namespace=namespace,
        )
        assert lease["spec"]["leaseTransitions"] == 3
        assert not lease["spec"].get("holderIdentity")


async def test_two_electors_contending_never_overlap(
    client: KubeClient, cluster: KubeCluster, namespace: str
) -> None:
    async with await KubeClient.from_kubeconfig(cluster.kubeconfig) as second_client:
        intervals: list[tuple[str, float, float]] = []

        async def contend(kube: KubeClient, identity: str) -> None:
            config = LeaderElectionConfig(
                lease_name="contended",
                namespace=namespace,
                identity=identity,
                lease_duration=3.0,
                renew_deadline=2.0,
                retry_period=0.2,
            )
            candidate = LeaderElector(kube, config)
            for _ in range(3):
                async with candidate.leading():
                    began = time.monotonic()
                    await asyncio.sleep(0.3)
                    intervals.append((identity, began, time.monotonic()))

        async with asyncio.timeout(60):
            await asyncio.gather(contend(client, "x"), contend(second_client, "y"))
        intervals.sort(key=lambda interval: interval[1])
        for (_, _, end), (_, begin, _) in itertools.pairwise(intervals):
            assert begin >= end
        assert len(intervals) == 6


# ---- informer + runtime together ---------------------------------------------------------------------


async def test_informer_feeds_a_controller_that_binds_pods(
    client: KubeClient, namespace: str, cluster: KubeCluster
) -> None:
    """The intended wiring: informer keys -> work queue -> reconcile reads the cache, writes, returns."""
    informer = Informer(client, PODS, namespace=namespace, resync_period=5.0)

    class BindToFirstNode:
        async def reconcile(self, key: str) -> Result:
            pod = informer.get(key)
            if pod is None or pod["spec"].get("nodeName"):
                return Result()
            pod_namespace, name = split_key(key)
            assert pod_namespace is not None
            await client.bind_pod(pod_namespace, name, cluster.nodes[0], uid=pod["metadata"]["uid"])
            return Result()

    controller = Controller(
        "binder", BindToFirstNode(), workers=4, metrics=ControllerMetrics(CollectorRegistry())
    )
    informer.add_handler(controller.enqueue)
    async with informer, controller:
        for i in range(20):
            await create_pod(client, namespace, f"e2e-{i}")

        def all_running() -> bool:
            pods = informer.objects()
            return len(pods) == 20 and all(p.get("status", {}).get("phase") == "Running" for p in pods)

        await wait_until("20 pods bound and Running", lambda: _async(all_running()), within=60)
    assert controller.stats.outcomes.get("error", 0) == 0


# ---- measured figures --------------------------------------------------------------------------------


async def test_measure_list_and_bind_rates(client: KubeClient, namespace: str, cluster: KubeCluster) -> None:
    """Not a pass/fail threshold: prints figures for the report (create, initial list, bind rates)."""
    count = 200
    sem = asyncio.Semaphore(8)

    async def limited(coro: Awaitable[Any]) -> Any:
        async with sem:
            return await coro

    started = time.perf_counter()
    await asyncio.gather(*(limited(create_pod(client, namespace, f"m{i}")) for i in range(count)))
    create_seconds = time.perf_counter() - started

    informer = Informer(client, PODS, namespace=namespace, resync_period=None)
    informer.add_index("node", field_index("spec", "nodeName"))
    async with informer:
        async with asyncio.timeout(30):
            await informer.wait_synced()
        list_seconds = informer.stats.last_list_seconds
        assert len(informer) == count

        gets_before = client.request_counts["GET"]
        started = time.perf_counter()
        await asyncio.gather(
            *(
                limited(client.bind_pod(namespace, f"m{i}", cluster.nodes[i % len(cluster.nodes)]))
                for i in range(count)
            )
        )
        bind_seconds = time.perf_counter() - started
        assert client.request_counts["GET"] == gets_before  # binding never needed a read
        await wait_until(
            "informer sees all bindings",
            lambda: _async(sum(len(informer.keys_by_index("node", n)) for n in cluster.nodes) == count),
        )
    print(
        f"\n[kube_client] {count} pods: create {count / create_seconds:.0f}/s (8 concurrent), "
        f"informer initial list {list_seconds * 1000:.0f} ms, "
        f"bind {count / bind_seconds:.0f}/s (8 concurrent)"
    )


# ---- helpers -----------------------------------------------------------------------------------------


async def _async(value: Any) -> Any:
    return value


async def _gone(client: KubeClient, ref: ResourceRef, name: str, namespace: str) -> bool:
    try:
        await client.get(ref, name, namespace=namespace)
    except NotFound:
        return True
    return False


def _condition(pod: KubeObject, condition_type: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == condition_type)
