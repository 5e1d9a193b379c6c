"""The one wrapper around `kubernetes.aio`: config loading, one shared ApiClient, raw-JSON requests.

Replies are decoded straight from JSON into dicts: building V1 models costs 15-20 % of a call and the
generated methods mis-parse some replies (the Status a binding returns, kubernetes-client/python#547).
Every reply body is read to the end and released, so aiohttp can reuse the keep-alive connection.
"""

from __future__ import annotations

import collections
import enum
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from kubernetes.aio.client import ApiClient, Configuration
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import kube_config
from kubernetes.aio.config.incluster_config import load_incluster_config

from ._conditions import upsert_condition
from ._errors import (
    Conflict,
    Gone,
    Invalid,
    KubeTransportError,
    NotFound,
    error_from_response,
    translate_api_exception,
)
from ._resources import PODS, KubeObject, ResourceRef
from ._watch import WatchStream

DEFAULT_FIELD_MANAGER = "slurm-bridge"
_FINALIZER_ATTEMPTS = 5


class PatchType(enum.StrEnum):
    """Content types of the three PATCH flavours the API server understands (apply is not used)."""

    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    JSON = "application/json-patch+json"


class ObjectList:
    """One consistent list: its items and the resourceVersion to start a watch from."""

    __slots__ = ("items", "resource_version")

    def __init__(self, items: list[KubeObject], resource_version: str) -> None:
        self.items = items
        self.resource_version = resource_version


