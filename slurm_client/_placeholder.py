"""The batch script used where a job must hold an allocation without running anything.

On API versions without EXTERNAL_JOB (before v0.0.43) a "placeholder" job needs a batch script.
This one sleeps in the background and waits, so that the shell handles a signal at once:

- USR1 ends it with exit code 0 (Slurm records COMPLETED 0:0);
- USR2 ends it with the exit code written at the end of the job's comment as ``exit=N``
  (FAILED N:0), or 1 when the comment carries none or cannot be read.

A batch script learns nothing from a signal but its number, so the exit code travels in the one job
field the job's owner may change on every supported Slurm (REST v0.0.38 has no ``extra`` and
``admin_comment`` needs an operator): the client appends `` exit=N`` to the comment, then signals
USR2, and the script reads its own comment with ``squeue -j $SLURM_JOB_ID -o %k`` (slurmstepd gives
the job SLURM_CONF; ``squeue`` works as the job's user with munge and with auth/slurm).
See `SlurmClient.end_placeholder`. A plain cancel ends it CANCELLED, a time limit TIMEOUT.
"""

from __future__ import annotations

import re
from typing import Final

PLACEHOLDER_SLEEP_SECONDS = 3600
# The suffix the client appends to a placeholder's comment before USR2 (its last word).
_EXIT_SUFFIX: Final = re.compile(r" exit=(?P<code>[0-9]{1,3})\Z")
SUCCESS_SIGNAL: Final = "USR1"
FAILURE_SIGNAL: Final = "USR2"


def placeholder_script(sleep_seconds: int = PLACEHOLDER_SLEEP_SECONDS) -> str:
    """A POSIX sh batch script: USR1 → exit 0, USR2 → exit with the comment's code (default 1)."""
    if sleep_seconds < 1:
        raise ValueError("sleep_seconds must be positive")
    return (
        "#!/bin/sh\n"
        "# slurm_client placeholder: holds the allocation, launches nothing.\n"
        "# USR1 -> exit 0 (COMPLETED), USR2 -> exit N from the comment's last word exit=N (FAILED N:0),\n"
        "# or exit 1 when there is none.\n"
        "child=\n"
        "finish() {\n"
        '  [ -n "$child" ] && kill "$child" 2>/dev/null\n'
        '  exit "$1"\n'
        "}\n"
        "failed() {\n"
        '  code=$(squeue -h -j "$SLURM_JOB_ID" -o %k 2>/dev/null |'
        " sed -n 's/.* exit=\\([0-9][0-9]*\\)$/\\1/p' | head -n 1)\n"
        '  case "$code" in [0-9]|[0-9][0-9]|[0-9][0-9][0-9]) ;; *) code=1 ;; esac\n'
        '  [ "$code" -le 255 ] || code=1\n'
        '  finish "$code"\n'
        "}\n"
        "trap 'finish 0' USR1\n"
        "trap failed USR2\n"
        "while :; do\n"
        f"  sleep {sleep_seconds} &\n"
        "  child=$!\n"
        '  wait "$child"\n'
        "done\n"
    )


def split_exit_code(comment: str) -> tuple[str, int | None]:
    """The comment without a trailing `` exit=N`` and N (None when there is no such suffix)."""
    match = _EXIT_SUFFIX.search(comment)
    if match is None:
        return comment, None
    return comment[: match.start()], int(match.group("code"))


def with_exit_code(comment: str | None, exit_code: int) -> str:
    """`comment` ending in `` exit=N`` (replacing an earlier one), for a placeholder's USR2."""
    if not 0 <= exit_code <= 255:
        raise ValueError(f"exit code {exit_code} is not in 0..255")
    base, _ = split_exit_code(comment or "")
    return f"{base} exit={exit_code}"
