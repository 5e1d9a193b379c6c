"""The webhook as the composition root runs it: `await run_webhook(config, stop, kube)`.

Adds what needs the API server to `serve_webhook`: namespace labels for tenant rules by label, and the
caBundle update when the CA is replaced (`webhook.registration_name`). `kube` None: a client is made
from `config.kubernetes` when one of those is needed, and closed at the end.
"""

from __future__ import annotations

import asyncio

from bridge.config import BridgeConfig
from kube_client import KubeClient
from webhook.ca_bundle import update_ca_bundles
from webhook.namespaces import NamespaceLabelCache, needs_namespace_labels
from webhook.server import serve_webhook


async def run_webhook(config: BridgeConfig, stop: asyncio.Event, kube: KubeClient | None = None) -> None:
    name = config.webhook.registration_name
    wants_labels = needs_namespace_labels(config)
    if not wants_labels and name is None:
        await serve_webhook(config, stop)
        return
    own = kube is None
    client = kube if kube is not None else await KubeClient.connect(config.kubernetes.kubeconfig)

    async def ca_rotated(ca_pem: bytes) -> None:
        if name is not None:
            await update_ca_bundles(client, name, ca_pem)

    try:
        labels = NamespaceLabelCache(client).labels if wants_labels else None
        await serve_webhook(config, stop, namespace_labels=labels, on_ca_rotated=ca_rotated)
    finally:
        if own:
            await client.close()
