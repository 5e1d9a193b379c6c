"""Who does what when the scheduler shim and the workload controller run as separate components.

Both walk the same plans (controller/plan.py, controller/gang_plan.py); each applies only its own kinds
of action and records only the events that describe what it does, so the two can run in one process or
in two without doing anything twice. This is the one place that says so.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bridge.wellknown import GangReason, Reason
from controller.gang_plan import (
    AddMemberFinalizers,
    BindMembers,
    DeleteMembers,
    GangAction,
    LabelGroup,
    RecordGroupEvent,
    RecordPodEvent,
    RemoveMemberFinalizers,
    SetGroupCondition,
    SetGroupStatus,
    SetMembersPending,
)
from controller.plan import (
    AddFinalizerAndLabel,
    BindPod,
    CancelJob,
    DeletePod,
    PodAction,
    RecordEvent,
    RemoveFinalizer,
    SetPendingReason,
    SubmitJob,
)

SCHEDULER = "scheduler"
CONTROLLER = "controller"

_SCHEDULER_ACTIONS: frozenset[type[object]] = frozenset(
    {
        SubmitJob,
        CancelJob,
        AddFinalizerAndLabel,
        SetPendingReason,
        RecordEvent,
        AddMemberFinalizers,
        SetMembersPending,
        SetGroupStatus,
        SetGroupCondition,
        LabelGroup,
        RecordGroupEvent,
        RecordPodEvent,
    }
)
_CONTROLLER_ACTIONS: frozenset[type[object]] = frozenset(
    {
        BindPod,
        CancelJob,
        DeletePod,
        RemoveFinalizer,
        RecordEvent,
        AddFinalizerAndLabel,
        BindMembers,
        DeleteMembers,
        RemoveMemberFinalizers,
        AddMemberFinalizers,
        SetGroupStatus,
        SetGroupCondition,
        LabelGroup,
        RecordGroupEvent,
        RecordPodEvent,
    }
)

# Events describing what the controller does (binds, deletes, releases jobs); every other reason is the
# scheduler's (submits, why a pod or gang waits).
CONTROLLER_EVENTS: frozenset[str] = frozenset(
    {
        Reason.SCHEDULED,
        Reason.JOB_RELEASED,
        Reason.NODE_NOT_IN_KUBERNETES,
        Reason.JOB_COMPLETED,
        Reason.JOB_CANCELLED,
        Reason.JOB_FAILED,
        Reason.JOB_TIMEOUT,
        Reason.JOB_PREEMPTED,
        Reason.JOB_NODE_FAIL,
        Reason.JOB_BOOT_FAIL,
        Reason.JOB_DEADLINE,
        Reason.JOB_OUT_OF_MEMORY,
        Reason.JOB_VANISHED,
        Reason.JOB_REQUEUED,
        GangReason.MEMBER_FAILED,
        GangReason.MEMBER_DELETED,
        GangReason.MEMBER_LOST,
        GangReason.GROUP_DELETED,
        GangReason.ALLOCATION_TOO_SMALL,
    }
)

_EVENT_ACTIONS = (RecordEvent, RecordGroupEvent, RecordPodEvent)


@dataclass(frozen=True)
class Duties:
    """The share of every plan that the given components ("scheduler", "controller") carry out."""

    components: frozenset[str]

    @classmethod
    def of(cls, components: Collection[str]) -> Duties:
        return cls(frozenset(components) & {SCHEDULER, CONTROLLER})

    def applies(self, action: PodAction | GangAction) -> bool:
        if isinstance(action, _EVENT_ACTIONS):
            return self.records(action.reason)
        kinds: set[type[object]] = set()
        if SCHEDULER in self.components:
            kinds |= _SCHEDULER_ACTIONS
        if CONTROLLER in self.components:
            kinds |= _CONTROLLER_ACTIONS
        return type(action) in kinds

    def records(self, reason: str) -> bool:
        """Whether these components record an event with this reason (each reason has one owner)."""
        by_controller = reason in CONTROLLER_EVENTS
        return (CONTROLLER in self.components and by_controller) or (
            SCHEDULER in self.components and not by_controller
        )
