"""Namespace labels for tenant rules by label, read from the API server and kept for a short while."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from bridge.config import BridgeConfig
from kube_client import NAMESPACES, KubeClient


def needs_namespace_labels(config: BridgeConfig) -> bool:
    """Whether any tenant rule selects namespaces by label."""
    return config.tenancy.enabled and any(rule.namespace_labels for rule in config.tenancy.rules)


class NamespaceLabelCache:
    """`await labels(name)`: the Namespace's labels, at most `ttl` seconds old. A failed read raises, so
    the webhook answers with an error and the API server applies the failure policy (never a guess)."""

    def __init__(
        self, kube: KubeClient, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kube = kube
        self._ttl = ttl
        self._clock = clock
        self._seen: dict[str, tuple[float, dict[str, str]]] = {}

    async def labels(self, name: str) -> Mapping[str, str]:
        now = self._clock()
        cached = self._seen.get(name)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        namespace = await self._kube.get(NAMESPACES, name)
        labels = {str(k): str(v) for k, v in ((namespace.get("metadata") or {}).get("labels") or {}).items()}
        self._seen[name] = (now, labels)
        return labels
