"""The batch script used where a job must hold an allocation without running anything.

On API versions without EXTERNAL_JOB (before v0.0.43) a "placeholder" job needs a batch script.
This one sleeps in the background and waits, so that the shell handles a signal at once:
USR1 ends it with exit code 0 (Slurm records COMPLETED 0:0) and USR2 with exit code 1 (FAILED 1:0),
which lets the bridge report the pod's real outcome (cancel_job(job, "USR1", batch_only=True)).
A plain cancel ends it CANCELLED, a time limit TIMEOUT.
"""

from __future__ import annotations

PLACEHOLDER_SLEEP_SECONDS = 3600


def placeholder_script(sleep_seconds: int = PLACEHOLDER_SLEEP_SECONDS) -> str:
    """A POSIX sh batch script: USR1 → exit 0, USR2 → exit 1, otherwise sleep forever."""
    if sleep_seconds < 1:
        raise ValueError("sleep_seconds must be positive")
    return (
        "#!/bin/sh\n"
        "# slurm_client placeholder: holds the allocation, launches nothing.\n"
        "# USR1 -> exit 0 (COMPLETED), USR2 -> exit 1 (FAILED).\n"
        "child=\n"
        "finish() {\n"
        '  [ -n "$child" ] && kill "$child" 2>/dev/null\n'
        '  exit "$1"\n'
        "}\n"
        "trap 'finish 0' USR1\n"
        "trap 'finish 1' USR2\n"
        "while :; do\n"
        f"  sleep {sleep_seconds} &\n"
        "  child=$!\n"
        '  wait "$child"\n'
        "done\n"
    )