def utc_now_rfc3339(*, micro: bool = False) -> str:
    """`metav1.Time` (seconds) or `metav1.MicroTime` text for now."""
    now = datetime.now(UTC)
    if micro:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeClient:
    """Async Kubernetes API access speaking raw JSON dicts; share one per process, close it at exit."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        field_manager: str = DEFAULT_FIELD_MANAGER,
        request_timeout: float = 30.0,
    ) -> None:
        self._api = api_client
        self.field_manager = field_manager
        self._request_timeout = aiohttp.ClientTimeout(total=request_timeout)
        # Requests sent, by HTTP method: lets tests and benchmarks check cost per cycle.
        self.request_counts: collections.Counter[str] = collections.Counter()

    # ---- construction / teardown -------------------------------------------------------------------

    @classmethod
    async def from_kubeconfig(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        pool_size: int = 100,
        field_manager: str = DEFAULT_FIELD_MANAGER,
        request_timeout: float = 30.0,
    ) -> Self:
        """Client for the cluster a kubeconfig file points at (default: ~/.kube/config)."""
        configuration = Configuration()
        await kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.fspath(path) if path is not None else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        configuration.connection_pool_maxsize = pool_size
        return cls(ApiClient(configuration), field_manager=field_manager, request_timeout=request_timeout)

    @classmethod
    def from_in_cluster(
        cls,
        *,
        pool_size: int = 100,
        field_manager: str = DEFAULT_FIELD_MANAGER,
        request_timeout: float = 30.0,
    ) -> Self:
        """Client using the pod's service account (token re-read as it rotates)."""
        configuration = Configuration()
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool_size
        return cls(ApiClient(configuration), field_manager=field_manager, request_timeout=request_timeout)

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | os.PathLike[str] | None = None,
        *,
        field_manager: str = DEFAULT_FIELD_MANAGER,
        pool_size: int = 100,
    ) -> Self:
        """A given kubeconfig, else $KUBECONFIG, else in-cluster when in a pod, else ~/.kube/config."""
        if kubeconfig is None:
            from_env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            if from_env:
                kubeconfig = Path(from_env)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                return cls.from_in_cluster(field_manager=field_manager, pool_size=pool_size)
        return await cls.from_kubeconfig(kubeconfig, field_manager=field_manager, pool_size=pool_size)

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- transport -----------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """Send one request; the caller owns (reads and releases) the returned RESTResponse."""
        self.request_counts[method] += 1
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            serialized = await self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            http_method, url, header_params, serialized_body, _ = serialized
            return await self._api.call_api(
                http_method,
                url,
                header_params=header_params,
                body=serialized_body,
                _request_timeout=client_timeout or self._request_timeout,
            )
        except ApiException as exc:
            raise translate_api_exception(exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeTransportError(f"{method} {path}: {exc!r}") from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> KubeObject:
        """One request/reply round trip; raises a `KubeApiError` subclass on a non-2xx answer."""
        response = await self._send(method, path, query=query, body=body, content_type=content_type)
        try:
            data: bytes = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeTransportError(f"{method} {path}: reading the reply: {exc!r}") from exc
        finally:
            response.response.release()
        if not 200 <= response.status < 300:
            raise error_from_response(
                response.status,
                data,
                http_reason=response.reason,
                retry_after_header=response.headers.get("Retry-After"),
            )
        if not data:
            return {}
        decoded = json.loads(data)
        return decoded if isinstance(decoded, dict) else {"items": decoded}

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
        """Start a watch; iterate the stream for raw events `{"type": ..., "object": {...}}`, then close it.

        The server ends the stream after `timeout_seconds`; a stream silent for longer than that (plus a
        margin) is treated as dead.
        """
        query = [("watch", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        query.extend(_selector_query(label_selector, field_selector))
        path = ref.path(namespace=namespace if ref.namespaced else None)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        response = await self._send("GET", path, query=query, client_timeout=timeout)
        if response.status != 200:
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                data = b""
            finally:
                response.response.release()
            raise error_from_response(response.status, data, http_reason=response.reason)
        return WatchStream(response.response)

    # ---- generic verbs -------------------------------------------------------------------------------

    async def get(
        self, ref: ResourceRef, name: str, *, namespace: str | None = None, subresource: str | None = None
    ) -> KubeObject:
        return await self.request("GET", ref.path(namespace=namespace, name=name, subresource=subresource))

    async def list_objects(
        self,
        ref: ResourceRef,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> ObjectList:
        """A consistent list (paged with `continue`); items get apiVersion/kind filled in."""
        path = ref.path(namespace=namespace if ref.namespaced else None)
        base_query = [("limit", str(page_size)), *_selector_query(label_selector, field_selector)]
        attempts = 3
        for attempt in range(attempts):
            items: list[KubeObject] = []
            continue_token = ""
            while True:
                query = [*base_query, ("continue", continue_token)] if continue_token else base_query
                try:
                    page = await self.request("GET", path, query=query)
                except (Gone, Invalid):
                    # An expired continue token (410; 422 on old servers): start the list over.
                    if not continue_token or attempt == attempts - 1:
                        raise
                    break
                api_version = page.get("apiVersion") or ref.api_version
                kind = str(page.get("kind") or "").removesuffix("List") or ref.kind
                for item in page.get("items") or []:
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                    items.append(item)
                metadata = page.get("metadata") or {}
                continue_token = metadata.get("continue") or ""
                if not continue_token:
                    return ObjectList(items, str(metadata.get("resourceVersion") or ""))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject:
        path = ref.path(namespace=namespace if ref.namespaced else None)
        return await self.request("POST", path, query=self._write_query(), body=dict(body))

    async def replace(
        self,
        ref: ResourceRef,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> KubeObject:
        """PUT; the body's metadata.resourceVersion (if any) makes it a compare-and-swap."""
        path = ref.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request("PUT", path, query=self._write_query(), body=dict(body))

    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        resource_version: str | None = None,
    ) -> KubeObject:
        """PATCH; with `resource_version` the write fails with `Conflict` if the object changed since.

        `patch` is a document for MERGE/STRATEGIC and a list of operations for JSON.
        """
        body: Any
        if patch_type is PatchType.JSON:
            if not isinstance(patch, Sequence):
                raise TypeError("a JSON patch is a list of operations")
            body = [dict(op) for op in patch]
            if resource_version is not None:
                body.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
        else:
            if not isinstance(patch, Mapping):
                raise TypeError("a merge patch is a document (mapping)")
            body = dict(patch)
            if resource_version is not None:
                body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        path = ref.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request(
            "PATCH", path, query=self._write_query(), body=body, content_type=patch_type.value
        )

    async def delete(
        self,
        ref: ResourceRef,
        name: str,
        *,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
        propagation_policy: str | None = None,
    ) -> KubeObject | None:
        """Delete; returns the server's answer, or None when the object was already gone (404).

        With `uid`, only that incarnation is deleted: a same-named successor answers `Conflict`.
        """
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        try:
            return await self.request("DELETE", ref.path(namespace=namespace, name=name), body=options)
        except NotFound:
            return None

    def _write_query(self) -> list[tuple[str, str]]:
        return [("fieldManager", self.field_manager)] if self.field_manager else []

    # ---- pods ----------------------------------------------------------------------------------------

    async def bind_pod(
        self,
        namespace: str,
        name: str,
        node_name: str,
        *,
        uid: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Bind a pod to a node (pods/binding). Idempotent: a pod already on `node_name` is success.

        With `uid` the bind applies only to that incarnation of the pod (the server checks it).
        `annotations` on the Binding are copied onto the pod by the API server, in the same write.
        Raises `Conflict` if the pod is already bound elsewhere, `NotFound` if it is gone.
        """
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if uid is not None:
            metadata["uid"] = uid
        if annotations:
            metadata["annotations"] = dict(annotations)
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        path = PODS.path(namespace=namespace, name=name, subresource="binding")
        try:
            await self.request("POST", path, query=self._write_query(), body=binding)
        except Conflict:
            # 409 is also the answer for "already assigned": look, don't parse the message.
            pod = await self.get(PODS, name, namespace=namespace)
            if (pod.get("spec") or {}).get("nodeName") == node_name and (
                uid is None or pod["metadata"].get("uid") == uid
            ):
                return
            raise

    async def delete_pod(
        self, namespace: str, name: str, *, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> bool:
        """Delete a pod; False when it (that `uid`, if given) was already gone."""
        try:
            answer = await self.delete(
                PODS, name, namespace=namespace, grace_period_seconds=grace_period_seconds, uid=uid
            )
        except Conflict:
            if uid is None:
                raise
            return False  # the name now belongs to another pod: ours is gone
        return answer is not None

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
        """Upsert one entry of status.conditions (keyed by type); None when it already said exactly that.

        `current` (e.g. the informer's copy) spares a GET; lastTransitionTime moves only when status does.
        The strategic-merge patch touches only this condition, so concurrent writers of others are safe.
        """
        pod = current if current is not None else await self.get(PODS, name, namespace=namespace)
        upsert = upsert_condition(
            (pod.get("status") or {}).get("conditions"),
            condition_type,
            status,
            reason,
            message,
            now=utc_now_rfc3339(),
        )
        if not upsert.changed:
            return None
        condition = upsert.condition
        return await self.patch(
            PODS,
            name,
            {"status": {"conditions": [condition]}},
            namespace=namespace,
            subresource="status",
            patch_type=PatchType.STRATEGIC,
        )

    # ---- finalizers ----------------------------------------------------------------------------------

    async def add_finalizer(
        self,
        ref: ResourceRef,
        name: str,
        finalizer: str,
        *,
        namespace: str | None = None,
        current: Mapping[str, Any] | None = None,
    ) -> bool:
        """Add `finalizer` unless present; True if this call added it."""
        return await self._edit_finalizers(ref, name, finalizer, namespace, current, present=True)

    async def remove_finalizer(
        self,
        ref: ResourceRef,
        name: str,
        finalizer: str,
        *,
        namespace: str | None = None,
        current: Mapping[str, Any] | None = None,
    ) -> bool:
        """Remove `finalizer` if present; True if this call removed it. A gone object counts as removed."""
        try:
            return await self._edit_finalizers(ref, name, finalizer, namespace, current, present=False)
        except NotFound:
            return False

    async def _edit_finalizers(
        self,
        ref: ResourceRef,
        name: str,
        finalizer: str,
        namespace: str | None,
        current: Mapping[str, Any] | None,
        *,
        present: bool,
    ) -> bool:
        # JSON patch guarded by a `test` of the list we read: unlike a resourceVersion precondition it
        # does not fail when only status changed (pods change status often).
        observed = current
        for _ in range(_FINALIZER_ATTEMPTS):
            if observed is None:
                observed = await self.get(ref, name, namespace=namespace)
            raw = (observed.get("metadata") or {}).get("finalizers")
            finalizers: list[str] = list(raw or [])
            if (finalizer in finalizers) == present:
                return False
            wanted = [*finalizers, finalizer] if present else [f for f in finalizers if f != finalizer]
            ops: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/finalizers", "value": raw},
                {"op": "add", "path": "/metadata/finalizers", "value": wanted},
            ]
            try:
                await self.patch(ref, name, ops, namespace=namespace, patch_type=PatchType.JSON)
                return True
            except (Invalid, Conflict) as exc:
                # The test failed if someone else changed the list; any other rejection stands.
                reread = await self.get(ref, name, namespace=namespace)
                if (reread.get("metadata") or {}).get("finalizers") == raw:
                    raise exc
                observed = reread
        raise Conflict(409, "Conflict", f"finalizers of {name} kept changing; gave up")


def _selector_query(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query
