"""Which single Slurm job a gang becomes. Pure: no I/O, no clock.

One gang is one multi-node placeholder job, one node per member:

- ``min_nodes = max_nodes = tasks = len(members)``: Slurm must place every task on its own node
  (with as many tasks as nodes, each allocated node holds exactly one).
- Resources per node are those of the largest member, resource by resource: the most CPUs any member
  asks for, the most memory, the most of each GRES. Every node can then hold whichever member lands
  on it; binding is by rank (bridge/gang.py `member_order`), not by size, so this is what makes any
  member fit any node. A group's ``minResources`` (coscheduling) raise that per-node floor to their
  even share: ``ceil(total / members)`` for cpu, memory and GPUs.
- Job options come from annotations with the same keys a pod uses (``slinky.slurm.net/job-name``, ...),
  with precedence group object > owner workload (Workload, LeaderWorkerSet, JobSet) > first member pod
  (in rank order), option by option: a group's ``account`` overrides a pod's, while the pod's ``qos``
  still applies if neither the group nor the owner sets one. Each member is also translated with the
  group's and owner's options laid over its own, so every member's annotations are validated and
  per-node options (cpu-per-task, mem-per-node, gres) are checked against every member's requests.
- ``min-nodes`` / ``max-nodes`` cannot be set for a gang: its node count is its member count.
- The job name is the ``job-name`` option, else the gang's name (never "(null)" in squeue).
- The time limit is the ``timelimit`` option, else the longest member deadline when every member has
  one (activeDeadlineSeconds), else the configured default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final, NamedTuple

from bridge import wellknown
from bridge.config import BridgeConfig, PlaceholderMode
from bridge.gang import GangInfo
from bridge.gang_marker import GangMarker
from bridge.objects import PodInfo
from bridge.translate import (
    BATCH_PLACEHOLDER_SCRIPT,
    TranslationError,
    job_spec_for,
    parse_quantity,
    spec_digest,
)
from bridge.wellknown import JobOption
from slurm_client import JobSpec

_MIB: Final = 1024 * 1024
_NODE_COUNT_OPTIONS: Final = frozenset({JobOption.MIN_NODES, JobOption.MAX_NODES})


class GangTranslationError(TranslationError):
    """A gang that cannot become a Slurm job; `problems` lists every reason, each one sentence."""

    def __init__(self, gang_key: str, problems: Sequence[str]) -> None:
        super().__init__(gang_key, problems)
        self.args = (f"gang {gang_key} cannot become a Slurm job: {self.message}",)


def gang_job_spec_for(
    gang: GangInfo,
    members: Sequence[PodInfo],
    config: BridgeConfig,
    owner_annotations: Mapping[str, str] | None = None,
) -> JobSpec:
    """The placeholder job for `gang` with `members` (rank order), without marker or script.

    Raises GangTranslationError listing every problem found.
    """
    key = str(gang.key)
    if not members:
        raise GangTranslationError(key, ["the gang has no members to run"])
    owner = owner_annotations or {}
    problems: list[str] = []
    for where, source in [("the group", gang.annotations), ("the owner workload", owner)]:
        problems += _node_count_problems(source, where, len(members))
    for pod in members:
        problems += _node_count_problems(pod.annotations, f"pod {pod.name}", len(members))

    # The group's and owner's options alone first, so their problems are reported once, unprefixed ...
    shared = PodInfo(
        namespace=gang.key.namespace,
        name=gang.key.name,
        annotations=_without_node_counts(_overlay({}, owner, gang.annotations)),
    )
    _translate(shared, config, problems, prefix="")
    # ... then every member with them laid over its own; the first member's spec carries the options.
    specs: list[JobSpec] = []
    for pod in members:
        laid_over = _without_node_counts(_overlay(pod.annotations, owner, gang.annotations))
        spec = _translate(
            pod.model_copy(update={"annotations": laid_over}), config, problems, prefix=f"pod {pod.name}: "
        )
        if spec is not None:
            specs.append(spec)

    floor = _min_resource_share(gang, len(members), problems)
    if problems:
        raise GangTranslationError(key, problems)
    base = specs[0]
    merged = _overlay(members[0].annotations, owner, gang.annotations)

    gres: dict[str, int] = {}
    for spec in specs:
        for name, count in spec.gres_per_node.items():
            gres[name] = max(gres.get(name, 0), count)
    if floor.gpus:
        gres[wellknown.GPU_GRES] = max(gres.get(wellknown.GPU_GRES, 0), floor.gpus)

    if _option_set(merged, JobOption.TIME_LIMIT):
        time_limit = base.time_limit_minutes
    elif all(pod.active_deadline_seconds for pod in members):
        time_limit = max(s.time_limit_minutes or 0 for s in specs) or None
    else:
        time_limit = config.slurm.default_time_limit_minutes

    count = len(members)
    return base.model_copy(
        update={
            "name": base.name if _option_set(merged, JobOption.JOB_NAME) else gang.key.name,
            "time_limit_minutes": time_limit,
            "min_nodes": count,
            "max_nodes": count,
            "tasks": count,
            "cpus_per_task": max([floor.cpus, *(s.cpus_per_task or 1 for s in specs)]),
            "memory_per_node_mb": max([floor.memory_mb, *(s.memory_per_node_mb or 1 for s in specs)]),
            "gres_per_node": dict(sorted(gres.items())),
        }
    )


def gang_spec_digest(spec: JobSpec) -> str:
    """12 hex digits identifying what a gang job asks for (the same digest single pods use)."""
    return spec_digest(spec)


def placeholder_gang_job_for(
    gang: GangInfo,
    members: Sequence[PodInfo],
    config: BridgeConfig,
    owner_annotations: Mapping[str, str] | None = None,
) -> JobSpec:
    """The job to submit for `gang`: its JobSpec plus gang marker and placeholder script.

    Raises GangTranslationError, or ValueError for a group without a UID.
    """
    spec = gang_job_spec_for(gang, members, config, owner_annotations)
    marker = GangMarker(
        cluster_id=config.marker_cluster_id,
        namespace=gang.key.namespace,
        kind=gang.key.kind,
        name=gang.key.name,
        group_uid=gang.uid,
        spec_digest=gang_spec_digest(spec),
    )
    script = BATCH_PLACEHOLDER_SCRIPT if config.slurm.placeholder_mode is PlaceholderMode.BATCH else None
    output = "/dev/null" if script is not None else None  # the placeholder prints nothing
    return spec.model_copy(update={"comment": marker.encode(), "script": script, "standard_output": output})


# --- Pieces -------------------------------------------------------------------------------------------


def _translate(pod: PodInfo, config: BridgeConfig, problems: list[str], *, prefix: str) -> JobSpec | None:
    try:
        return job_spec_for(pod, config)
    except TranslationError as error:
        # A problem already reported for the gang's options is not repeated for each member.
        problems += [f"{prefix}{p}" for p in error.problems if p not in problems]
        return None


def _option_of(key: str) -> str | None:
    """The job option an annotation key sets; "" for an unknown key under a job-option prefix."""
    prefix = next((p for p in wellknown.JOB_OPTION_PREFIXES if key.startswith(p)), None)
    if prefix is None or key in wellknown.BRIDGE_OWNED_ANNOTATIONS:
        return None
    try:
        return JobOption(key.removeprefix(prefix))
    except ValueError:
        return ""


def _overlay(*sources: Mapping[str, str]) -> dict[str, str]:
    """Annotations of the first source with the job options of each later one laid over, option by option.

    A later source setting an option replaces both prefix forms of it; unknown keys under a job-option
    prefix are carried along, so translation reports them.
    """
    result = dict(sources[0])
    for source in sources[1:]:
        for key, value in source.items():
            option = _option_of(key)
            if option is None:
                continue
            if option:
                for other in [k for k in result if _option_of(k) == option]:
                    del result[other]
            result[key] = value
    return result


def _option_set(annotations: Mapping[str, str], option: JobOption) -> bool:
    return any(_option_of(key) == option for key in annotations)


def _without_node_counts(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if _option_of(k) not in _NODE_COUNT_OPTIONS}


def _node_count_problems(annotations: Mapping[str, str], where: str, members: int) -> list[str]:
    return [
        f"{key} on {where}: a gang runs on one node per member ({members}), so node counts cannot be set"
        for key in sorted(annotations)
        if _option_of(key) in _NODE_COUNT_OPTIONS
    ]


class _Floor(NamedTuple):
    cpus: int
    memory_mb: int
    gpus: int


def _min_resource_share(gang: GangInfo, members: int, problems: list[str]) -> _Floor:
    """Each node's even share of the group's minResources (coscheduling), rounded up."""
    totals: dict[str, Decimal] = {}
    for name, text in gang.min_resources.items():
        if name in ("cpu", "memory", *wellknown.GPU_RESOURCES):
            try:
                totals[name] = parse_quantity(text)
            except ValueError as exc:
                problems.append(f"the group's minResources: {name}: {exc}")
    gpus = sum((totals.get(name, Decimal(0)) for name in wellknown.GPU_RESOURCES), Decimal(0))
    # (parse_quantity bounds each total by 2^63, so these stay far from Decimal's limits)
    return _Floor(
        cpus=max(1, math.ceil(totals.get("cpu", Decimal(0)) / members)),
        memory_mb=max(1, math.ceil(totals.get("memory", Decimal(0)) / members / _MIB)),
        gpus=math.ceil(gpus / members),
    )
