"""Informer: list, watch from the list's resourceVersion, relist on 410, back off on errors, resync."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from kube_client import (
    PODS,
    Gone,
    Informer,
    KubeObject,
    KubeTransportError,
    ObjectList,
    ResourceRef,
    ServerError,
    WatchStream,
    field_index,
    label_index,
)


def pod(name: str, rv: int, *, namespace: str = "ns", node: str = "", app: str = "web") -> KubeObject:
    spec = {"nodeName": node} if node else {}
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": str(rv),
            "labels": {"app": app},
        },
        "spec": spec,
    }


class FakeContent:
    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def readany(self) -> bytes:
        return await self.chunks.get()


class FakeWatch:
    """One open watch: the test pushes events (or raw bytes) into it and ends it."""

    def __init__(self, resource_version: str | None) -> None:
        self.resource_version = resource_version
        self.content = FakeContent()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.content.chunks.put_nowait(b"")

    def push(self, event_type: str, obj: dict[str, Any]) -> None:
        self.push_raw(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    def push_raw(self, data: bytes) -> None:
        self.content.chunks.put_nowait(data)

    def end(self) -> None:
        self.content.chunks.put_nowait(b"")


class FakeApi:
    """Serves lists from `objects` and hands out FakeWatch streams the test drives."""

    def __init__(self, *objects: KubeObject, resource_version: int = 100) -> None:
        self.objects = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objects}
        self.resource_version = resource_version
        self.lists = 0
        self.list_errors: list[Exception] = []
        self.watch_errors: list[Exception] = []
        self.watches: asyncio.Queue[FakeWatch] = asyncio.Queue()
        self.opened: list[FakeWatch] = []

    async def list_objects(
        self,
        ref: ResourceRef,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> ObjectList:
        self.lists += 1
        if self.list_errors:
            raise self.list_errors.pop(0)
        items = [json.loads(json.dumps(o)) for o in self.objects.values()]
        return ObjectList(items, str(self.resource_version))

    async def open_watch(
        self,
        ref: ResourceRef,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        assert allow_bookmarks
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        watch = FakeWatch(resource_version)
        self.opened.append(watch)
        self.watches.put_nowait(watch)
        return WatchStream(watch)

    async def next_watch(self) -> FakeWatch:
        async with asyncio.timeout(5):
            return await self.watches.get()


async def eventually(condition: Callable[[], bool], what: str = "condition") -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


def make_informer(api: FakeApi, **kwargs: Any) -> tuple[Informer, list[str]]:
    informer = Informer(
        api, PODS, backoff_initial=0.001, backoff_max=0.01, resync_period=None, rng=random.Random(0), **kwargs
    )
    delivered: list[str] = []
    informer.add_handler(delivered.append)
    return informer, delivered


async def test_initial_list_fills_cache_and_watch_starts_at_its_resource_version() -> None:
    api = FakeApi(pod("a", 1), pod("b", 2), resource_version=100)
    informer, delivered = make_informer(api)
    assert not informer.has_synced
    async with informer:
        async with asyncio.timeout(5):
            await informer.wait_synced()
        watch = await api.next_watch()
        assert watch.resource_version == "100"
        assert sorted(delivered) == ["ns/a", "ns/b"]
        assert informer.get("ns/a") == pod("a", 1)
        assert sorted(informer.keys()) == ["ns/a", "ns/b"]
        assert len(informer) == 2
        assert informer.stats.last_list_items == 2


async def test_watch_events_update_the_cache_and_deliver_keys() -> None:
    api = FakeApi(pod("a", 1))
    informer, delivered = make_informer(api)
    async with informer:
        watch = await api.next_watch()
        delivered.clear()
        watch.push("ADDED", pod("b", 101))
        watch.push("MODIFIED", pod("a", 102, node="n1"))
        watch.push("DELETED", pod("b", 103))
        await eventually(lambda: len(delivered) == 3, "three deliveries")
        assert delivered == ["ns/b", "ns/a", "ns/b"]
        assert informer.get("ns/b") is None
        cached = informer.get("ns/a")
        assert cached is not None
        assert cached["spec"]["nodeName"] == "n1"
        assert cached["kind"] == "Pod"  # filled in for event recording
        assert informer.resource_version == "103"


async def test_bookmarks_move_the_resource_version_silently() -> None:
    api = FakeApi(pod("a", 1))
    informer, delivered = make_informer(api)
    async with informer:
        watch = await api.next_watch()
        delivered.clear()
        watch.push("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "555"}})
        await eventually(lambda: informer.resource_version == "555", "bookmark")
        assert delivered == []
        watch.end()  # the next watch resumes from the bookmark, without a relist
        assert (await api.next_watch()).resource_version == "555"
        assert api.lists == 1


async def test_events_split_across_chunks_and_packed_in_one_chunk() -> None:
    api = FakeApi()
    informer, delivered = make_informer(api)
    async with informer:
        watch = await api.next_watch()
        line_b = json.dumps({"type": "ADDED", "object": pod("b", 2)}).encode() + b"\n"
        line_c = json.dumps({"type": "ADDED", "object": pod("c", 3)}).encode() + b"\n"
        packed = line_b + line_c
        watch.push_raw(packed[:10])
        watch.push_raw(packed[10:-5])
        await asyncio.sleep(0.01)
        assert delivered == ["ns/b"]
        watch.push_raw(packed[-5:])
        await eventually(lambda: delivered == ["ns/b", "ns/c"], "both events")


async def test_expired_watch_relists_and_reports_what_changed_meanwhile() -> None:
    api = FakeApi(pod("a", 1), pod("b", 2))
    informer, delivered = make_informer(api)
    async with informer:
        watch = await api.next_watch()
        delivered.clear()
        # While the watch was behind: b deleted, a unchanged, c created.
        del api.objects["ns/b"]
        api.objects["ns/c"] = pod("c", 150)
        api.resource_version = 200
        watch.push("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
        relisted = await api.next_watch()
        assert relisted.resource_version == "200"
        assert sorted(delivered) == ["ns/b", "ns/c"]  # a did not change: not delivered
        assert informer.get("ns/b") is None
        assert informer.stats.expired == 1
        assert api.lists == 2
        assert watch.closed


async def test_gone_when_opening_the_watch_relists() -> None:
    api = FakeApi(pod("a", 1))
    api.watch_errors.append(Gone(410, "Expired", "too old resource version"))
    informer, _ = make_informer(api)
    async with informer:
        await api.next_watch()
        assert api.lists == 2


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KubeTransportError("connection reset"), id="transport"),
        pytest.param(ServerError(503, "ServiceUnavailable", "apiserver starting"), id="server-error"),
    ],
)
async def test_errors_back_off_and_resume_from_the_last_resource_version(error: Exception) -> None:
    api = FakeApi(pod("a", 1), resource_version=100)
    api.watch_errors.extend([error, error])
    informer, _ = make_informer(api)
    async with informer:
        watch = await api.next_watch()
        assert watch.resource_version == "100"
        assert informer.stats.errors == 2
        assert api.lists == 1  # no relist needed for a transient error


async def test_a_failed_first_list_is_retried_and_sync_waits_for_it() -> None:
    api = FakeApi(pod("a", 1))
    api.list_errors.append(KubeTransportError("refused"))
    informer, _ = make_informer(api)
    async with informer:
        async with asyncio.timeout(5):
            await informer.wait_synced()
        assert api.lists == 2
        assert informer.get("ns/a") is not None


async def test_a_watch_that_ends_normally_is_reopened() -> None:
    api = FakeApi(pod("a", 1))
    informer, _ = make_informer(api)
    async with informer:
        first = await api.next_watch()
        first.push("MODIFIED", pod("a", 120))
        await eventually(lambda: informer.resource_version == "120")
        first.end()
        second = await api.next_watch()
        assert second.resource_version == "120"


async def test_resync_redelivers_every_cached_key() -> None:
    api = FakeApi(pod("a", 1), pod("b", 2))
    informer, delivered = make_informer(api)
    async with informer:
        await api.next_watch()
        delivered.clear()
        informer.resync()
        assert sorted(delivered) == ["ns/a", "ns/b"]


async def test_periodic_resync_runs_on_its_own() -> None:
    api = FakeApi(pod("a", 1))
    informer = Informer(api, PODS, resync_period=0.02, rng=random.Random(0))
    delivered: list[str] = []
    informer.add_handler(delivered.append)
    async with informer:
        await eventually(lambda: delivered.count("ns/a") >= 3, "resyncs")
        assert informer.stats.resyncs >= 2


async def test_predicates_filter_deliveries() -> None:
    def unbound(old: KubeObject | None, new: KubeObject | None) -> bool:
        return new is not None and not new.get("spec", {}).get("nodeName")

    api = FakeApi(pod("a", 1), pod("b", 2, node="n1"))
    informer = Informer(api, PODS, resync_period=None)
    everything: list[str] = []
    unbound_only: list[str] = []
    informer.add_handler(everything.append)
    informer.add_handler(unbound_only.append, predicate=unbound)
    async with informer:
        watch = await api.next_watch()
        watch.push("MODIFIED", pod("a", 3, node="n2"))
        await eventually(lambda: len(everything) == 3)
    assert unbound_only == ["ns/a"]


async def test_a_failing_handler_does_not_stop_the_others() -> None:
    def broken(key: str) -> None:
        raise RuntimeError("bug in handler")

    api = FakeApi(pod("a", 1))
    informer = Informer(api, PODS, resync_period=None)
    delivered: list[str] = []
    informer.add_handler(broken)
    informer.add_handler(delivered.append)
    async with informer:
        await api.next_watch()
        assert delivered == ["ns/a"]


async def test_indexes_follow_updates_and_deletes() -> None:
    api = FakeApi(pod("a", 1, node="n1"), pod("b", 2, node="n1", app="db"), pod("c", 3))
    informer, _ = make_informer(api)
    informer.add_index("node", field_index("spec", "nodeName"))
    informer.add_index("app", label_index("app"))
    async with informer:
        watch = await api.next_watch()
        assert informer.keys_by_index("node", "n1") == {"ns/a", "ns/b"}
        assert informer.keys_by_index("app", "web") == {"ns/a", "ns/c"}
        watch.push("MODIFIED", pod("a", 4, node="n2"))
        watch.push("DELETED", pod("b", 5, node="n1", app="db"))
        await eventually(lambda: informer.resource_version == "5")
        assert informer.keys_by_index("node", "n1") == set()
        assert [p["metadata"]["name"] for p in informer.by_index("node", "n2")] == ["a"]
        assert informer.keys_by_index("app", "db") == set()
        assert sorted(informer.index_values("node")) == ["n2"]


async def test_index_added_after_sync_covers_cached_objects() -> None:
    api = FakeApi(pod("a", 1, node="n1"))
    informer, _ = make_informer(api)
    async with informer:
        await api.next_watch()
        informer.add_index("node", field_index("spec", "nodeName"))
        assert informer.keys_by_index("node", "n1") == {"ns/a"}


async def test_stop_closes_the_watch() -> None:
    api = FakeApi()
    informer, _ = make_informer(api)
    async with informer:
        watch = await api.next_watch()
    assert watch.closed


def test_cluster_scoped_resource_rejects_a_namespace() -> None:
    with pytest.raises(ValueError, match="cluster-scoped"):
        Informer(FakeApi(), ResourceRef("", "v1", "nodes", namespaced=False), namespace="x")
