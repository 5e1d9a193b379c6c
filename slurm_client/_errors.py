"""One exception tree for everything the client raises.

    SlurmError
    ├── SlurmTransportError          no usable HTTP answer: connect/read failures, timeouts
    │   └── SlurmTimeout
    └── SlurmApiError(status, errors) slurmrestd answered, and the answer is a failure
        ├── NotFound
        │   ├── JobNotFound
        │   ├── NodeNotFound
        │   └── PartitionNotFound
        ├── AuthError                 bad/expired token, or not allowed
        ├── InvalidRequest            Slurm rejected what we asked
        │   └── JobAlreadyFinished
        ├── ResourcesUnavailable      an immediate allocation could not start now
        ├── UnsupportedOperation      this API version cannot do it
        ├── ServerBusy                429/503, or slurmrestd could not reach slurmctld
        └── MalformedResponse         the answer is not the JSON we expect
            └── MissingCollection     a 200 answer without its list (or with null): never "empty"

Slurm reports most failures inside an HTTP 200 body (`errors[]`), so the class is chosen from the
Slurm error NUMBER (slurm/slurm_errno.h), never from message text; the HTTP status only decides
when there is no number. Messages carry the method, path, status and Slurm's own error strings,
never request headers (the token lives there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlurmErrorEntry:
    """One entry of a slurmrestd `errors[]` (or `warnings[]`) list."""

    number: int | None
    error: str = ""
    description: str = ""
    source: str = ""

    def __str__(self) -> str:
        text = "; ".join(part for part in (self.error, self.description) if part) or "(no message)"
        return f"[{self.number}] {text}" if self.number is not None else text


class SlurmError(Exception):
    """Base of every error raised by slurm_client."""


class SlurmTransportError(SlurmError):
    """No usable HTTP answer. `sent` is False only when the request surely never reached the server."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class SlurmTimeout(SlurmTransportError):
    """A connect, read, write or pool timeout."""


class SlurmApiError(SlurmError):
    """slurmrestd answered with a failure. `status` is None for failures decided client-side."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: Iterable[SlurmErrorEntry] = (),
    ) -> None:
        self.status = status
        self.errors: tuple[SlurmErrorEntry, ...] = tuple(errors)
        detail = "; ".join(str(e) for e in self.errors)
        full = message
        if status is not None:
            full += f" (HTTP {status})"
        if detail:
            full += f": {detail}"
        super().__init__(full)

    @property
    def error_numbers(self) -> tuple[int, ...]:
        return tuple(e.number for e in self.errors if e.number is not None)


class NotFound(SlurmApiError):
    """The job, node or partition named in the request does not exist (any more)."""


class JobNotFound(NotFound):
    pass


class NodeNotFound(NotFound):
    pass


class PartitionNotFound(NotFound):
    pass


class AuthError(SlurmApiError):
    """The token is missing, invalid or expired, or the user may not do this."""


class InvalidRequest(SlurmApiError):
    """Slurm refused the request as asked (bad field, limit, state transition...)."""


class JobAlreadyFinished(InvalidRequest):
    """The job has already ended, so it can no longer be changed."""


class ResourcesUnavailable(SlurmApiError):
    """An allocation asked to start immediately could not get its resources now."""


class UnsupportedOperation(SlurmApiError):
    """The server's API version (or its configuration) cannot perform this operation."""


class ServerBusy(SlurmApiError):
    """Try again later: rate limited, unavailable, or slurmrestd could not reach slurmctld."""


class MalformedResponse(SlurmApiError):
    """The body could not be decoded as the JSON shape this API version promises."""


class MissingCollection(MalformedResponse):
    """A successful answer lacks the list it must carry (`jobs`, `nodes`, ...) or has it null.

    Never read as an empty list: that would make everything look gone at once.
    """


# --- Translation of slurmrestd answers into the tree above --------------------------------------

# What a request is about, so that "invalid job id" on GET job/5 becomes JobNotFound while the same
# number on a submit stays an InvalidRequest.
TARGET_JOB = "job"
TARGET_NODE = "node"
TARGET_PARTITION = "partition"

