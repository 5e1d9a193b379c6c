"""Translating slurmrestd answers into the exception tree: by error number first, status second."""

from __future__ import annotations

import pytest

from slurm_client import (
    AuthError,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    NodeNotFound,
    PartitionNotFound,
    ResourcesUnavailable,
    ServerBusy,
    SlurmApiError,
    SlurmErrorEntry,
    SlurmTimeout,
    SlurmTransportError,
    UnsupportedOperation,
)
from slurm_client._errors import (
    TARGET_JOB,
    TARGET_NODE,
    TARGET_PARTITION,
    error_for_reply,
    is_transient,
    was_not_processed,
)


def entry(number: int | None, error: str = "boom") -> SlurmErrorEntry:
    return SlurmErrorEntry(number=number, error=error)


@pytest.mark.parametrize(
    ("status", "errors", "target", "expected"),
    [
        pytest.param(200, (entry(2017),), TARGET_JOB, JobNotFound, id="job-not-found-in-200"),
        pytest.param(500, (entry(2017),), TARGET_JOB, JobNotFound, id="job-not-found-in-500"),
        pytest.param(200, (entry(2017),), None, InvalidRequest, id="invalid-job-id-on-submit"),
        pytest.param(500, (entry(2018),), TARGET_NODE, NodeNotFound, id="node-not-found"),
        pytest.param(500, (entry(2000),), TARGET_PARTITION, PartitionNotFound, id="partition-not-found"),
        pytest.param(500, (entry(2000),), None, InvalidRequest, id="bad-partition-on-submit"),
        pytest.param(200, (entry(2002),), None, AuthError, id="access-denied"),
        pytest.param(500, (entry(6001),), None, AuthError, id="auth-expired-number"),
        pytest.param(422, (entry(2010),), TARGET_NODE, AuthError, id="not-an-operator"),
        pytest.param(200, (entry(2021),), TARGET_JOB, JobAlreadyFinished, id="already-done"),
        pytest.param(500, (entry(2084),), TARGET_JOB, JobAlreadyFinished, id="job-finished-22.05"),
        pytest.param(200, (entry(2078),), None, ResourcesUnavailable, id="cannot-start-now"),
        pytest.param(500, (entry(1800),), None, ServerBusy, id="slurmctld-unreachable"),
        pytest.param(200, (entry(2036),), None, UnsupportedOperation, id="not-supported"),
        pytest.param(200, (entry(2063),), None, InvalidRequest, id="missing-work-dir"),
        pytest.param(400, (entry(9001),), None, InvalidRequest, id="rest-parse-failure"),
        pytest.param(200, (entry(None, "mystery"),), None, SlurmApiError, id="unnumbered-error-in-200"),
        pytest.param(200, (entry(0, "zero"),), None, SlurmApiError, id="zero-numbered-error-in-200"),
        pytest.param(401, (), None, AuthError, id="http-401"),
        pytest.param(403, (), None, AuthError, id="http-403"),
        pytest.param(404, (), TARGET_JOB, JobNotFound, id="http-404-job"),
        pytest.param(404, (), None, UnsupportedOperation, id="http-404-path"),
        pytest.param(429, (), None, ServerBusy, id="http-429"),
        pytest.param(503, (), None, ServerBusy, id="http-503"),
        pytest.param(422, (), None, InvalidRequest, id="http-422"),
        pytest.param(500, (), None, SlurmApiError, id="bare-500"),
        pytest.param(500, (entry(None), entry(2017)), TARGET_JOB, JobNotFound, id="numbered-wins"),
    ],
)
def test_classification(
    status: int, errors: tuple[SlurmErrorEntry, ...], target: str | None, expected: type[Exception]
) -> None:
    failure = error_for_reply(what="GET /x", status=status, errors=errors, target=target)
    assert type(failure) is expected
    assert failure is not None
    assert failure.status == status


@pytest.mark.parametrize(
    ("status", "errors", "benign"),
    [
        pytest.param(200, (), frozenset(), id="clean-200"),
        pytest.param(200, (entry(2042, "Job is held"),), frozenset({2042}), id="held-submit-note"),
    ],
)
def test_success(status: int, errors: tuple[SlurmErrorEntry, ...], benign: frozenset[int]) -> None:
    assert error_for_reply(what="POST /x", status=status, errors=errors, target=None, benign=benign) is None


def test_benign_only_for_the_listed_number() -> None:
    failure = error_for_reply(
        what="POST /x", status=200, errors=(entry(2042), entry(2063)), target=None, benign=frozenset({2042})
    )
    assert isinstance(failure, InvalidRequest)
    assert failure.error_numbers == (2063,)


@pytest.mark.parametrize(
    ("failure", "transient", "not_processed"),
    [
        pytest.param(SlurmTransportError("x", sent=False), True, True, id="connect-failure"),
        pytest.param(SlurmTimeout("x", sent=True), True, False, id="read-timeout"),
        pytest.param(ServerBusy("x", status=429), True, True, id="http-429"),
        pytest.param(ServerBusy("x", status=503), True, False, id="http-503"),
        pytest.param(ServerBusy("x", status=500, errors=[entry(1800)]), True, True, id="ctld-connect-failed"),
        pytest.param(
            ServerBusy("x", status=500, errors=[entry(1802)]), True, False, id="ctld-receive-failed"
        ),
        pytest.param(SlurmApiError("x", status=500), True, False, id="bare-500"),
        pytest.param(SlurmApiError("x", status=500, errors=[entry(9999)]), False, False, id="numbered-500"),
        pytest.param(SlurmApiError("x", status=500, errors=[entry(-1)]), True, False, id="v0038-unspecified"),
        pytest.param(JobNotFound("x", status=500), False, False, id="not-found"),
        pytest.param(AuthError("x", status=401), False, False, id="auth"),
    ],
)
def test_retry_classes(
    failure: SlurmApiError | SlurmTransportError, transient: bool, not_processed: bool
) -> None:
    assert is_transient(failure) is transient
    assert was_not_processed(failure) is not_processed


def test_message_carries_status_and_slurm_text() -> None:
    failure = error_for_reply(
        what="GET /slurm/v0.0.38/job/9",
        status=500,
        errors=(SlurmErrorEntry(2017, "Invalid job id specified", "Unable to find JobId=9"),),
        target=TARGET_JOB,
    )
    assert str(failure) == (
        "GET /slurm/v0.0.38/job/9 (HTTP 500): [2017] Invalid job id specified; Unable to find JobId=9"
    )


def test_v0038_unspecified_error_says_what_it_may_mean() -> None:
    failure = error_for_reply(
        what="GET /slurm/v0.0.38/jobs",
        status=500,
        errors=(SlurmErrorEntry(-1, "Unspecified error", "Failed while looking for jobs"),),
        target=None,
    )
    assert type(failure) is SlurmApiError
    assert "token signed with another key" in str(failure)
    assert is_transient(failure)
