"""PodInfo.failed_exit_code: the exit code a batch placeholder records for a failed pod."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.objects import PodInfo, first_failed_exit_code


def _term(code: int) -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": code}}}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param({}, None, id="no-status"),
        pytest.param({"containerStatuses": [_term(0)]}, None, id="succeeded"),
        pytest.param({"containerStatuses": [_term(0), _term(3)]}, 3, id="second-container"),
        pytest.param({"containerStatuses": [_term(3), _term(7)]}, 3, id="first-failed-wins"),
        pytest.param(
            {"initContainerStatuses": [_term(2)], "containerStatuses": [{"state": {"waiting": {}}}]},
            2,
            id="init-container",
        ),
        pytest.param({"containerStatuses": [{"state": {"running": {}}}]}, None, id="running"),
        pytest.param({"containerStatuses": [_term(137)]}, 137, id="oom-killed"),
        pytest.param(
            {"containerStatuses": [{"state": {"terminated": {"exitCode": "3"}}}]}, None, id="garbled"
        ),
    ],
)
def test_first_failed_exit_code(status: dict[str, Any], code: int | None) -> None:
    assert first_failed_exit_code(status) == code
    pod = PodInfo.from_api({"metadata": {"name": "p"}, "status": status})
    assert pod.failed_exit_code == code
