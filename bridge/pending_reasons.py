"""Slurm's pending-reason codes in words a Kubernetes user understands.

A pod waiting for its Slurm job says why in its PodScheduled condition; Slurm's code
(`squeue %r`, REST `state_reason`) stays first so an admin can search for it, followed by a sentence.
Only the codes of limits and policies (QOS, association, account) get a sentence: the scheduling
ones (Resources, Priority, ...) are known words already. Unknown codes are shown as they are.
"""

from __future__ import annotations

from typing import Final

_LIMIT_WAIT: Final = "; the job starts when enough of them end"

_EXPLAINED: Final[dict[str, str]] = {
    "QOSMaxJobsPerUserLimit": "the QOS lets each user run only a limited number of jobs at once"
    + _LIMIT_WAIT,
    "QOSMaxJobsPerAccountLimit": "the QOS lets each account run only a limited number of jobs at once"
    + _LIMIT_WAIT,
    "QOSMaxSubmitJobPerUserLimit": "the QOS lets each user queue only a limited number of jobs",
    "QOSGrpJobsLimit": "the QOS allows only a limited number of running jobs in total" + _LIMIT_WAIT,
    "QOSGrpCpuLimit": "the QOS's CPUs (GrpTRES cpu) are all in use" + _LIMIT_WAIT,
    "QOSGrpMemLimit": "the QOS's memory (GrpTRES mem) is all in use" + _LIMIT_WAIT,
    "QOSGrpNodeLimit": "the QOS's nodes (GrpTRES node) are all in use" + _LIMIT_WAIT,
    "QOSGrpGRES": "the QOS's GPUs or other GRES (GrpTRES) are all in use" + _LIMIT_WAIT,
    "QOSMaxCpuPerUserLimit": "the QOS's CPUs per user (MaxTRESPerUser cpu) are all in use" + _LIMIT_WAIT,
    "QOSMaxWallDurationPerJobLimit": "its time limit is above the QOS's MaxWall",
    "QOSJobLimit": "a limit of its QOS holds it",
    "AssocMaxJobsLimit": "the account (association) lets this user run only a limited number of jobs"
    + _LIMIT_WAIT,
    "AssocGrpJobsLimit": "the account allows only a limited number of running jobs" + _LIMIT_WAIT,
    "AssocGrpCpuLimit": "the account's CPUs (GrpTRES cpu) are all in use" + _LIMIT_WAIT,
    "AssocGrpMemLimit": "the account's memory (GrpTRES mem) is all in use" + _LIMIT_WAIT,
    "AssocGrpNodeLimit": "the account's nodes (GrpTRES node) are all in use" + _LIMIT_WAIT,
    "AssocMaxWallDurationPerJobLimit": "its time limit is above the account's MaxWall",
    "InvalidAccount": "its account is not valid for the job's user",
    "InvalidQOS": "its QOS is not valid for the job's user and account",
}


def describe_pending_reason(code: str) -> str:
    """``Code (sentence)`` for a known Slurm pending reason; the code alone otherwise."""
    sentence = _EXPLAINED.get(code)
    return f"{code} ({sentence})" if sentence else code


def pending_detail(state_reason: str | None) -> str:
    """``: <reason explained>`` for a pending message, or "" when Slurm gives no reason."""
    if not state_reason or state_reason == "None":
        return ""
    return f": {describe_pending_reason(state_reason)}"
