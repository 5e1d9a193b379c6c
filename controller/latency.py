"""Start-up latency a site can alert on: pod or gang created → job submitted → job started → pod bound.

Histograms on an injected registry; the durations are computed by the pure functions below (times from
Kubernetes and Slurm are whole seconds, so a duration may round to 0; it never goes negative).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300)


def seconds_between(since: datetime | None, now: datetime) -> float | None:
    """Seconds from `since` to `now` (naive times are UTC), never below 0; None when `since` is unknown."""
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return max(0.0, (now - since).total_seconds())


def gang_created(creation_times: Iterable[datetime | None]) -> datetime | None:
    """When a gang became whole: the creation of its newest member (None when no member says)."""
    known = [t if t.tzinfo is not None else t.replace(tzinfo=UTC) for t in creation_times if t is not None]
    return max(known, default=None)


class StartLatency:
    """created → submitted, job start → bound, created → bound, for one kind ("pod" or "gang")."""

    def __init__(self, registry: CollectorRegistry | None, kind: str, what: str) -> None:
        self.created_to_submitted = Histogram(
            f"slurm_bridge_{kind}_created_to_submitted_seconds",
            f"From {what}'s creation to the submit of its placeholder Slurm job.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.started_to_bound = Histogram(
            "slurm_bridge_job_started_to_pod_bound_seconds"
            if kind == "pod"
            else f"slurm_bridge_{kind}_job_started_to_bound_seconds",
            f"From the placeholder job's start in Slurm (whole seconds) to {what}'s binding"
            + (" (its last member)" if kind == "gang" else "")
            + ".",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.created_to_bound = Histogram(
            f"slurm_bridge_{kind}_created_to_bound_seconds",
            f"From {what}'s creation to its binding"
            + (" (its last member)" if kind == "gang" else "")
            + ": what a user waits for.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def submitted(self, created: datetime | None, now: datetime) -> None:
        if (seconds := seconds_between(created, now)) is not None:
            self.created_to_submitted.observe(seconds)

    def bound(self, created: datetime | None, started: datetime | None, now: datetime) -> None:
        if (seconds := seconds_between(started, now)) is not None:
            self.started_to_bound.observe(seconds)
        if (seconds := seconds_between(created, now)) is not None:
            self.created_to_bound.observe(seconds)
