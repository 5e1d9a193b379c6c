"""Admission decisions: an AdmissionReview (admission.k8s.io/v1, parsed JSON) in, its response out. Pure.

- `mutate_pod`: in a managed namespace (one of the bridge's `namespaces`, or one that opted in by
  label, which the API server tells us by calling the opted-in webhook's path, see registration.py),
  a pod that leaves the scheduler unset (the API server defaults it to ``default-scheduler``) gets our
  `schedulerName` when its namespace opted in or the pod asks with the label
  ``slurm-bridge.io/scheduling: "true"``; a pod of our scheduler gets the managed-node toleration.
  Pods naming another scheduler, pods labelled ``slurm-bridge.io/scheduling: "false"`` and pods
  elsewhere are never touched.
- `validate`: the labels, annotations and finalizer the bridge owns may be set or changed only by the
  bridge's identity; job options (and the tenant policy) are checked by bridge/validation.py, the same
  translation the controller submits with. On UPDATE options are checked only when they changed, so an
  object admitted while the webhook was down never blocks the bridge's own writes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bridge import wellknown
from bridge.config import BridgeConfig
from bridge.validation import job_option_problems
from webhook.config import LABEL_POD_OPT_IN

ADMISSION_API_VERSION: Final = "admission.k8s.io/v1"
DEFAULT_SCHEDULER: Final = "default-scheduler"
MANAGED_NODE_TOLERATION: Final = {
    "key": wellknown.TAINT_MANAGED_NODE,
    "operator": "Exists",
    "effect": "NoSchedule",
}
OWNED_LABELS: Final = frozenset({wellknown.LABEL_SLURM_JOB_ID})
OWNED_ANNOTATIONS: Final = wellknown.BRIDGE_OWNED_ANNOTATIONS


class ReviewError(ValueError):
    """The body is not an AdmissionReview request this webhook can answer."""


@dataclass(frozen=True)
class Decision:
    allowed: bool = True
    message: str = ""
    patch: tuple[dict[str, Any], ...] = field(default=())


@dataclass(frozen=True)
class Request:
    uid: str
    group: str
    kind: str
    operation: str
    namespace: str
    username: str
    obj: Mapping[str, Any]
    old: Mapping[str, Any]

    @classmethod
    def from_review(cls, review: Any) -> Request:
        if not isinstance(review, Mapping) or not isinstance(review.get("request"), Mapping):
            raise ReviewError("not an AdmissionReview with a request")
        request = review["request"]
        uid = request.get("uid")
        if not isinstance(uid, str) or not uid:
            raise ReviewError("the AdmissionReview request has no uid")
        kind = request.get("kind") or {}
        obj = request.get("object") or {}
        return cls(
            uid=uid,
            group=str(kind.get("group") or ""),
            kind=str(kind.get("kind") or ""),
            operation=str(request.get("operation") or ""),
            namespace=str(request.get("namespace") or (obj.get("metadata") or {}).get("namespace") or ""),
            username=str((request.get("userInfo") or {}).get("username") or ""),
            obj=obj if isinstance(obj, Mapping) else {},
            old=request.get("oldObject") or {},
        )


def response(request_uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview to answer with."""
    answer: dict[str, Any] = {"uid": request_uid, "allowed": decision.allowed}
    if not decision.allowed:
        answer["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
    if decision.patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(list(decision.patch)).encode()).decode()
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": answer}


def namespace_managed(namespace: str, config: BridgeConfig, namespace_opted_in: bool) -> bool:
    return namespace_opted_in or config.namespace_allowed(namespace)


