"""Gangs: pods that must start together, and the group object that says how many. Pure parsing, no I/O.

A gang is named by a GangKey (namespace, kind, name); its string form ``<namespace>/<kind>/<name>`` is
the gang reconciler's work-queue key and appears in the gang job marker (bridge/gang_marker.py).

Kinds, and how a pod joins one:

- ``podgroup.scheduling.k8s.io``: a Workload-API PodGroup (scheduling.k8s.io/v1beta1). A pod joins
  with ``spec.schedulingGroup.podGroupName``; minMember is ``spec.schedulingPolicy.gang.minCount``.
- ``podgroup.scheduling.x-k8s.io``: a coscheduling PodGroup (scheduling.x-k8s.io/v1alpha1). A pod
  joins with the label ``scheduling.x-k8s.io/pod-group``; minMember is ``spec.minMember``.
- ``group.leaderworkerset.x-k8s.io``: one replica (group) of a LeaderWorkerSet. A pod joins with the
  labels ``leaderworkerset.sigs.k8s.io/name`` and ``.../group-index``; minMember is the group size.

The kind tokens are ``<resource>.<api group>``, so for the two PodGroup kinds the marker's
``<kind>/<name>`` can be pasted into ``kubectl get``. A LeaderWorkerSet group has no object of its own:
its name is ``<lws-name>-<group-index>`` (the name of its leader pod), its identity (UID) is the leader
pod's (worker-index 0), and its size comes from the ``leaderworkerset.sigs.k8s.io/size`` pod annotation.
LWS recreates a whole group by recreating its leader, so a new leader UID is a new incarnation.

Precedence - a pod belongs to at most one gang; the first rule that matches decides, the rest are ignored:

1. ``spec.schedulingGroup.podGroupName``: a core API field, validated and immutable.
2. label ``scheduling.x-k8s.io/pod-group``: an explicit opt-in. LeaderWorkerSet and JobSet set it
   themselves when configured for scheduler-plugins, so an LWS pod carrying it is in the PodGroup
   (which holds minMember and the timeout), not in the implicit LWS group.
3. LeaderWorkerSet labels, when the group size is 2 or more: implicit, no group object needed.
   Without a readable size annotation the pod is not a gang member (it is planned as a single pod).

JobSet labels never form a gang by themselves (a JobSet that wants gang scheduling creates a Workload
and PodGroups, or labels its pods for a coscheduling PodGroup); they only name a gang's owner
workload, whose annotations may carry job options (see bridge/gang_translate.py).

A Workload-API PodGroup with the ``basic`` policy is not a gang: `GangInfo.all_or_nothing` is False
and its pods are planned one by one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from bridge import wellknown
from bridge.numbers import MAX_DIGITS, ascii_int
from bridge.objects import PodCondition, PodInfo
from bridge.wellknown import (
    ANNOTATION_GANG_FAILURE_POLICY,
    ANNOTATION_LWS_SIZE,
    CONDITION_POD_GROUP_INITIALLY_SCHEDULED,
    JOB_COMPLETION_INDEX,
    LABEL_COSCHEDULING_POD_GROUP,
    LABEL_JOBSET_NAME,
    LABEL_LWS_GROUP_INDEX,
    LABEL_LWS_NAME,
    LABEL_LWS_WORKER_INDEX,
)


class GangKind(enum.StrEnum):
    WORKLOAD = "podgroup.scheduling.k8s.io"
    COSCHEDULING = "podgroup.scheduling.x-k8s.io"
    LWS = "group.leaderworkerset.x-k8s.io"


class FailurePolicy(enum.StrEnum):
    """What a running gang does when one member fails or is deleted (group annotation, default EndGang)."""

    END_GANG = "EndGang"  # cancel the job and delete the other members
    CONTINUE = "Continue"  # the others keep running; the job ends when every member has


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_KEY = re.compile(r"(?P<namespace>[^/]+)/(?P<kind>[^/]+)/(?P<name>[^/]+)")


class GangKey(_Frozen):
    namespace: str
    kind: GangKind
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> GangKey:
        """The key written as ``<namespace>/<kind>/<name>``; raises ValueError for anything else."""
        match = _KEY.fullmatch(text)
        kinds = {kind.value: kind for kind in GangKind}
        if match is None or match["kind"] not in kinds:
            raise ValueError(f"{text!r} is not a gang key (<namespace>/<kind>/<name>)")
        return cls(namespace=match["namespace"], kind=kinds[match["kind"]], name=match["name"])


class OwnerRef(_Frozen):
    """The workload a gang belongs to, whose annotations may set job options."""

    kind: str
    api_group: str  # "" for the core group
    name: str


class GroupStatus(_Frozen):
    """A coscheduling PodGroup's status, as observed or as the bridge wants it."""

    phase: str | None = None
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    schedule_start_time: datetime | None = None


