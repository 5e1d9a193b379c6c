from __future__ import annotations

import pytest

from bridge.pending_reasons import describe_pending_reason


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        pytest.param(
            "QOSMaxJobsPerUserLimit",
            "QOSMaxJobsPerUserLimit (the QOS lets each user run only a limited number of jobs at once; "
            "the job starts when enough of them end)",
            id="qos-max-jobs-per-user",
        ),
        pytest.param(
            "Priority",
            "Priority (other jobs with a higher priority (fair-share, QOS, age) are ahead of it)",
            id="priority",
        ),
        pytest.param("SomethingNew", "SomethingNew", id="unknown-as-is"),
    ],
)
def test_describe_pending_reason(code: str, shown: str) -> None:
    assert describe_pending_reason(code) == shown
