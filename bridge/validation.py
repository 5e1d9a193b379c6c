"""What is wrong with the job options of one Kubernetes object, found by the shim's own translation code.

Pure: the admission webhook (webhook/admission.py) calls `job_option_problems` on every object it
validates; it translates with `job_spec_for` (pods, pod templates) and `gang_job_spec_for` (group and
owner objects), the functions the controller submits with, so admission and the controller can never
disagree about what is valid. Tenant policy (bridge/tenancy.py) is part of that translation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from bridge import wellknown
from bridge.config import BridgeConfig
from bridge.gang import GangInfo, GangKey, GangKind
from bridge.gang_translate import gang_job_spec_for
from bridge.objects import PodInfo
from bridge.translate import TranslationError, job_spec_for

# (api group, kind) of objects whose own annotations carry a gang's or owner workload's job options.
COSCHEDULING_POD_GROUP: Final = ("scheduling.x-k8s.io", "PodGroup")
WORKLOAD_POD_GROUP: Final = ("scheduling.k8s.io", "PodGroup")
OWNER_WORKLOADS: Final = frozenset(
    {
        ("jobset.x-k8s.io", "JobSet"),
        ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"),
        ("scheduling.k8s.io", "Workload"),
    }
)
# (api group, kind) -> paths from the object to its pod templates ("*" walks a list).
_TEMPLATES: Final[dict[tuple[str, str], tuple[tuple[str, ...], ...]]] = {
    ("batch", "Job"): (("spec", "template"),),
    ("jobset.x-k8s.io", "JobSet"): (("spec", "replicatedJobs", "*", "template", "spec", "template"),),
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): (
        ("spec", "leaderWorkerTemplate", "leaderTemplate"),
        ("spec", "leaderWorkerTemplate", "workerTemplate"),
    ),
}


def kind_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(api group, kind) of a raw object; the core group is ""."""
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.rpartition("/")[0]
    return group, str(obj.get("kind") or "")


def job_option_problems(
    obj: Mapping[str, Any], config: BridgeConfig, namespace_labels: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem translation finds in `obj`'s job options (tenant policy included); [] if none.

    Pods are checked when they name our scheduler; groups and owner workloads by their own annotations;
    pod templates when they name our scheduler or set any job option. Other objects have no problems.
    """
    labels = namespace_labels or {}
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or meta.get("generateName") or "object")
    group_kind = kind_of(obj)
    problems: list[str] = []
    if group_kind == ("", "Pod"):
        pod = PodInfo.from_api(obj)
        if pod.scheduler_name == config.scheduler_name:
            problems += _pod_problems(pod, config, labels)
    elif group_kind in (COSCHEDULING_POD_GROUP, WORKLOAD_POD_GROUP):
        parse = GangInfo.from_coscheduling_api if group_kind == COSCHEDULING_POD_GROUP else None
        gang = parse(obj) if parse is not None else GangInfo.from_workload_api(obj)
        problems += _gang_problems(gang, config, {})
    if group_kind in OWNER_WORKLOADS:
        gang = GangInfo(key=GangKey(namespace=namespace, kind=GangKind.COSCHEDULING, name=name))
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        problems += _gang_problems(gang, config, annotations)
    for where, template in _templates(obj, _TEMPLATES.get(group_kind, ())):
        pod = _template_pod(template, namespace, name)
        if pod.scheduler_name == config.scheduler_name or _sets_job_options(pod.annotations):
            problems += [f"{where}: {p}" for p in _pod_problems(pod, config, labels)]
    return problems


def _pod_problems(pod: PodInfo, config: BridgeConfig, labels: Mapping[str, str]) -> list[str]:
    try:
        job_spec_for(pod, config, labels)
    except TranslationError as error:
        return list(error.problems)
    return []


def _gang_problems(gang: GangInfo, config: BridgeConfig, owner: Mapping[str, str]) -> list[str]:
    # One member without options of its own: every problem found is the group's or the owner's.
    member = PodInfo(namespace=gang.key.namespace, name=gang.key.name)
    try:
        gang_job_spec_for(gang, [member], config, owner)
    except TranslationError as error:
        return [p.removeprefix(f"pod {member.name}: ") for p in error.problems]
    return []


def _sets_job_options(annotations: Mapping[str, str]) -> bool:
    return any(
        key.startswith(wellknown.JOB_OPTION_PREFIXES) and key not in wellknown.BRIDGE_OWNED_ANNOTATIONS
        for key in annotations
    )


def _templates(
    obj: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for path in paths:
        yield from _walk(obj, path, "")


def _walk(node: Any, path: tuple[str, ...], where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not path:
        if isinstance(node, Mapping):
            yield where.lstrip("."), node
        return
    step, rest = path[0], path[1:]
    if step == "*":
        for index, item in enumerate(node if isinstance(node, list) else ()):
            yield from _walk(item, rest, f"{where}[{index}]")
    elif isinstance(node, Mapping) and step in node:
        yield from _walk(node[step], rest, f"{where}.{step}")


def _template_pod(template: Mapping[str, Any], namespace: str, owner_name: str) -> PodInfo:
    meta = dict(template.get("metadata") or {})
    meta.setdefault("name", owner_name)
    meta["namespace"] = namespace
    return PodInfo.from_api({"metadata": meta, "spec": template.get("spec") or {}})
