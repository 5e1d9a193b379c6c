"""KubeClient over real HTTP against a scripted local server: request shapes, idempotent writes, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes.aio.client import ApiClient, Configuration

from kube_client import (
    LEASES,
    NODES,
    PODS,
    Conflict,
    Invalid,
    KubeClient,
    KubeTransportError,
    NotFound,
    PatchType,
    ResourceRef,
    ServerError,
)

Reply = tuple[int, Any]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class FakeApiServer:
    """Answers with `route(request) -> (status, json)`; records requests and client connections."""

    route: Callable[[Seen], Reply] = lambda seen: (404, {})
    seen: list[Seen] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Content-Type", ""),
            json.loads(raw) if raw else None,
        )
        self.seen.append(seen)
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        status, payload = self.route(seen)
        if isinstance(payload, bytes):
            return web.Response(status=status, body=payload)
        return web.json_response(payload, status=status)


def status(code: int, reason: str, message: str = "") -> Reply:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message or reason,
    }


def a_pod(
    name: str = "p",
    *,
    node: str = "",
    uid: str = "u1",
    finalizers: list[str] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "5"}
    if finalizers is not None:
        metadata["finalizers"] = finalizers
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {"conditions": conditions or []},
    }


@pytest_asyncio.fixture(loop_scope="function")  # the server must run on the test's own loop
async def server() -> AsyncIterator[tuple[FakeApiServer, KubeClient]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    configuration = Configuration(host=f"http://127.0.0.1:{test_server.port}")
    client = KubeClient(ApiClient(configuration), field_manager="tests")
    yield fake, client
    await client.close()
    await test_server.close()


# ---- reading -----------------------------------------------------------------------------------------


async def test_get_returns_the_raw_json_dict(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server
    fake.route = lambda seen: (200, a_pod())
    got = await client.get(PODS, "p", namespace="ns")
    assert got == a_pod()
    assert fake.seen[0].path == "/api/v1/namespaces/ns/pods/p"


@pytest.mark.parametrize(
    ("ref", "kwargs", "path"),
    [
        pytest.param(PODS, {}, "/api/v1/pods", id="pods-all-namespaces"),
        pytest.param(PODS, {"namespace": "ns"}, "/api/v1/namespaces/ns/pods", id="pods-one-namespace"),
        pytest.param(NODES, {}, "/api/v1/nodes", id="nodes"),
        pytest.param(
            ResourceRef("example.com", "v1", "widgets"),
            {"namespace": "ns"},
            "/apis/example.com/v1/namespaces/ns/widgets",
            id="custom",
        ),
    ],
)
async def test_list_paths(
    server: tuple[FakeApiServer, KubeClient], ref: ResourceRef, kwargs: dict[str, Any], path: str
) -> None:
    fake, client = server
    fake.route = lambda seen: (
        200,
        {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": []},
    )
    await client.list_objects(ref, **kwargs)
    assert fake.seen[0].path == path


async def test_list_follows_continue_and_fills_kind(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server

    def pages(seen: Seen) -> Reply:
        token = seen.query.get("continue")
        items = [{"metadata": {"name": f"p{token or 0}", "namespace": "ns"}}]
        metadata = {"resourceVersion": "42", "continue": "" if token == "2" else str(int(token or 0) + 1)}
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}

    fake.route = pages
    listing = await client.list_objects(PODS, label_selector="app=web,tier!=db", page_size=1)
    assert [item["metadata"]["name"] for item in listing.items] == ["p0", "p1", "p2"]
    assert all(item["kind"] == "Pod" and item["apiVersion"] == "v1" for item in listing.items)
    assert listing.resource_version == "42"
    assert fake.seen[0].query == {"limit": "1", "labelSelector": "app=web,tier!=db"}


async def test_list_restarts_when_the_continue_token_expires(
    server: tuple[FakeApiServer, KubeClient],
) -> None:
    fake, client = server
    expired_once = False

    def pages(seen: Seen) -> Reply:
        nonlocal expired_once
        if seen.query.get("continue") and not expired_once:
            expired_once = True
            return status(410, "Expired", "continue token expired")
        metadata = {"resourceVersion": "7", "continue": "" if seen.query.get("continue") else "c"}
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": [{"metadata": {}}]}

    fake.route = pages
    listing = await client.list_objects(PODS)
    assert len(listing.items) == 2
    assert len(fake.seen) == 4  # first page, expired continue, first page again, second page


async def test_watch_stream_over_http(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server
    lines = [
        {"type": "ADDED", "object": a_pod("a")},
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "77"}}},
    ]
    fake.route = lambda seen: (200, b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    stream = await client.open_watch(PODS, namespace="ns", resource_version="5", timeout_seconds=60)
    async with stream:
        events = [event async for event in stream]
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]
    assert fake.seen[0].query == {
        "watch": "true",
        "timeoutSeconds": "60",
        "resourceVersion": "5",
        "allowWatchBookmarks": "true",
    }


async def test_watch_refused_raises_typed(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server
    fake.route = lambda seen: status(403, "Forbidden", "cannot watch pods")
    with pytest.raises(Exception, match="Forbidden") as caught:
        await client.open_watch(PODS)
    assert caught.type.__name__ == "Forbidden"


# ---- errors and connections --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        pytest.param(status(404, "NotFound"), NotFound, id="404"),
        pytest.param(status(409, "Conflict"), Conflict, id="409"),
        pytest.param((500, b"oops, not json"), ServerError, id="500-not-json"),
    ],
)
async def test_failures_raise_typed_errors(
    server: tuple[FakeApiServer, KubeClient], reply: Reply, error: type[Exception]
) -> None:
    fake, client = server
    fake.route = lambda seen: reply
    with pytest.raises(error):
        await client.get(PODS, "p", namespace="ns")


async def test_no_server_is_a_transport_error() -> None:
    configuration = Configuration(host="http://127.0.0.1:9")  # discard port: nothing listens
    async with KubeClient(ApiClient(configuration)) as client:
        with pytest.raises(KubeTransportError):
            await client.get(PODS, "p", namespace="ns")


async def test_replies_are_released_so_one_connection_serves_many_calls(
    server: tuple[FakeApiServer, KubeClient],
) -> None:
    fake, client = server
    replies = iter([(201, {"kind": "Status", "status": "Success"})] * 20 + [status(404, "NotFound")] * 20)
    fake.route = lambda seen: next(replies)
    for _ in range(20):
        await client.bind_pod("ns", "p", "n1")
    for _ in range(20):
        assert not await client.delete_pod("ns", "p")
    assert len(fake.peers) == 1


# ---- writes ------------------------------------------------------------------------------------------


async def test_bind_posts_a_binding(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server
    # The server answers a successful bind with a Status, which the generated client mis-parses (#547).
    fake.route = lambda seen: (201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})
    await client.bind_pod("ns", "p", "slurm-bridge-1", uid="u1")
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/namespaces/ns/pods/p/binding")
    assert seen.body == {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "slurm-bridge-1"},
    }
    assert seen.query == {"fieldManager": "tests"}


@pytest.mark.parametrize(
    ("bound_to", "pod_uid", "succeeds"),
    [
        pytest.param("n1", "u1", True, id="already-on-that-node"),
        pytest.param("n2", "u1", False, id="bound-elsewhere"),
        pytest.param("n1", "u2", False, id="same-name-other-pod"),
    ],
)
async def test_bind_conflict_is_success_only_if_already_there(
    server: tuple[FakeApiServer, KubeClient], bound_to: str, pod_uid: str, succeeds: bool
) -> None:
    fake, client = server

    def route(seen: Seen) -> Reply:
        if seen.method == "POST":
            return status(409, "Conflict", f'pod p is already assigned to node "{bound_to}"')
        return 200, a_pod(node=bound_to, uid=pod_uid)

    fake.route = route
    if succeeds:
        await client.bind_pod("ns", "p", "n1", uid="u1")
    else:
        with pytest.raises(Conflict):
            await client.bind_pod("ns", "p", "n1", uid="u1")


@pytest.mark.parametrize(
    ("reply", "uid", "result"),
    [
        pytest.param((200, a_pod()), None, True, id="deleted"),
        pytest.param(status(404, "NotFound"), None, False, id="already-gone"),
        pytest.param(
            status(409, "Conflict", "Precondition failed: UID"), "u1", False, id="replaced-by-namesake"
        ),
    ],
)
async def test_delete_pod(
    server: tuple[FakeApiServer, KubeClient], reply: Reply, uid: str | None, result: bool
) -> None:
    fake, client = server
    fake.route = lambda seen: reply
    assert await client.delete_pod("ns", "p", grace_period_seconds=0, uid=uid) is result
    body = fake.seen[0].body
    assert body["gracePeriodSeconds"] == 0
    assert body.get("preconditions") == ({"uid": uid} if uid else None)


async def test_delete_conflict_without_uid_is_raised(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server
    fake.route = lambda seen: status(409, "Conflict")
    with pytest.raises(Conflict):
        await client.delete_pod("ns", "p")


@pytest.mark.parametrize(
    ("patch_type", "patch", "resource_version", "body"),
    [
        pytest.param(
            PatchType.MERGE,
            {"spec": {"x": 1}},
            "8",
            {"spec": {"x": 1}, "metadata": {"resourceVersion": "8"}},
            id="merge-with-precondition",
        ),
        pytest.param(PatchType.STRATEGIC, {"spec": {"x": 1}}, None, {"spec": {"x": 1}}, id="strategic"),
        pytest.param(
            PatchType.JSON,
            [{"op": "replace", "path": "/spec/x", "value": 1}],
            "8",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "8"},
                {"op": "replace", "path": "/spec/x", "value": 1},
            ],
            id="json-with-precondition",
        ),
    ],
)
async def test_patch_flavours(
    server: tuple[FakeApiServer, KubeClient],
    patch_type: PatchType,
    patch: Any,
    resource_version: str | None,
    body: Any,
) -> None:
    fake, client = server
    fake.route = lambda seen: (200, {})
    await client.patch(
        ResourceRef("example.com", "v1", "widgets"),
        "w",
        patch,
        namespace="ns",
        subresource="status",
        patch_type=patch_type,
        resource_version=resource_version,
    )
    (seen,) = fake.seen
    assert seen.path == "/apis/example.com/v1/namespaces/ns/widgets/w/status"
    assert seen.content_type == patch_type.value
    assert seen.body == body


@pytest.mark.parametrize(
    ("existing", "condition", "writes"),
    [
        pytest.param([], ("True", "Bound", "job 7"), True, id="new-condition"),
        pytest.param(
            [{"type": "SlurmJob", "status": "True", "reason": "Bound", "message": "job 7"}],
            ("True", "Bound", "job 7"),
            False,
            id="unchanged-no-write",
        ),
        pytest.param(
            [
                {
                    "type": "SlurmJob",
                    "status": "True",
                    "reason": "Bound",
                    "message": "job 7",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            ("True", "Bound", "job 8"),
            True,
            id="message-changed-keeps-transition-time",
        ),
        pytest.param(
            [
                {
                    "type": "SlurmJob",
                    "status": "False",
                    "reason": "Pending",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            ("True", "Bound", "job 7"),
            True,
            id="status-changed-new-transition-time",
        ),
    ],
)
async def test_set_pod_condition(
    server: tuple[FakeApiServer, KubeClient],
    existing: list[dict[str, Any]],
    condition: tuple[str, str, str],
    writes: bool,
) -> None:
    fake, client = server
    fake.route = lambda seen: (200, a_pod())
    current = a_pod(conditions=existing)
    status_, reason, message = condition
    answer = await client.set_pod_condition(
        "ns", "p", condition_type="SlurmJob", status=status_, reason=reason, message=message, current=current
    )
    assert (answer is not None) is writes
    assert len(fake.seen) == int(writes)  # `current` spared the GET
    if writes:
        (seen,) = fake.seen
        assert seen.path == "/api/v1/namespaces/ns/pods/p/status"
        assert seen.content_type == PatchType.STRATEGIC.value
        (written,) = seen.body["status"]["conditions"]
        assert (written["status"], written["reason"], written["message"]) == condition
        old_time = existing[0].get("lastTransitionTime") if existing else None
        same_status = bool(existing) and existing[0]["status"] == status_
        assert (written["lastTransitionTime"] == old_time) is (same_status and old_time is not None)


@pytest.mark.parametrize(
    ("finalizers", "adding", "ops"),
    [
        pytest.param(
            None,
            True,
            [
                {"op": "test", "path": "/metadata/finalizers", "value": None},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x/f"]},
            ],
            id="add-first",
        ),
        pytest.param(
            ["a/b"],
            True,
            [
                {"op": "test", "path": "/metadata/finalizers", "value": ["a/b"]},
                {"op": "add", "path": "/metadata/finalizers", "value": ["a/b", "x/f"]},
            ],
            id="add-second",
        ),
        pytest.param(
            ["a/b", "x/f"],
            False,
            [
                {"op": "test", "path": "/metadata/finalizers", "value": ["a/b", "x/f"]},
                {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]},
            ],
            id="remove",
        ),
        pytest.param(["x/f"], True, None, id="add-already-there"),
        pytest.param(None, False, None, id="remove-absent"),
    ],
)
async def test_finalizer_patches(
    server: tuple[FakeApiServer, KubeClient], finalizers: list[str] | None, adding: bool, ops: Any
) -> None:
    fake, client = server
    fake.route = lambda seen: (200, a_pod(finalizers=finalizers))
    edit = client.add_finalizer if adding else client.remove_finalizer
    changed = await edit(PODS, "p", "x/f", namespace="ns")
    assert changed is (ops is not None)
    patches = [seen for seen in fake.seen if seen.method == "PATCH"]
    if ops is None:
        assert patches == []
    else:
        (patch,) = patches
        assert patch.content_type == PatchType.JSON.value
        assert patch.body == ops


async def test_finalizer_retries_when_someone_else_changed_the_list(
    server: tuple[FakeApiServer, KubeClient],
) -> None:
    fake, client = server
    state = {"finalizers": ["a/b"]}

    def route(seen: Seen) -> Reply:
        if seen.method == "GET":
            return 200, a_pod(finalizers=state["finalizers"])
        if seen.body[0]["value"] != state["finalizers"]:
            return status(422, "Invalid", "the server rejected our request: test operation failed")
        state["finalizers"] = seen.body[1]["value"]
        return 200, a_pod(finalizers=state["finalizers"])

    fake.route = route
    stale = a_pod(finalizers=[])  # an informer copy from before "a/b" was added
    assert await client.add_finalizer(PODS, "p", "x/f", namespace="ns", current=stale)
    assert state["finalizers"] == ["a/b", "x/f"]


async def test_finalizer_rejection_for_another_reason_is_raised(
    server: tuple[FakeApiServer, KubeClient],
) -> None:
    fake, client = server

    def route(seen: Seen) -> Reply:
        if seen.method == "GET":
            return 200, a_pod(finalizers=["a/b"])
        return status(422, "Invalid", "no new finalizers can be added if the object is being deleted")

    fake.route = route
    with pytest.raises(Invalid):
        await client.add_finalizer(PODS, "p", "x/f", namespace="ns")
    assert sum(seen.method == "PATCH" for seen in fake.seen) == 1


async def test_remove_finalizer_of_a_gone_object_is_no_change(
    server: tuple[FakeApiServer, KubeClient],
) -> None:
    fake, client = server
    fake.route = lambda seen: status(404, "NotFound")
    assert not await client.remove_finalizer(LEASES, "l", "x/f", namespace="ns")


async def test_concurrent_calls_share_the_pool(server: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = server
    fake.route = lambda seen: (200, a_pod())
    await asyncio.gather(*(client.get(PODS, "p", namespace="ns") for _ in range(50)))
    assert client.request_counts["GET"] == 50


def test_resource_paths_refuse_wrong_scope() -> None:
    with pytest.raises(ValueError, match="cluster-scoped"):
        NODES.path(namespace="ns")
    with pytest.raises(ValueError, match="namespaced"):
        PODS.path(name="p")
    assert PODS.path(namespace="a b", name="p/q") == "/api/v1/namespaces/a%20b/pods/p%2Fq"
