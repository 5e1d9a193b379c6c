"""The effects the pod and gang executors have on pods and Slurm jobs, each written once.

Planners decide (controller/plan.py, controller/gang_plan.py); executors walk the plan and call these.
Every effect is idempotent, acts only on the pod incarnation (UID) the plan saw, and treats "already
gone" as done. A failure raises: the work queue retries the whole key (controller/runtime.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from bridge.wellknown import (
    ANNOTATION_SLURM_NODE,
    CONDITION_DISRUPTION_TARGET,
    CONDITION_POD_SCHEDULED,
    FINALIZER,
    LABEL_SLURM_JOB_ID,
    TAINT_MANAGED_NODE,
    Reason,
)
from controller.crash_points import NO_CRASH, CrashPoints, Scope, Step
from controller.eviction import evict_pod
from controller.plan import CancelJob
from controller.ports import Events, JobIndex, JobSubmitter, PodWriter
from controller.runtime import RetryLater
from kube_client import PODS, KubeObject, NotFound, PatchType
from slurm_client import (
    AuthError,
    InvalidRequest,
    JobNotFound,
    JobSpec,
    SlurmError,
    SlurmTransportError,
)

log = logging.getLogger(__name__)

# A job Slurm refused (unknown partition or account, impossible size, ...) is asked for again this often:
# the user or the Slurm admin may fix it; a fixed annotation wakes the pod at once anyway.
REFUSED_RETRY_SECONDS = 60.0

# Tells the pods waiting on a submit why it did not happen: (reason, message).
TellPending = Callable[[Reason, str], Awaitable[None]]
# Submit failures Slurm decided (not a server that failed): said in a Warning event too.
SUBMIT_REFUSALS: frozenset[str] = frozenset({Reason.INVALID_JOB_OPTIONS, Reason.SLURM_ACCESS_DENIED})


class PodEffects:
    def __init__(
        self,
        *,
        kube: PodWriter,
        slurm: JobSubmitter,
        jobs: JobIndex,
        events: Events,
        scope: Scope = Scope.POD,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        self._kube = kube
        self._slurm = slurm
        self._jobs = jobs
        self._events = events
        self._scope = scope  # pods or gangs: names the kill points (controller/crash_points.py)
        self._crash = crash

    def _reach(self, step: Step) -> None:
        self._crash.reach(self._scope, step)

    # --- Slurm ----------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, *, what: str, tell: TellPending, errors: Counter) -> int:
        """Submit the placeholder job; returns its id, recorded in the job index (write-through).

        Never submits blindly twice: while an earlier submit's outcome is unknown, or after one whose
        outcome is unknown, it waits for the next poll of Slurm's job list.
        """
        if not self._jobs.settled:
            raise RetryLater("an earlier submit may have created a job; waiting for the next poll")
        self._reach(Step.BEFORE_SUBMIT)
        try:
            result = await self._slurm.submit_job(spec)
        except InvalidRequest as error:
            errors.inc()
            await tell(Reason.INVALID_JOB_OPTIONS, f"Slurm refused the {what}: {error}")
            raise RetryLater(f"Slurm refused the {what}: {error}", after=REFUSED_RETRY_SECONDS) from error
        except AuthError as error:
            # Not "unavailable": nothing heals by itself until the token, key or association is fixed.
            # Refused before slurmctld acted, so the outcome is known: no job.
            errors.inc()
            said = (
                f"Slurm refused the bridge's credentials or its right to submit ({error}); "
                "check the bridge's token or JWT key and its Slurm user's associations; retrying"
            )
            await tell(Reason.SLURM_ACCESS_DENIED, said)
            # backoff, not the refusal's minute: a token rotated a moment late heals on the next try
            raise RetryLater(f"Slurm denied the {what}: {error}") from error
        except SlurmError as error:
            errors.inc()
            if not (isinstance(error, SlurmTransportError) and not error.sent):
                self._jobs.submit_outcome_unknown()  # it may exist: never submit blindly again
            await tell(Reason.SLURM_UNAVAILABLE, f"cannot submit to Slurm ({error}); retrying")
            raise RetryLater(f"cannot submit to Slurm: {error}") from error
        except asyncio.CancelledError:
            # Cut short (the reconcile deadline, a lost Lease, shutdown) with the request perhaps sent.
            self._jobs.submit_outcome_unknown()
            raise
        self._jobs.record_submitted(result.job_id, spec)
        self._reach(Step.AFTER_SUBMIT)
        return result.job_id

    async def end_job(self, action: CancelJob) -> None:
        """End a placeholder job as planned: told the pod's exit code, or cancelled; a job already gone
        from slurmctld counts as ended."""
        self._reach(Step.BEFORE_END_JOB)
        try:
            if action.exit_code is not None:
                await self._slurm.end_placeholder(action.job_id, action.exit_code, comment=action.comment)
            else:
                await self._slurm.cancel_job(action.job_id)
        except JobNotFound:
            pass
        self._reach(Step.AFTER_END_JOB)
        self._jobs.record_ended(action.job_id)

    async def cancel_orphans(self, doomed: Sequence[CancelJob], what: str) -> int:
        """Cancel the planned orphan jobs; returns how many were planned. A job already gone counts as
        done; any other failure is logged and left for the next sweep (a sweep never ends the process)."""
        for cancel in doomed:
            self._reach(Step.BEFORE_ORPHAN_CANCEL)
            try:
                await self._slurm.cancel_job(cancel.job_id)
            except JobNotFound:
                continue
            except SlurmError as error:
                self._jobs.count_orphan_cancel_failure()
                log.warning(
                    "cancelling orphan %s Slurm job %d failed (tried again next sweep): %s",
                    what,
                    cancel.job_id,
                    error,
                )
                continue
            log.warning("cancelled orphan %s Slurm job %d: %s", what, cancel.job_id, cancel.why)
            self._reach(Step.AFTER_ORPHAN_CANCEL)
        if doomed:
            self._jobs.poke()
        return len(doomed)

    # --- pods -----------------------------------------------------------------------------------------

    async def prepare(self, pod: KubeObject, job_id: int | None) -> None:
        """One patch: the bridge finalizer, the job-id label (when known) and the managed-node toleration.

        metadata.uid is a precondition, so a same-named successor of the pod is never patched.
        """
        namespace, name, uid = _identity(pod)
        metadata: dict[str, Any] = {"finalizers": [FINALIZER]}
        if uid is not None:
            metadata["uid"] = uid
        if job_id is not None:
            metadata["labels"] = {LABEL_SLURM_JOB_ID: str(job_id)}
        patch: dict[str, Any] = {"metadata": metadata}
        if (tolerations := with_managed_node_toleration(pod)) is not None:
            patch["spec"] = {"tolerations": tolerations}
        # strategic merge: the finalizer list is merged; tolerations (no merge key) are sent whole
        self._reach(Step.BEFORE_PREPARE)
        await self._kube.patch(PODS, name, patch, namespace=namespace, patch_type=PatchType.STRATEGIC)
        self._reach(Step.AFTER_PREPARE)

    async def set_condition(
        self, pod: KubeObject, condition_type: str, status: str, reason: str, message: str
    ) -> bool:
        """Upsert one condition; False when the pod is gone."""
        namespace, name, _uid = _identity(pod)
        try:
            await self._kube.set_pod_condition(
                namespace,
                name,
                condition_type=condition_type,
                status=status,
                reason=reason,
                message=message,
                current=pod,
            )
        except NotFound:
            return False
        return True

    async def say_pending(self, pod: KubeObject, reason: str, message: str) -> bool:
        return await self.set_condition(pod, CONDITION_POD_SCHEDULED, "False", reason, message)

    async def bind(self, pod: KubeObject, node_name: str, slurm_node: str) -> None:
        namespace, name, uid = _identity(pod)
        annotations = {ANNOTATION_SLURM_NODE: slurm_node}
        self._reach(Step.BEFORE_BIND)
        await self._kube.bind_pod(namespace, name, node_name, uid=uid, annotations=annotations)
        self._reach(Step.AFTER_BIND)

    async def delete(self, pod: KubeObject, reason: str, message: str, *, evict: bool = False) -> bool:
        """DisruptionTarget=True (reason, message), as kube-scheduler marks a preempted pod, then delete
        that incarnation, or evict it (controller/eviction.py). False when the pod is gone already."""
        self._reach(Step.BEFORE_DELETE)
        if not await self.set_condition(pod, CONDITION_DISRUPTION_TARGET, "True", reason, message):
            return False
        self._reach(Step.AFTER_DISRUPTION_CONDITION)
        namespace, name, uid = _identity(pod)
        removed = True
        if evict:
            removed = await evict_pod(self._kube, namespace, name, uid, reason)
        else:
            await self._kube.delete_pod(namespace, name, uid=uid)
        self._reach(Step.AFTER_DELETE)
        return removed

    async def release(self, pod: KubeObject) -> None:
        """Remove the bridge's finalizer."""
        namespace, name, _uid = _identity(pod)
        self._reach(Step.BEFORE_RELEASE)
        await self._kube.remove_finalizer(PODS, name, FINALIZER, namespace=namespace, current=pod)
        self._reach(Step.AFTER_RELEASE)

    async def record(self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None:
        if warning:
            await self._events.warning(involved, reason, message)
        else:
            await self._events.normal(involved, reason, message)


def with_managed_node_toleration(pod: KubeObject) -> list[dict[str, Any]] | None:
    """The pod's tolerations plus one for the bridged nodes' taint; None when it already tolerates it.

    Tolerations may be added to an existing pod (never removed), so the bridge adds its own instead of
    asking every user to write it.
    """
    existing = list((pod.get("spec") or {}).get("tolerations") or [])
    for toleration in existing:
        if toleration.get("operator") == "Exists" and not toleration.get("key"):
            return None  # tolerates everything
        if toleration.get("key") == TAINT_MANAGED_NODE:
            return None
    return [*existing, {"key": TAINT_MANAGED_NODE, "operator": "Exists"}]


def _identity(pod: Mapping[str, Any]) -> tuple[str, str, str | None]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta["name"]), meta.get("uid") or None
