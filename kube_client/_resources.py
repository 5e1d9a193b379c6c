"""Which resource a call is about, and how objects are named in caches and queues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# Objects travel as the API returns them: decoded JSON, camelCase keys.
KubeObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A REST resource: `group` is "" for the core API; `kind` fills in objects that arrive without one."""

    group: str
    version: str
    plural: str
    namespaced: bool = True
    kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path: collection when `name` is None, all namespaces when `namespace` is None."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            root += f"/namespaces/{quote(namespace, safe='')}"
        elif not self.namespaced and namespace is not None:
            raise ValueError(f"{self.plural} is cluster-scoped; no namespace allowed")
        elif self.namespaced and name is not None:
            raise ValueError(f"{self.plural} is namespaced; a namespace is needed to address one object")
        path = f"{root}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
            if subresource:
                path += f"/{subresource}"
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return path


PODS = ResourceRef("", "v1", "pods", namespaced=True, kind="Pod")
NODES = ResourceRef("", "v1", "nodes", namespaced=False, kind="Node")
NAMESPACES = ResourceRef("", "v1", "namespaces", namespaced=False, kind="Namespace")
EVENTS = ResourceRef("", "v1", "events", namespaced=True, kind="Event")
LEASES = ResourceRef("coordination.k8s.io", "v1", "leases", namespaced=True, kind="Lease")
# Gang group objects (bridge/gang.py): coscheduling PodGroups (scheduler-plugins CRD, or
# deploy/crds/scheduling.x-k8s.io_podgroups.yaml) and the Workload API's runtime PodGroups (1.37+).
COSCHEDULING_POD_GROUPS = ResourceRef("scheduling.x-k8s.io", "v1alpha1", "podgroups", kind="PodGroup")
WORKLOAD_POD_GROUPS = ResourceRef("scheduling.k8s.io", "v1beta1", "podgroups", kind="PodGroup")
WORKLOADS = ResourceRef("scheduling.k8s.io", "v1beta1", "workloads", kind="Workload")
# Owner workloads whose annotations set job options for their pods (bridge/gang.py: owner_of).
JOBSETS = ResourceRef("jobset.x-k8s.io", "v1alpha2", "jobsets", kind="JobSet")
NODESETS = ResourceRef("slinky.slurm.net", "v1beta1", "nodesets", kind="NodeSet")
LEADER_WORKER_SETS = ResourceRef("leaderworkerset.x-k8s.io", "v1", "leaderworkersets", kind="LeaderWorkerSet")
CUSTOM_RESOURCE_DEFINITIONS = ResourceRef(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    namespaced=False,
    kind="CustomResourceDefinition",
)


def object_key(obj: Mapping[str, Any]) -> str:
    """Cache / work-queue key of an object: "namespace/name", or "name" for cluster-scoped objects."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or ""
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str | None, str]:
    """Inverse of `object_key`: ("ns", "name"), or (None, "name") for cluster-scoped objects."""
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, key)