def mutate_pod(request: Request, config: BridgeConfig, *, namespace_opted_in: bool) -> Decision:
    """The patch that makes a pod of a managed namespace one of ours (see the module docstring)."""
    if (request.group, request.kind) != ("", "Pod") or request.operation != "CREATE":
        return Decision()
    if not namespace_managed(request.namespace, config, namespace_opted_in):
        return Decision()
    meta = request.obj.get("metadata") or {}
    spec = request.obj.get("spec") or {}
    asks = str((meta.get("labels") or {}).get(LABEL_POD_OPT_IN, "")).lower()
    scheduler = spec.get("schedulerName") or DEFAULT_SCHEDULER
    patch: list[dict[str, Any]] = []
    if scheduler == DEFAULT_SCHEDULER and asks != "false" and (namespace_opted_in or asks == "true"):
        patch.append({"op": "add", "path": "/spec/schedulerName", "value": config.scheduler_name})
        scheduler = config.scheduler_name
    if scheduler != config.scheduler_name:
        return Decision(patch=tuple(patch))
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list):
        patch.append({"op": "add", "path": "/spec/tolerations", "value": [MANAGED_NODE_TOLERATION]})
    elif not any(_tolerates_managed_nodes(t) for t in tolerations):
        patch.append({"op": "add", "path": "/spec/tolerations/-", "value": MANAGED_NODE_TOLERATION})
    return Decision(patch=tuple(patch))


def validate(
    request: Request,
    config: BridgeConfig,
    bridge_usernames: Sequence[str],
    namespace_labels: Mapping[str, str] | None = None,
) -> Decision:
    """Allow, or refuse with a message naming what is wrong (see the module docstring)."""
    if request.operation not in ("CREATE", "UPDATE"):
        return Decision()
    if request.username in bridge_usernames:
        return Decision()
    problems = owned_name_problems(request)
    meta = request.obj.get("metadata") or {}
    if not meta.get("deletionTimestamp") and (
        request.operation == "CREATE" or _options(request.obj) != _options(request.old)
    ):
        problems += job_option_problems(_with_namespace(request), config, namespace_labels)
    if not problems:
        return Decision()
    what = f"{request.kind} {request.namespace}/{meta.get('name') or meta.get('generateName') or ''}"
    return Decision(allowed=False, message=f"{what}: " + "; ".join(problems))


def owned_name_problems(request: Request) -> list[str]:
    """The bridge-owned labels, annotations and finalizer this request sets, changes or removes."""
    new_meta = request.obj.get("metadata") or {}
    old_meta = (request.old.get("metadata") or {}) if request.operation == "UPDATE" else {}
    who = f"only the bridge may set it, not {request.username or 'an anonymous user'}"
    problems: list[str] = []
    for section, owned in (("labels", OWNED_LABELS), ("annotations", OWNED_ANNOTATIONS)):
        new, old = new_meta.get(section) or {}, old_meta.get(section) or {}
        for key in sorted(owned):
            if new.get(key) != old.get(key):
                change = f"{old.get(key)!r} -> {new.get(key)!r}" if key in old else repr(new.get(key))
                problems.append(f"{section[:-1]} {key} {change}: {who}")
    had = wellknown.FINALIZER in (old_meta.get("finalizers") or ())
    has = wellknown.FINALIZER in (new_meta.get("finalizers") or ())
    # Removing it from an object being deleted is the escape hatch when the bridge is gone for good.
    if has and not had:
        problems.append(f"finalizer {wellknown.FINALIZER}: {who}")
    elif had and not has and not new_meta.get("deletionTimestamp"):
        problems.append(f"finalizer {wellknown.FINALIZER} removed: {who}")
    return problems


def _tolerates_managed_nodes(toleration: Any) -> bool:
    if not isinstance(toleration, Mapping):
        return False
    key, operator = toleration.get("key"), toleration.get("operator") or "Equal"
    effect = toleration.get("effect") or ""
    return (key == wellknown.TAINT_MANAGED_NODE or (not key and operator == "Exists")) and effect in (
        "",
        "NoSchedule",
    )


def _options(obj: Mapping[str, Any]) -> dict[str, str]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(wellknown.JOB_OPTION_PREFIXES)} | {
        "spec": json.dumps(obj.get("spec"), sort_keys=True)
    }


def _with_namespace(request: Request) -> Mapping[str, Any]:
    """The object with its namespace filled in (a CREATE's object may not name it)."""
    meta = dict(request.obj.get("metadata") or {})
    meta.setdefault("namespace", request.namespace)
    if not meta["namespace"]:
        meta["namespace"] = request.namespace
    return {**request.obj, "metadata": meta}
