from __future__ import annotations

import pytest

from bridge.pending_reasons import describe_pending_reason, pending_detail


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        pytest.param(
            "QOSMaxJobsPerUserLimit",
            "QOSMaxJobsPerUserLimit (the QOS lets each user run only a limited number of jobs at once; "
            "the job starts when enough of them end)",
            id="qos-max-jobs-per-user",
        ),
        pytest.param("Priority", "Priority", id="scheduling-word-as-is"),
        pytest.param("SomethingNew", "SomethingNew", id="unknown-as-is"),
    ],
)
def test_describe_pending_reason(code: str, shown: str) -> None:
    assert describe_pending_reason(code) == shown


@pytest.mark.parametrize(
    ("reason", "detail"),
    [
        pytest.param(None, "", id="none"),
        pytest.param("None", "", id="slurm-none"),
        pytest.param("Resources", ": Resources", id="resources"),
        pytest.param(
            "AssocGrpCpuLimit",
            ": AssocGrpCpuLimit (the account's CPUs (GrpTRES cpu) are all in use; "
            "the job starts when enough of them end)",
            id="assoc-cpu",
        ),
    ],
)
def test_pending_detail(reason: str | None, detail: str) -> None:
    assert pending_detail(reason) == detail
