"""controller/duties.py: the share of a plan each component carries out; each event has one recorder."""

from __future__ import annotations

import pytest

from bridge.translate import JobOutcome
from bridge.wellknown import GangReason, Reason
from controller.duties import CONTROLLER_EVENTS, Duties
from controller.gang_plan import (
    BindMembers,
    DeleteMembers,
    GangAction,
    PodRef,
    RecordGroupEvent,
    SetMembersPending,
)
from controller.plan import (
    BindPod,
    CancelJob,
    DeletePod,
    PodAction,
    RecordEvent,
    SetPendingReason,
    SubmitJob,
)
from slurm_client import JobSpec

SPEC = JobSpec(name="p", partition="x")
REF = (PodRef("w-0", "u0"),)

ACTIONS: dict[str, PodAction | GangAction] = {
    "submit": SubmitJob(SPEC),
    "cancel": CancelJob(1, JobOutcome.CANCEL, "why"),
    "pending": SetPendingReason(Reason.JOB_PENDING, "waiting"),
    "bind": BindPod("n", "n", 1),
    "delete": DeletePod(Reason.JOB_CANCELLED, "scancel"),
    "members-pending": SetMembersPending(REF, GangReason.WAITING_FOR_MEMBERS, "1 of 2"),
    "bind-members": BindMembers(1, ()),
    "delete-members": DeleteMembers(REF, GangReason.MEMBER_FAILED, "failed"),
    "event-submitted": RecordEvent(Reason.JOB_SUBMITTED, "submitted"),
    "event-scheduled": RecordEvent(Reason.SCHEDULED, "bound"),
    "group-event-member-failed": RecordGroupEvent(GangReason.MEMBER_FAILED, "failed"),
    "group-event-waiting": RecordGroupEvent(GangReason.WAITING_FOR_MEMBERS, "1 of 2"),
}

EXPECTED = {  # applied by: scheduler alone, controller alone
    "submit": (True, False),
    "cancel": (True, True),
    "pending": (True, False),
    "bind": (False, True),
    "delete": (False, True),
    "members-pending": (True, False),
    "bind-members": (False, True),
    "delete-members": (False, True),
    "event-submitted": (True, False),
    "event-scheduled": (False, True),
    "group-event-member-failed": (False, True),
    "group-event-waiting": (True, False),
}


@pytest.mark.parametrize("name", list(ACTIONS), ids=list(ACTIONS))
def test_each_component_applies_its_share(name: str) -> None:
    action = ACTIONS[name]
    by_scheduler, by_controller = EXPECTED[name]
    assert Duties.of({"scheduler"}).applies(action) is by_scheduler
    assert Duties.of({"controller"}).applies(action) is by_controller
    assert Duties.of({"scheduler", "controller", "exporter"}).applies(action) is True
    assert Duties.of({"exporter"}).applies(action) is False


@pytest.mark.parametrize("reason", [*Reason, *GangReason], ids=str)
def test_every_event_reason_has_exactly_one_recorder(reason: str) -> None:
    recorders = [c for c in ("scheduler", "controller") if Duties.of({c}).records(reason)]
    assert recorders == (["controller"] if reason in CONTROLLER_EVENTS else ["scheduler"])
