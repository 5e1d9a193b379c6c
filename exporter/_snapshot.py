"""What the poller publishes and the collector reads: immutable values, replaced whole.

The poller runs on the event loop and the HTTP server scrapes from its own thread, so nothing
here is ever mutated after it is built: a refresh builds a new `PollerStatus` and swaps one
attribute, which a scrape reads atomically.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from slurm_client import Diag, Job, Node, Partition


class Operation(enum.StrEnum):
    """One slurmrestd read that a refresh makes."""

    JOBS = "jobs"
    NODES = "nodes"
    PARTITIONS = "partitions"
    DIAG = "diag"


class ErrorKind(enum.StrEnum):
    """Why a slurmrestd read failed (the `kind` label of the error counter)."""

    TRANSPORT = "transport"  # no usable HTTP answer (refused, reset, DNS, ...)
    TIMEOUT = "timeout"  # the client's or the refresh's deadline passed
    AUTH = "auth"  # token refused or not allowed
    BUSY = "busy"  # 429/503, or slurmrestd could not reach slurmctld
    MALFORMED = "malformed"  # an answer that is not the JSON the client expects
    API = "api"  # any other failure Slurm reported
    UNEXPECTED = "unexpected"  # anything else (a bug, or garbage the client did not catch)


class JobPoll(enum.StrEnum):
    """How the jobs read of a refresh was answered."""

    FULL = "full"  # a full list (no update_time: first poll or periodic relist)
    CHANGED = "changed"  # update_time poll: something changed, a full list came back
    NOT_MODIFIED = "not_modified"  # update_time poll: nothing changed (HTTP 304); previous jobs reused
    SHARED = "shared"  # no read: the jobs another reader of Slurm in the same process keeps fresh


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Slurm's state as read by one successful refresh."""

    jobs: tuple[Job, ...]
    nodes: tuple[Node, ...]
    partitions: tuple[Partition, ...]
    diag: Diag
    taken_at: float  # wall clock (unix seconds) when the refresh began: the data is at least this new
    taken_monotonic: float  # the same moment on the monotonic clock, to measure age


def _frozen(counts: Mapping[str, int] | None = None) -> Mapping[str, int]:
    return MappingProxyType(dict(counts or {}))


@dataclass(frozen=True, slots=True)
class PollerStatus:
    """Everything a scrape needs: the last good snapshot and how refreshing has gone."""

    snapshot: Snapshot | None = None
    last_ok: bool | None = None  # outcome of the latest refresh; None before the first one ends
    last_duration: float | None = None  # seconds the latest refresh took, success or not
    last_error: str | None = None  # what the latest failed refresh ran into (for logs and tests)
    refreshes: Mapping[str, int] = field(default_factory=_frozen)  # "success"/"failure" -> count
    # "operation/kind" -> count, e.g. "nodes/transport"
    errors: Mapping[str, int] = field(default_factory=_frozen)
    job_polls: Mapping[str, int] = field(default_factory=_frozen)  # JobPoll value -> count

    def error_count(self, operation: Operation, kind: ErrorKind) -> int:
        return self.errors.get(error_key(operation, kind), 0)


def error_key(operation: Operation, kind: ErrorKind) -> str:
    return f"{operation.value}/{kind.value}"


def frozen_counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only copy, safe to hand to another thread."""
    return _frozen(counts)
