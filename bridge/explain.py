"""`slurm-bridge explain`: the Slurm job a manifest's pods would become, without submitting anything.

Pure: takes manifest text and a config, returns what to print.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bridge.config import BridgeConfig
from bridge.objects import PodInfo
from bridge.translate import TranslationError, job_spec_for, namespace_refusal
from slurm_client import JobSpec

# kind -> path from the object to its pod template
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class ManifestError(ValueError):
    """The manifest cannot be read as Kubernetes objects holding pods."""


@dataclass(frozen=True)
class PodExplanation:
    source: str  # e.g. "Deployment slurm-bridge/web" (the template's pod is named after its workload)
    pod: PodInfo
    spec: JobSpec | None = None
    error: TranslationError | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Explanation:
    pods: tuple[PodExplanation, ...]
    skipped: tuple[str, ...] = field(default=())  # objects that hold no pod

    @property
    def ok(self) -> bool:
        return all(p.error is None for p in self.pods)


def explain_manifests(text: str, config: BridgeConfig) -> Explanation:
    """Translate every pod (or pod template) in the YAML/JSON `text`. Raises ManifestError."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {exc}") from exc
    pods: list[PodExplanation] = []
    skipped: list[str] = []
    for obj in _objects(documents):
        kind = str(obj.get("kind") or "")
        meta = obj.get("metadata") or {}
        if kind == "Pod":
            pod_object: Mapping[str, Any] | None = obj
        elif kind in _TEMPLATE_PATHS:
            pod_object = _pod_from_template(obj, _TEMPLATE_PATHS[kind])
        else:
            pod_object = None
        if pod_object is None:
            skipped.append(f"{kind or 'object without kind'} {meta.get('name', '')}".strip())
            continue
        pods.append(_explain_pod(kind, pod_object, config))
    if not pods:
        raise ManifestError("no Pod, or workload with a pod template, found")
    return Explanation(tuple(pods), tuple(skipped))


def sbatch_options(spec: JobSpec) -> list[str]:
    """The sbatch command-line options asking for what `spec` asks for."""
    nodes = str(spec.min_nodes)
    if spec.max_nodes is not None and spec.max_nodes != spec.min_nodes:
        nodes += f"-{spec.max_nodes}"
    optional: list[tuple[str, object | None]] = [
        ("partition", spec.partition),
        ("account", spec.account),
        ("qos", spec.qos),
        ("nodes", nodes),
        ("ntasks", spec.tasks),
        ("cpus-per-task", spec.cpus_per_task),
        ("mem", f"{spec.memory_per_node_mb}M" if spec.memory_per_node_mb else None),
        ("gres", ",".join(f"{name}:{count}" for name, count in spec.gres_per_node.items()) or None),
        ("time", spec.time_limit_minutes),
        ("constraint", spec.constraints),
        ("reservation", spec.reservation),
        ("licenses", spec.licenses),
        ("wckey", spec.wckey),
        ("priority", spec.priority),
        ("nice", spec.nice),
        ("exclude", ",".join(spec.excluded_nodes) or None),
        ("comment", spec.comment),
    ]
    options = [f"--job-name={spec.name}"]
    options += [f"--{name}={value}" for name, value in optional if value is not None]
    options += [flag for flag, on in (("--exclusive", spec.exclusive), ("--hold", spec.hold)) if on]
    return options


def sbatch_command(spec: JobSpec) -> str:
    return " ".join(["sbatch", *(shlex.quote(option) for option in sbatch_options(spec))])


def render(explanation: Explanation) -> tuple[str, str]:
    """(stdout, stderr) text for the CLI: per pod a header, the job as JSON and the sbatch line."""
    out: list[str] = []
    err: list[str] = [f"note: skipping {what}: it holds no pod template" for what in explanation.skipped]
    for item in explanation.pods:
        out.append(f"# {item.source}")
        err += [f"note: {item.source}: {note}" for note in item.notes]
        if item.spec is None:
            problems = item.error.problems if item.error is not None else ()
            err.append(f"error: {item.source} cannot become a Slurm job:")
            err += [f"  - {problem}" for problem in problems]
            continue
        out.append(json.dumps(item.spec.model_dump(mode="json", exclude_none=True), indent=2))
        out.append(sbatch_command(item.spec))
    return "\n".join(out) + "\n", "".join(f"{line}\n" for line in err)


def _objects(documents: list[Any]) -> Iterator[Mapping[str, Any]]:
    for document in documents:
        if not isinstance(document, Mapping):
            raise ManifestError(f"expected a Kubernetes object (a mapping), got {type(document).__name__}")
        if document.get("kind") == "List":
            yield from _objects(list(document.get("items") or ()))
        else:
            yield document


def _pod_from_template(obj: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    template: Any = obj
    for step in path:
        template = template.get(step) if isinstance(template, Mapping) else None
    if not isinstance(template, Mapping):
        return None
    owner_meta = obj.get("metadata") or {}
    pod_meta = dict(template.get("metadata") or {})
    # Pods made from a template are named after their workload (plus a suffix) and live in its namespace.
    pod_meta.setdefault("name", owner_meta.get("name"))
    pod_meta.setdefault("namespace", owner_meta.get("namespace"))
    return {"kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}


def _explain_pod(kind: str, pod_object: Mapping[str, Any], config: BridgeConfig) -> PodExplanation:
    notes: list[str] = []
    meta = pod_object.get("metadata") or {}
    if not meta.get("namespace"):
        # kubectl would use the context's namespace; assume one the bridge serves
        pod_object = {**pod_object, "metadata": {**meta, "namespace": config.namespaces[0]}}
        notes.append(f"no namespace given; assuming {config.namespaces[0]!r}")
    pod = PodInfo.from_api(pod_object)
    source = f"{kind} {pod.key}"
    if pod.scheduler_name != config.scheduler_name:
        current = repr(pod.scheduler_name) if pod.scheduler_name else "not set"
        notes.append(
            f"spec.schedulerName is {current}; the bridge only takes pods with "
            f"schedulerName {config.scheduler_name!r}"
        )
    refusal = namespace_refusal(pod, config)
    if refusal is not None:
        notes.append(refusal)
    try:
        return PodExplanation(source, pod, spec=job_spec_for(pod, config), notes=tuple(notes))
    except TranslationError as error:
        return PodExplanation(source, pod, error=error, notes=tuple(notes))
