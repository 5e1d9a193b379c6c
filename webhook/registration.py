"""The Mutating/ValidatingWebhookConfiguration objects that register the webhook. Pure.

What a down webhook can block, by construction:
- every webhook has a namespaceSelector: the bridge's `namespaces` (by ``kubernetes.io/metadata.name``)
  or namespaces labelled ``slurm-bridge.io/scheduling: "true"``; pods and objects anywhere else never
  reach it, so they are never blocked;
- `failurePolicy: Fail` inside those namespaces: a pod must not slip through to the default scheduler
  without the patch, nor a forbidden request through unchecked. `timeoutSeconds: 5` bounds the wait;
- `matchConditions` leave the bridge's own requests out of validation, so the bridge (finalizer removal,
  labels, bindings) never depends on the webhook being up.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final

from bridge.config import BridgeConfig
from webhook.config import LABEL_NAMESPACE_OPT_IN
from webhook.server import MUTATE_OPTED_IN_PODS_PATH, MUTATE_PODS_PATH, VALIDATE_PATH

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
TIMEOUT_SECONDS: Final = 5
# (api group, version, resource) the validating webhook sees besides pods.
VALIDATED_RESOURCES: Final = (
    ("scheduling.x-k8s.io", "v1alpha1", "podgroups"),
    ("scheduling.k8s.io", "*", "podgroups"),
    ("scheduling.k8s.io", "*", "workloads"),
    ("batch", "v1", "jobs"),
    ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
    ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
)


def webhook_configurations(
    config: BridgeConfig,
    *,
    ca_bundle: bytes,
    url: str | None = None,
    service: tuple[str, str, int] | None = None,
    name: str = "slurm-bridge",
    only_namespaces: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """[MutatingWebhookConfiguration, ValidatingWebhookConfiguration] for the webhook at `url`
    (https://host:port, no path) or in-cluster `service` (namespace, name, port).

    `only_namespaces` narrows every selector further (tests on a shared API server).
    """
    if (url is None) == (service is None):
        raise ValueError("give exactly one of url and service")

    def client(path: str) -> dict[str, Any]:
        bundle = base64.b64encode(ca_bundle).decode()
        if url is not None:
            return {"url": url.rstrip("/") + path, "caBundle": bundle}
        assert service is not None
        namespace, service_name, port = service
        return {
            "service": {"namespace": namespace, "name": service_name, "port": port, "path": path},
            "caBundle": bundle,
        }

    scope: list[dict[str, Any]] = []
    if only_namespaces is not None:
        scope = [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(only_namespaces)}]
    listed = {
        "matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(config.namespaces)},
            {"key": LABEL_NAMESPACE_OPT_IN, "operator": "NotIn", "values": ["true"]},
            *scope,
        ]
    }
    opted_in = {
        "matchExpressions": [
            {"key": LABEL_NAMESPACE_OPT_IN, "operator": "In", "values": ["true"]},
            *scope,
        ]
    }
    common: dict[str, Any] = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": TIMEOUT_SECONDS,
    }
    pod_create = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
    mutating = [
        {
            **common,
            "name": f"pods.mutate.{name}.slurm-bridge.io",
            "clientConfig": client(MUTATE_PODS_PATH),
            "namespaceSelector": listed,
            "rules": pod_create,
            "reinvocationPolicy": "Never",
        },
        {
            **common,
            "name": f"opted-in-pods.mutate.{name}.slurm-bridge.io",
            "clientConfig": client(MUTATE_OPTED_IN_PODS_PATH),
            "namespaceSelector": opted_in,
            "rules": pod_create,
            "reinvocationPolicy": "Never",
        },
    ]
    validated = [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]},
        *(
            {"apiGroups": [g], "apiVersions": [v], "operations": ["CREATE", "UPDATE"], "resources": [r]}
            for g, v, r in VALIDATED_RESOURCES
        ),
    ]
    users = ", ".join(f"'{u}'" for u in config.webhook.bridge_usernames)
    not_bridge = [{"name": "not-the-bridge", "expression": f"!(request.userInfo.username in [{users}])"}]
    validating = [
        {
            **common,
            "name": f"{which}.validate.{name}.slurm-bridge.io",
            "clientConfig": client(VALIDATE_PATH),
            "namespaceSelector": selector,
            "rules": validated,
            "matchConditions": not_bridge,
        }
        for which, selector in (("listed", listed), ("opted-in", opted_in))
    ]
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": "slurm-bridge"}}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": mutating,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": validating,
        },
    ]