_NOT_FOUND_NUMBERS: dict[int, tuple[str, type[NotFound]]] = {
    2017: (TARGET_JOB, JobNotFound),  # ESLURM_INVALID_JOB_ID
    2018: (TARGET_NODE, NodeNotFound),  # ESLURM_INVALID_NODE_NAME
    2000: (TARGET_PARTITION, PartitionNotFound),  # ESLURM_INVALID_PARTITION_NAME
}
_AUTH_NUMBERS = frozenset(
    # PROTOCOL_AUTHENTICATION_ERROR, ACCESS_DENIED, REST_AUTH_FAIL, and USER_ID_MISSING, which
    # slurmctld answers when a non-operator asks for an admin-only change (e.g. node update).
    {1007, 2002, 2010, 9008} | set(range(6000, 6012))  # ESLURM_AUTH_*
)
_UNSUPPORTED_NUMBERS = frozenset({2036, 2037, 9007})  # NOT_SUPPORTED, DISABLED, REST_UNKNOWN_URL_METHOD
# slurmrestd could not talk to slurmctld, or slurmctld is not the one in charge.
_BUSY_NUMBERS = frozenset(
    {1001, 1002, 1003, 1004, 1019, 1020, 1021, 1022, 1023, 1024, 1025}
    | set(range(1800, 1806))
    | {2027, 2131, 5004}  # IN_STANDBY_MODE, IN_STANDBY_USE_BACKUP, SOCKET_IMPL_TIMEOUT
)
# Numbers that prove slurmctld never acted on the request: a submit may be sent again.
NOT_PROCESSED_NUMBERS = frozenset({1001, 1800, 2027, 2131})
# "Invalid query" / "empty result" about a named job, node or partition mean it is not there:
# 24.11 answers GET partition/<unknown> with 9000 (HTTP 422).
_EMPTY_RESULT_NUMBERS = frozenset({9000, 9003})  # REST_INVALID_QUERY, REST_EMPTY_RESULT
ALREADY_DONE = 2021  # ESLURM_ALREADY_DONE
JOB_FINISHED = 2084  # ESLURM_JOB_FINISHED: 22.05 answers a job update of a finished job with it
JOB_HELD = 2042  # ESLURM_JOB_HELD: a harmless note on a submit with hold=true
CAN_NOT_START_IMMEDIATELY = 2078
# SLURM_ERROR: what v0.0.38 (22.05) reports for any failed slurmctld call, including a token
# slurmctld refused (e.g. signed with another key) and an unreachable slurmctld.
UNSPECIFIED = -1
_UNSPECIFIED_HINT = (
    " — slurmctld refused or failed the call without saying why; on REST v0.0.38 this is what a "
    "token signed with another key, or an unreachable slurmctld, looks like"
)


_NOT_FOUND_BY_TARGET: dict[str, type[NotFound]] = {
    TARGET_JOB: JobNotFound,
    TARGET_NODE: NodeNotFound,
    TARGET_PARTITION: PartitionNotFound,
}


def _class_for_number(number: int, target: str | None, lookup: bool) -> type[SlurmApiError]:
    if number in _EMPTY_RESULT_NUMBERS and lookup and target is not None:
        return _NOT_FOUND_BY_TARGET[target]
    if number in _NOT_FOUND_NUMBERS:
        kind, cls = _NOT_FOUND_NUMBERS[number]
        return cls if kind == target else InvalidRequest
    if number in _AUTH_NUMBERS:
        return AuthError
    if number in _UNSUPPORTED_NUMBERS:
        return UnsupportedOperation
    if number in _BUSY_NUMBERS:
        return ServerBusy
    if number in (ALREADY_DONE, JOB_FINISHED):
        return JobAlreadyFinished
    if number == CAN_NOT_START_IMMEDIATELY:
        return ResourcesUnavailable
    if 2000 <= number < 3000 or 9000 <= number < 10000:
        return InvalidRequest
    return SlurmApiError


def _class_for_status(status: int, target: str | None) -> type[SlurmApiError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return _NOT_FOUND_BY_TARGET[target] if target is not None else UnsupportedOperation
    if status in (405, 501):
        return UnsupportedOperation
    if status in (408, 429, 502, 503, 504):
        return ServerBusy
    if status in (400, 413, 415, 422):
        return InvalidRequest
    return SlurmApiError


def error_for_reply(
    *,
    what: str,
    status: int,
    errors: tuple[SlurmErrorEntry, ...],
    target: str | None,
    benign: frozenset[int] = frozenset(),
    lookup: bool = False,
) -> SlurmApiError | None:
    """The exception a reply stands for, or None when it is a success.

    Any `errors[]` entry not listed in `benign` makes the reply a failure, even with HTTP 200 and
    even without an error number: an unexplained error is never read as success. `lookup` marks a
    GET of one named object, where an unexplained failure means the object was not delivered.
    """
    significant = tuple(e for e in errors if e.number is None or e.number not in benign)
    if not significant and 200 <= status < 300:
        return None
    cls: type[SlurmApiError] = SlurmApiError
    for entry in significant:
        if entry.number:
            candidate = _class_for_number(entry.number, target, lookup)
            if candidate is not SlurmApiError:
                cls = candidate
                break
    if cls is SlurmApiError and any(e.number == UNSPECIFIED for e in significant):
        return SlurmApiError(what + _UNSPECIFIED_HINT, status=status, errors=significant)
    if cls is SlurmApiError and not 200 <= status < 300:
        cls = _class_for_status(status, target)
    elif cls is SlurmApiError and lookup and target is not None:
        # 24.11+ answer GET node/<unknown> with HTTP 200 and an error numbered 0 ("No error",
        # "Failure to query node"): whatever it is, the named object was not delivered.
        cls = _NOT_FOUND_BY_TARGET[target]
    return cls(what, status=status, errors=significant or errors)


def was_not_processed(exc: SlurmError) -> bool:
    """True when the failure proves slurmctld never acted on the request (safe to send again)."""
    if isinstance(exc, SlurmTransportError):
        return not exc.sent
    if isinstance(exc, ServerBusy):
        return exc.status == 429 or bool(set(exc.error_numbers) & NOT_PROCESSED_NUMBERS)
    return False


def is_transient(exc: SlurmError) -> bool:
    """True for failures worth retrying when the request is idempotent."""
    if isinstance(exc, SlurmTransportError | ServerBusy | MalformedResponse):
        return True
    # A bare 5xx with no Slurm error number (slurmrestd had a hiccup), or v0.0.38's -1, which is
    # also how it reports an unreachable slurmctld.
    return (
        type(exc) is SlurmApiError
        and exc.status is not None
        and exc.status >= 500
        and set(exc.error_numbers) <= {UNSPECIFIED}
    )
