"""EventRecorder: first occurrence creates an Event, repeats bump its count instead of flooding."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from kube_client import (
    EVENTS,
    EventRecorder,
    KubeObject,
    NotFound,
    PatchType,
    ResourceRef,
    ServerError,
    involved_object_reference,
)

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-0", "namespace": "team-a", "uid": "uid-1", "resourceVersion": "17"},
}
NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "slurm-bridge-0", "uid": "uid-n"},
}


class FakeEventSink:
    """Stores Events in memory; can be told to fail or to forget events (expiry)."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], KubeObject] = {}
        self.creates = 0
        self.patches = 0
        self.fail_with: Exception | None = None

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject:
        assert ref == EVENTS
        await asyncio.sleep(0)  # let concurrent callers interleave
        if self.fail_with is not None:
            raise self.fail_with
        self.creates += 1
        stored = copy.deepcopy(dict(body))
        assert namespace is not None
        assert namespace == stored["metadata"]["namespace"]
        self.events[(namespace, stored["metadata"]["name"])] = stored
        return stored

    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        resource_version: str | None = None,
    ) -> KubeObject:
        await asyncio.sleep(0)
        assert namespace is not None
        if self.fail_with is not None:
            raise self.fail_with
        stored = self.events.get((namespace, name))
        if stored is None:
            raise NotFound(404, "NotFound", f'events "{name}" not found')
        self.patches += 1
        stored.update(patch)
        return copy.deepcopy(stored)


async def test_first_record_creates_a_complete_event() -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "slurm-bridge-scheduler", reporting_instance="bridge-0")
    event = await recorder.warning(POD, "SlurmPending", "Slurm job 12 waits: Resources")
    assert event is not None
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web-0",
        "namespace": "team-a",
        "uid": "uid-1",
        "resourceVersion": "17",
    }
    assert event["type"] == "Warning"
    assert event["reason"] == "SlurmPending"
    assert event["count"] == 1
    assert event["metadata"]["namespace"] == "team-a"
    assert event["metadata"]["name"].startswith("web-0.")
    assert event["source"] == {"component": "slurm-bridge-scheduler"}
    assert event["reportingComponent"] == "slurm-bridge-scheduler"
    assert event["reportingInstance"] == "bridge-0"
    assert event["firstTimestamp"] == event["lastTimestamp"]


async def test_repeats_bump_one_event() -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "c")
    for _ in range(5):
        event = await recorder.normal(POD, "Bound", "bound to slurm-bridge-0")
    assert sink.creates == 1
    assert sink.patches == 4
    assert event is not None
    assert event["count"] == 5
    assert len(sink.events) == 1


@pytest.mark.parametrize(
    ("second", "new_event"),
    [
        pytest.param(("Normal", "Bound", "bound to slurm-bridge-0"), False, id="identical"),
        pytest.param(("Normal", "Bound", "bound to slurm-bridge-1"), True, id="other-message"),
        pytest.param(("Normal", "Placed", "bound to slurm-bridge-0"), True, id="other-reason"),
        pytest.param(("Warning", "Bound", "bound to slurm-bridge-0"), True, id="other-type"),
    ],
)
async def test_what_counts_as_a_repeat(second: tuple[str, str, str], new_event: bool) -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "c")
    await recorder.record(POD, "Normal", "Bound", "bound to slurm-bridge-0")
    await recorder.record(POD, *second)
    assert sink.creates == (2 if new_event else 1)


async def test_same_event_for_another_object_is_separate() -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "c")
    other = copy.deepcopy(POD)
    other["metadata"].update(name="web-1", uid="uid-2")
    await recorder.normal(POD, "Bound", "ok")
    await recorder.normal(other, "Bound", "ok")
    assert sink.creates == 2


async def test_concurrent_identical_events_share_one_event() -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "c")
    await asyncio.gather(*(recorder.normal(POD, "Bound", "ok") for _ in range(10)))
    assert sink.creates == 1
    (stored,) = sink.events.values()
    assert stored["count"] == 10
    assert recorder._locks == {}  # no lock left behind


async def test_an_expired_event_starts_a_new_series() -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "c")
    await recorder.normal(POD, "Bound", "ok")
    sink.events.clear()  # the API server's event TTL ran out
    event = await recorder.normal(POD, "Bound", "ok")
    assert sink.creates == 2
    assert event is not None
    assert event["count"] == 1


async def test_a_failed_write_is_logged_not_raised() -> None:
    sink = FakeEventSink()
    sink.fail_with = ServerError(500, "InternalError", "etcd timeout")
    recorder = EventRecorder(sink, "c")
    assert await recorder.normal(POD, "Bound", "ok") is None
    assert recorder.writes_failed == 1
    sink.fail_with = None
    event = await recorder.normal(POD, "Bound", "ok")
    assert event is not None
    assert event["count"] == 1


async def test_cluster_scoped_objects_get_events_in_default() -> None:
    sink = FakeEventSink()
    event = await EventRecorder(sink, "c").warning(NODE, "NodeDrained", "drained in Slurm")
    assert event is not None
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]


async def test_cache_is_bounded() -> None:
    sink = FakeEventSink()
    recorder = EventRecorder(sink, "c", cache_size=2)
    for message in ("a", "b", "c"):
        await recorder.normal(POD, "R", message)
    await recorder.normal(POD, "R", "a")  # evicted: a new Event rather than a bump
    assert sink.creates == 4


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"kind": "Pod", "metadata": {"name": "x"}}, id="no-apiVersion"),
        pytest.param({"apiVersion": "v1", "metadata": {"name": "x"}}, id="no-kind"),
        pytest.param({"apiVersion": "v1", "kind": "Pod", "metadata": {}}, id="no-name"),
    ],
)
def test_involved_object_needs_identity(obj: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="involved object"):
        involved_object_reference(obj)
