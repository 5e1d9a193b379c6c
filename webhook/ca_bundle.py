"""Keeping the registration's caBundle in step with the webhook's CA when the CA is replaced.

`ca_bundle_patch` (pure) is the JSON patch that sets every webhook's `clientConfig.caBundle` of one
Mutating/ValidatingWebhookConfiguration, each guarded by a `test` of the webhook's name so a
configuration edited meanwhile is not patched blindly; `update_ca_bundles` applies it to both kinds.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any, Final

from kube_client import KubeClient, NotFound, PatchType, ResourceRef

log = logging.getLogger(__name__)

MUTATING_WEBHOOK_CONFIGURATIONS: Final = ResourceRef(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    namespaced=False,
    kind="MutatingWebhookConfiguration",
)
VALIDATING_WEBHOOK_CONFIGURATIONS: Final = ResourceRef(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    namespaced=False,
    kind="ValidatingWebhookConfiguration",
)


def ca_bundle_patch(configuration: Mapping[str, Any], ca_pem: bytes) -> list[dict[str, Any]]:
    bundle = base64.b64encode(ca_pem).decode()
    operations: list[dict[str, Any]] = []
    for index, webhook in enumerate(configuration.get("webhooks") or ()):
        operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")})
        operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle})
    return operations


async def update_ca_bundles(kube: KubeClient, name: str, ca_pem: bytes) -> None:
    """Set the caBundle of the two configurations called `name` (a missing one is skipped)."""
    for ref in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS):
        try:
            current = await kube.get(ref, name)
        except NotFound:
            continue
        await kube.patch(ref, name, ca_bundle_patch(current, ca_pem), patch_type=PatchType.JSON)
        log.info("%s %s: caBundle updated to the new webhook CA", ref.kind, name)