class GangInfo(_Frozen):
    key: GangKey
    uid: str = ""
    min_member: int = 1
    # False: a Workload-API PodGroup with the basic policy; its pods are scheduled one by one.
    all_or_nothing: bool = True
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    schedule_timeout_seconds: int | None = None
    min_resources: dict[str, str] = {}
    owner: OwnerRef | None = None
    status: GroupStatus = GroupStatus()
    # The Workload-API PodGroup's PodGroupInitiallyScheduled condition, if set.
    scheduled_condition: PodCondition | None = None

    @classmethod
    def from_coscheduling_api(cls, group: Mapping[str, Any]) -> GangInfo:
        """A scheduling.x-k8s.io/v1alpha1 PodGroup."""
        meta = group.get("metadata") or {}
        spec = group.get("spec") or {}
        status = group.get("status") or {}
        timeout = spec.get("scheduleTimeoutSeconds")
        return cls(
            key=_key(meta, GangKind.COSCHEDULING),
            uid=str(meta.get("uid") or ""),
            min_member=max(1, _int(spec.get("minMember")) or 0),
            labels=_string_map(meta.get("labels")),
            annotations=_string_map(meta.get("annotations")),
            creation_timestamp=meta.get("creationTimestamp"),
            deletion_timestamp=meta.get("deletionTimestamp"),
            schedule_timeout_seconds=_int(timeout) if timeout is not None else None,
            min_resources=_string_map(spec.get("minResources")),
            owner=_controller_of(meta),
            status=GroupStatus(
                phase=status.get("phase") or None,
                running=_int(status.get("running")) or 0,
                succeeded=_int(status.get("succeeded")) or 0,
                failed=_int(status.get("failed")) or 0,
                schedule_start_time=status.get("scheduleStartTime") or None,
            ),
        )

    @classmethod
    def from_workload_api(cls, group: Mapping[str, Any]) -> GangInfo:
        """A scheduling.k8s.io/v1beta1 PodGroup (the runtime object made from a Workload's template).

        Its owner is the Workload named by ``spec.workloadRef.workloadName``, else its controller.
        """
        meta = group.get("metadata") or {}
        spec = group.get("spec") or {}
        policy = spec.get("schedulingPolicy") or {}
        gang = policy.get("gang")
        # v1beta1 (Kubernetes 1.37) says spec.workloadRef; v1alpha2 said spec.podGroupTemplateRef.workload.
        reference = spec.get("workloadRef") or (spec.get("podGroupTemplateRef") or {}).get("workload") or {}
        workload = reference.get("workloadName")
        owner = (
            OwnerRef(kind="Workload", api_group="scheduling.k8s.io", name=str(workload)) if workload else None
        )
        condition = next(
            (
                c
                for c in (group.get("status") or {}).get("conditions") or ()
                if c.get("type") == CONDITION_POD_GROUP_INITIALLY_SCHEDULED
            ),
            None,
        )
        return cls(
            key=_key(meta, GangKind.WORKLOAD),
            uid=str(meta.get("uid") or ""),
            min_member=max(1, _int((gang or {}).get("minCount")) or 0),
            all_or_nothing=gang is not None,
            labels=_string_map(meta.get("labels")),
            annotations=_string_map(meta.get("annotations")),
            creation_timestamp=meta.get("creationTimestamp"),
            deletion_timestamp=meta.get("deletionTimestamp"),
            owner=owner or _controller_of(meta),
            scheduled_condition=(
                PodCondition(
                    type=str(condition.get("type")),
                    status=str(condition.get("status")),
                    reason=condition.get("reason"),
                    message=condition.get("message"),
                )
                if condition is not None
                else None
            ),
        )

    @classmethod
    def from_lws_leader(cls, leader: PodInfo) -> GangInfo | None:
        """The LeaderWorkerSet group `leader` leads; None if it is no leader of a group of 2 or more."""
        key, size = _lws_key(leader), _lws_size(leader) or 0
        if key is None or size < 2 or leader.labels.get(LABEL_LWS_WORKER_INDEX) != "0":
            return None
        return cls(
            key=key,
            uid=leader.uid,
            min_member=size,
            creation_timestamp=leader.creation_timestamp,
            deletion_timestamp=leader.deletion_timestamp,
            owner=OwnerRef(
                kind="LeaderWorkerSet",
                api_group="leaderworkerset.x-k8s.io",
                name=leader.labels[LABEL_LWS_NAME],
            ),
        )

    @property
    def is_deleting(self) -> bool:
        return self.deletion_timestamp is not None

    @property
    def labelled_job_id(self) -> int | None:
        """The Slurm job id the bridge recorded on the group object, if any."""
        return ascii_int(self.labels.get(wellknown.LABEL_SLURM_JOB_ID, ""))

    @property
    def failure_policy(self) -> FailurePolicy | None:
        """The failure policy the group asks for; None for a value that is not one."""
        value = self.annotations.get(ANNOTATION_GANG_FAILURE_POLICY)
        if value is None:
            return FailurePolicy.END_GANG
        return next((p for p in FailurePolicy if p.value.lower() == value.strip().lower()), None)


# --- Membership ------------------------------------------------------------------------------------------


def scheduling_group_of(pod: Mapping[str, Any]) -> str | None:
    """A raw pod's ``spec.schedulingGroup.podGroupName`` (PodInfo does not read it yet)."""
    name = ((pod.get("spec") or {}).get("schedulingGroup") or {}).get("podGroupName")
    return str(name) if name else None


