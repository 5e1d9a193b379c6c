"""How the bridge removes a pod whose Slurm job ended under it: evicted, or deleted.

Slurm preempting a job (PreemptType=preempt/qos, PreemptMode=CANCEL or REQUEUE) is a disruption a
Kubernetes user knows as an eviction: the pod first gets the DisruptionTarget condition (the
executors set it for every removal), then it goes through the Eviction API (`pods/eviction`), so
admission, audit and anything that watches evictions see what happened. Every other end (the job
completed, failed, was cancelled, vanished, ...) keeps the plain delete.

A PodDisruptionBudget that refuses the eviction (HTTP 429) cannot keep the pod: Slurm has already
taken the allocation back. The bridge then deletes the pod and says so in its log.

The planners decide which ends are evictions (controller/plan.py EVICTION_REASONS, `DeletePod.evict`,
`DeleteMembers.evict`); this module builds the Eviction (`eviction_body`) and sends it (`evict_pod`).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from kube_client import PODS, Conflict, NotFound, TooManyRequests

log = logging.getLogger(__name__)


def eviction_body(namespace: str, name: str, uid: str | None) -> dict[str, Any]:
    """A policy/v1 Eviction for that pod; with `uid`, only that incarnation of it is evicted."""
    body: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    }
    if uid:
        body["deleteOptions"] = {"preconditions": {"uid": uid}}
    return body


class PodRemover(Protocol):
    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> bool: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any: ...


async def evict_pod(kube: PodRemover, namespace: str, name: str, uid: str | None, reason: str) -> bool:
    """Evict the pod (that `uid` only); False when it was already gone. A PodDisruptionBudget's refusal
    falls back to a delete: Slurm already took the allocation back."""
    path = PODS.path(namespace=namespace, name=name, subresource="eviction")
    try:
        await kube.request("POST", path, body=eviction_body(namespace, name, uid))
    except NotFound:
        return False
    except Conflict:
        return False  # the uid precondition failed: the name belongs to another pod now
    except TooManyRequests:
        log.warning(
            "%s/%s: a PodDisruptionBudget refuses the eviction, but Slurm already took the allocation "
            "back (%s): deleting the pod",
            namespace,
            name,
            reason,
        )
        return await kube.delete_pod(namespace, name, uid=uid)
    log.info("%s/%s: evicted (%s)", namespace, name, reason)
    return True
