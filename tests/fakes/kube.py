"""In-memory stand-ins for the Kubernetes side of controller/ports.py: a cache, a writer, an event sink.

The writer applies nothing: it records each call as a tuple, so a test states what was written, in order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kube_client import AlreadyExists, KubeObject, NotFound, PatchType, ResourceRef

IndexFunc = Callable[[KubeObject], list[str]]
Call = tuple[Any, ...]


def key_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta['name']}".lstrip("/")


class FakeCache:
    """An informer's read side over a dict (key -> object), with named indexes."""

    def __init__(
        self, objects: Iterable[KubeObject] = (), indexes: Mapping[str, IndexFunc] | None = None
    ) -> None:
        self.cache: dict[str, KubeObject] = {key_of(o): o for o in objects}
        self.indexes = dict(indexes or {})
        self.synced = True

    @property
    def has_synced(self) -> bool:
        return self.synced

    def get(self, key: str) -> KubeObject | None:
        return self.cache.get(key)

    def objects(self) -> list[KubeObject]:
        return list(self.cache.values())

    def by_index(self, index_name: str, value: str) -> list[KubeObject]:
        index = self.indexes[index_name]
        return [o for o in self.cache.values() if value in index(o)]

    def put(self, obj: KubeObject) -> None:
        self.cache[key_of(obj)] = obj


class FakeKube:
    """Records writes as (verb, ...) tuples. `gone` names ("ns/name") answer NotFound; `existing` names
    answer AlreadyExists on create; `objects` answer get."""

    def __init__(self, objects: Iterable[KubeObject] = ()) -> None:
        self.calls: list[Call] = []
        self.gone: set[str] = set()
        self.existing: set[str] = set()
        self.objects = {key_of(o): o for o in objects}

    def of(self, verb: str) -> list[Call]:
        return [c for c in self.calls if c[0] == verb]

    def _check(self, namespace: str | None, name: str) -> None:
        if f"{namespace or ''}/{name}".lstrip("/") in self.gone:
            raise NotFound(404, "NotFound", name)

    async def get(self, ref: ResourceRef, name: str, *, namespace: str | None = None) -> KubeObject:
        found = self.objects.get(f"{namespace or ''}/{name}".lstrip("/"))
        if found is None:
            raise NotFound(404, "NotFound", name)
        return found

    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
    ) -> KubeObject:
        self._check(namespace, name)
        self.calls.append(("patch", ref.plural, name, subresource, copy.deepcopy(patch)))
        return {}

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject:
        name = body["metadata"]["name"]
        if name in self.existing:
            raise AlreadyExists(409, "AlreadyExists", name)
        self.calls.append(("create", ref.plural, name))
        return dict(body)

    async def delete(
        self, ref: ResourceRef, name: str, *, namespace: str | None = None, uid: str | None = None
    ) -> KubeObject | None:
        self._check(namespace, name)
        self.calls.append(("delete", ref.plural, name, uid))
        return None

    async def bind_pod(
        self,
        namespace: str,
        name: str,
        node_name: str,
        *,
        uid: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        self._check(namespace, name)
        self.calls.append(("bind", name, node_name, uid, dict(annotations or {})))

    async def set_pod_condition(
        self,
        namespace: str,
        name: str,
        *,
        condition_type: str,
        status: str,
        reason: str = "",
        message: str = "",
        current: Mapping[str, Any] | None = None,
    ) -> KubeObject | None:
        self._check(namespace, name)
        self.calls.append(("condition", name, condition_type, status, reason, message))
        return {}

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self._check(namespace, name)
        self.calls.append(("delete-pod", name, uid))
        return True

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        self.calls.append((method, path))
        return {}

    async def remove_finalizer(
        self,
        ref: ResourceRef,
        name: str,
        finalizer: str,
        *,
        namespace: str | None = None,
        current: Mapping[str, Any] | None = None,
    ) -> bool:
        self._check(namespace, name)
        self.calls.append(("unfinalize", name, finalizer))
        return True


class FakeEvents:
    def __init__(self) -> None:
        self.said: list[tuple[str, str, str, str]] = []  # (type, involved kind/name, reason, message)

    async def normal(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None:
        self.said.append(("Normal", _who(involved), reason, message))
        return None

    async def warning(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None:
        self.said.append(("Warning", _who(involved), reason, message))
        return None

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.said]


def _who(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name')}"
