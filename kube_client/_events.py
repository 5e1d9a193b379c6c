"""Kubernetes Events for users to read in `kubectl describe`, with repeats folded into one Event's count.

core/v1 Events are written (what `kubectl describe` shows, with "(x5 over 2m)"): the first occurrence
creates one, later identical ones (same object, type, reason, message) bump `count` and
`lastTimestamp` of that same Event instead of flooding the namespace.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._client import PatchType, utc_now_rfc3339
from ._errors import KubeError, NotFound
from ._resources import EVENTS, KubeObject, ResourceRef

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventSink(Protocol):
    """The writes an EventRecorder needs (KubeClient fits; tests pass a fake)."""

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject: ...

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
    ) -> KubeObject: ...


@dataclass
class _Series:
    namespace: str
    event_name: str
    count: int
    first_timestamp: str


_SeriesKey = tuple[str, str, str, str, str]


class EventRecorder:
    """Record Events about objects; best effort: a failed write is logged, never raised.

    `reporting_component` names the writer (e.g. "slurm-bridge-scheduler"); `reporting_instance` tells
    replicas apart (e.g. the pod name).
    """

    def __init__(
        self,
        sink: EventSink,
        reporting_component: str,
        *,
        reporting_instance: str = "",
        cache_size: int = 4096,
    ) -> None:
        self._sink = sink
        self.reporting_component = reporting_component
        self.reporting_instance = reporting_instance
        self._cache_size = cache_size
        self._series: OrderedDict[_SeriesKey, _Series] = OrderedDict()
        self._locks: dict[_SeriesKey, tuple[asyncio.Lock, int]] = {}
        self.writes_failed = 0

    async def normal(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None:
        return await self.record(involved, NORMAL, reason, message)

    async def warning(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None:
        return await self.record(involved, WARNING, reason, message)

    async def record(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> KubeObject | None:
        """Create or bump the Event; returns what the server stored, or None if the write failed.

        `involved` is the object the Event is about, as read from the API (apiVersion, kind and
        metadata name/namespace/uid are used).
        """
        reference = involved_object_reference(involved)
        namespace = reference.get("namespace") or "default"  # cluster-scoped objects: "default", as client-go
        series_key: _SeriesKey = (
            reference.get("uid") or f"{reference['kind']}/{namespace}/{reference['name']}",
            event_type,
            reason,
            message,
            namespace,
        )
        # Identical events in flight at once are written one after the other, so they share one Event.
        lock, users = self._locks.get(series_key, (asyncio.Lock(), 0))
        self._locks[series_key] = (lock, users + 1)
        try:
            async with lock:
                return await self._write(series_key, reference, namespace, event_type, reason, message)
        except KubeError as exc:
            self.writes_failed += 1
            log.warning(
                "event %s %s on %s/%s not written: %s", event_type, reason, namespace, reference["name"], exc
            )
            return None
        finally:
            lock, users = self._locks[series_key]
            if users == 1:
                del self._locks[series_key]
            else:
                self._locks[series_key] = (lock, users - 1)

    async def _write(
        self,
        series_key: _SeriesKey,
        reference: dict[str, Any],
        namespace: str,
        event_type: str,
        reason: str,
        message: str,
    ) -> KubeObject:
        now = utc_now_rfc3339()
        series = self._series.get(series_key)
        if series is not None:
            self._series.move_to_end(series_key)
            try:
                stored = await self._sink.patch(
                    EVENTS,
                    series.event_name,
                    {"count": series.count + 1, "lastTimestamp": now},
                    namespace=series.namespace,
                )
                series.count += 1
                return stored
            except NotFound:
                pass  # expired (events live ~1 h) or deleted: start a new series
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{reference['name']}.{_unique_suffix()}", "namespace": namespace},
            "involvedObject": reference,
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.reporting_component},
            "reportingComponent": self.reporting_component,
            "reportingInstance": self.reporting_instance,
        }
        stored = await self._sink.create(EVENTS, body, namespace=namespace)
        self._series[series_key] = _Series(namespace, stored["metadata"]["name"], 1, now)
        self._series.move_to_end(series_key)
        while len(self._series) > self._cache_size:
            self._series.popitem(last=False)
        return stored


def involved_object_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An ObjectReference to `obj` (needs apiVersion and kind, which informer/list objects carry)."""
    metadata = obj.get("metadata") or {}
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    name = metadata.get("name")
    if not (api_version and kind and name):
        raise ValueError("an involved object needs apiVersion, kind and metadata.name")
    reference: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "name": name}
    for field, key in (("namespace", "namespace"), ("uid", "uid"), ("resourceVersion", "resourceVersion")):
        if metadata.get(key):
            reference[field] = metadata[key]
    return reference


def _unique_suffix() -> str:
    # client-go names events "<object>.<hex nanoseconds>"; a random tail keeps replicas from colliding.
    return f"{time.time_ns():x}{secrets.token_hex(2)}"
