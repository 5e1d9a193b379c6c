"""When the job index may believe a full job list (pure; `controller/slurm_jobs.py` acts on it).

A full list that drops all, or a large share, of the bridge's active jobs at once is far more likely
a wrong answer (a malformed 200, a slurmctld reset or another cluster behind the URL) than every job
really ending unseen: believed, it would delete every bound pod as "job vanished". Such a list is
held back and read again; only a second list that agrees is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from slurm_client import Job

# A full list that drops at least this share of the bridge's active jobs needs a second read.
DEFAULT_VANISH_SHARE = 0.5
# A full list without update_time this often, whatever the polls said (a safety net for a change the
# update_time cursor missed).
DEFAULT_FULL_RELIST_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class VanishCheck:
    """What a full list does to the bridge's active jobs: how many were known, which are missing."""

    known_active: int
    vanished: tuple[int, ...]
    suspicious: bool

    def describe(self) -> str:
        shown = ", ".join(str(i) for i in self.vanished[:10])
        more = f" and {len(self.vanished) - 10} more" if len(self.vanished) > 10 else ""
        return f"{len(self.vanished)} of {self.known_active} active bridge jobs missing ({shown}{more})"


def check_vanished(
    before: Mapping[int, Job],
    after_ids: Collection[int],
    is_ours: Callable[[Job], bool],
    *,
    share: float = DEFAULT_VANISH_SHARE,
) -> VanishCheck:
    """Compare the index with a fresh full list.

    Only the bridge's jobs that were still active count: a finished job leaves the list when Slurm
    purges it (MinJobAge), which is normal, even for many at once. The list is suspicious when at least
    `share` of the active ones (and at least one) are missing.
    """
    active = [job_id for job_id, job in before.items() if not job.state.is_finished and is_ours(job)]
    vanished = tuple(sorted(job_id for job_id in active if job_id not in after_ids))
    threshold = max(1, math.ceil(share * len(active)))
    return VanishCheck(known_active=len(active), vanished=vanished, suspicious=len(vanished) >= threshold)


def full_relist_due(now: float, last_full: float, every_seconds: float) -> bool:
    """True when the last full (update_time-less) list is at least `every_seconds` old."""
    return now - last_full >= every_seconds