def gang_key_for(pod: PodInfo, scheduling_group: str | None = None) -> GangKey | None:
    """The gang `pod` belongs to, by the precedence in the module docstring; None for a single pod."""
    if scheduling_group:
        return GangKey(namespace=pod.namespace, kind=GangKind.WORKLOAD, name=scheduling_group)
    pod_group = pod.labels.get(LABEL_COSCHEDULING_POD_GROUP)
    if pod_group:
        return GangKey(namespace=pod.namespace, kind=GangKind.COSCHEDULING, name=pod_group)
    if (_lws_size(pod) or 0) >= 2:
        return _lws_key(pod)
    return None


def gang_key_of(pod: Mapping[str, Any]) -> GangKey | None:
    """`gang_key_for` over a raw pod (API JSON)."""
    return gang_key_for(PodInfo.from_api(pod), scheduling_group_of(pod))


def planned_gang_key(
    pod: Mapping[str, Any], workload_group: Callable[[str], Mapping[str, Any] | None]
) -> str | None:
    """The gang key a pod is planned under; None for a single pod and for a member of a Workload-API
    group with the ``basic`` policy (each such member is scheduled on its own).

    `workload_group("namespace/name")` returns the Workload-API PodGroup as cached (None: not known yet;
    the pod is then held as a gang member until the group says otherwise).
    """
    key = gang_key_of(pod)
    if key is None:
        return None
    if key.kind is GangKind.WORKLOAD:
        group = workload_group(f"{key.namespace}/{key.name}")
        if group is not None and not GangInfo.from_workload_api(group).all_or_nothing:
            return None
    return str(key)


def owner_of(gang: GangInfo, members: Sequence[PodInfo]) -> OwnerRef | None:
    """The gang's owner workload: the group's own reference, else what its first member's labels name."""
    if gang.owner is not None:
        return gang.owner
    for pod in members[:1]:
        if pod.labels.get(LABEL_JOBSET_NAME):
            return OwnerRef(kind="JobSet", api_group="jobset.x-k8s.io", name=pod.labels[LABEL_JOBSET_NAME])
        if pod.labels.get(LABEL_LWS_NAME):
            return OwnerRef(
                kind="LeaderWorkerSet", api_group="leaderworkerset.x-k8s.io", name=pod.labels[LABEL_LWS_NAME]
            )
    return None


def member_order(pods: Iterable[PodInfo]) -> list[PodInfo]:
    """Members in rank order: the LWS worker index, else the Job completion index, else the name.

    Names compare naturally ("w-2" before "w-10"). Rank order is binding order: the first member gets
    the job's first allocated node (Slurm's batch host), so a leader (LWS worker 0, index 0) lands there.
    """
    return sorted(pods, key=_rank)


def _rank(pod: PodInfo) -> tuple[int, tuple[tuple[int, int, str], ...], str]:
    index = pod.labels.get(LABEL_LWS_WORKER_INDEX) or pod.annotations.get(JOB_COMPLETION_INDEX)
    index = index or pod.labels.get(JOB_COMPLETION_INDEX)
    number = ascii_int(index) if index is not None else None
    return (number if number is not None else 2**31, _natural(pod.name), pod.uid)


_DIGIT_RUNS = re.compile(r"([0-9]+)", re.ASCII)


def _natural(name: str) -> tuple[tuple[int, int, str], ...]:
    # A run of digits is (0, its length without leading zeros, its digits): numbers compare by value
    # without int() (which refuses > 4,300 digits); (0, ...) sorts before (1, 0, text).
    parts: list[tuple[int, int, str]] = []
    for part in _DIGIT_RUNS.split(name):
        if not part:
            continue
        if _DIGIT_RUNS.fullmatch(part):
            digits = part.lstrip("0") or "0"
            parts.append((0, len(digits), digits))
        else:
            parts.append((1, 0, part))
    return tuple(parts)


# --- Helpers ---------------------------------------------------------------------------------------------


def _key(meta: Mapping[str, Any], kind: GangKind) -> GangKey:
    return GangKey(
        namespace=str(meta.get("namespace") or "default"), kind=kind, name=str(meta.get("name") or "")
    )


def _lws_key(pod: PodInfo) -> GangKey | None:
    name, index = pod.labels.get(LABEL_LWS_NAME), pod.labels.get(LABEL_LWS_GROUP_INDEX)
    number = ascii_int(index) if index is not None else None
    if not name or number is None:
        return None
    return GangKey(namespace=pod.namespace, kind=GangKind.LWS, name=f"{name}-{number}")


def _lws_size(pod: PodInfo) -> int | None:
    return ascii_int(pod.annotations.get(ANNOTATION_LWS_SIZE, ""))


def _controller_of(meta: Mapping[str, Any]) -> OwnerRef | None:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") and ref.get("name"):
            api_version = str(ref.get("apiVersion") or "")
            group = api_version.rpartition("/")[0]
            return OwnerRef(kind=str(ref["kind"]), api_group=group, name=str(ref["name"]))
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**MAX_DIGITS else None
    if isinstance(value, str):
        return ascii_int(value)
    return None


def _string_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}
