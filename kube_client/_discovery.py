"""API discovery: whether the API server serves a resource (an optional CRD or a feature-gated API)."""

from __future__ import annotations

from typing import Protocol

from ._errors import NotFound
from ._resources import KubeObject, ResourceRef


class DiscoverySource(Protocol):
    async def request(self, method: str, path: str) -> KubeObject: ...


async def serves(kube: DiscoverySource, ref: ResourceRef) -> bool:
    """Whether the API server serves `ref`; False when its group/version is unknown."""
    path = f"/api/{ref.version}" if not ref.group else f"/apis/{ref.group}/{ref.version}"
    try:
        listing = await kube.request("GET", path)
    except NotFound:
        return False
    return any(r.get("name") == ref.plural for r in listing.get("resources") or ())
