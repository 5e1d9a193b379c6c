"""The composition root's own decisions: Lease names, the derived cluster id, health, event routing."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.gang import GangKind
from controller.runtime import WorkQueue
from kube_client import KubeObject, ResourceRef
from slurm_bridge import app
from slurm_bridge.exits import EXIT_LEADERSHIP_LOST, LeaseLost
from slurm_bridge.health import STUCK_AFTER_SECONDS, Health
from slurm_bridge.routing import EventRouter, gang_key_for_group
from slurm_bridge.workloads import lease_name, resolve_cluster_id
from tests.fakes.kube import FakeCache


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        ({"scheduler", "controller"}, "slurm-bridge"),
        ({"scheduler", "controller", "exporter"}, "slurm-bridge"),
        ({"scheduler"}, "slurm-bridge-scheduler"),
        ({"controller", "exporter"}, "slurm-bridge-controller"),
    ],
    ids=["both", "both-with-exporter", "scheduler-apart", "controller-apart"],
)
def test_components_run_apart_take_leases_of_their_own(components: set[str], expected: str) -> None:
    assert lease_name("slurm-bridge", components) == expected


class Namespaces:
    def __init__(self, uid: str | None) -> None:
        self.uid = uid
        self.asked: list[str] = []

    async def get(self, ref: ResourceRef, name: str, *, namespace: str | None = None) -> KubeObject:
        self.asked.append(name)
        return {"metadata": {"name": name, **({"uid": self.uid} if self.uid else {})}}


async def test_the_cluster_id_defaults_to_the_kube_system_uid() -> None:
    kube = Namespaces("3f1c8e2a-55aa-4c1b-9f00-0123456789ab")
    resolved = await resolve_cluster_id(BridgeConfig(), kube)
    assert resolved.cluster_id == "3f1c8e2a-55aa-4c1b-9f00-0123456789ab"
    assert resolved.marker_cluster_id == resolved.cluster_id
    assert kube.asked == ["kube-system"]


async def test_a_configured_cluster_id_is_kept_without_asking() -> None:
    kube = Namespaces("3f1c8e2a-55aa-4c1b-9f00-0123456789ab")
    assert (await resolve_cluster_id(BridgeConfig(cluster_id="east-1"), kube)).cluster_id == "east-1"
    assert kube.asked == []


async def test_no_uid_no_start() -> None:
    with pytest.raises(RuntimeError, match="kube-system"):
        await resolve_cluster_id(BridgeConfig(), Namespaces(None))


def test_ready_needs_every_check_and_a_running_loop() -> None:
    now = [0.0]
    health = Health(clock=lambda: now[0])
    synced = [False]
    health.add_readiness_check("caches", lambda: (synced[0], "informers synced"))
    assert health.alive() == (True, "event loop running")
    assert health.ready() == (False, "caches: informers synced")
    synced[0] = True
    assert health.ready() == (True, "caches")
    now[0] = STUCK_AFTER_SECONDS + 1
    assert health.alive()[0] is False
    assert health.ready()[0] is False


def pod(name: str, labels: dict[str, str] | None = None, group: str | None = None) -> KubeObject:
    spec: dict[str, Any] = {"schedulerName": "slurm-bridge-scheduler"}
    if group is not None:
        spec["schedulingGroup"] = {"podGroupName": group}
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": labels or {}},
        "spec": spec,
    }


def workload_group(name: str, policy: dict[str, Any]) -> KubeObject:
    return {"metadata": {"name": name, "namespace": "ml", "uid": "g"}, "spec": {"schedulingPolicy": policy}}


COSCHEDULING = "ml/podgroup.scheduling.x-k8s.io/train"
WORKLOAD = "ml/podgroup.scheduling.k8s.io/g1"


@pytest.mark.parametrize(
    ("raw", "groups", "expected"),
    [
        (pod("p"), [], None),
        (pod("w-0", {"scheduling.x-k8s.io/pod-group": "train"}), [], "ml/podgroup.scheduling.x-k8s.io/train"),
        (
            pod("w-0", group="g1"),
            [workload_group("g1", {"gang": {"minCount": 2}})],
            "ml/podgroup.scheduling.k8s.io/g1",
        ),
        (pod("w-0", group="g1"), [workload_group("g1", {"basic": {}})], None),
        (pod("w-0", group="g1"), [], "ml/podgroup.scheduling.k8s.io/g1"),
    ],
    ids=[
        "single-pod",
        "coscheduling-member",
        "workload-gang",
        "workload-basic-is-no-gang",
        "group-not-seen-yet",
    ],
)
def test_the_router_sends_each_pod_to_one_queue(
    raw: KubeObject, groups: list[KubeObject], expected: str | None
) -> None:
    pods, gangs = WorkQueue(), WorkQueue()
    router = EventRouter(pods, gangs, FakeCache(groups))
    assert router.gang_of(raw) == expected


def test_a_group_object_wakes_its_gang() -> None:
    assert gang_key_for_group("ml/train", GangKind.COSCHEDULING) == "ml/podgroup.scheduling.x-k8s.io/train"


def test_a_lost_lease_ends_the_process_with_its_own_status(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def lose(*_args: object, **_kw: object) -> None:
        raise LeaseLost("lost the leader Lease (lease slurm-bridge lost)")

    monkeypatch.setattr(app, "run_async", lose)
    assert app.run(BridgeConfig(), {"scheduler", "controller"}) == EXIT_LEADERSHIP_LOST
    assert "rejoin as a follower" in caplog.text


async def test_a_stopped_leader_hands_its_lease_back_before_the_kubernetes_client_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (here: `stop`) ends the leader's task while its Kubernetes client is still open, so the
    elector's release reaches the API server and a follower takes over at once (not after expiry)."""
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator

    import slurm_bridge.workloads

    kube_open = True
    released_while_open: list[bool] = []

    @contextlib.asynccontextmanager
    async def clients(_config: BridgeConfig) -> AsyncIterator[tuple[None, None]]:
        yield None, None

    async def leader() -> None:
        try:
            await asyncio.Event().wait()
        finally:  # where LeaderElector.leading() releases the Lease
            released_while_open.append(kube_open)

    async def start(
        _config: Any, _wanted: Any, stack: contextlib.AsyncExitStack, *_args: Any, **_kwargs: Any
    ) -> Any:
        def close() -> None:
            nonlocal kube_open
            kube_open = False

        stack.callback(close)  # as start_workloads closes its KubeClient
        return asyncio.create_task(leader())

    monkeypatch.setattr(app, "slurm_clients", clients)
    monkeypatch.setattr(slurm_bridge.workloads, "start_workloads", start)
    stop = asyncio.Event()
    stop.set()
    await app.run_async(BridgeConfig(metrics_listen_address=""), {"scheduler", "controller"}, stop=stop)
    assert released_while_open == [True]
