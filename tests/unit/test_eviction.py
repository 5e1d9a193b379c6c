"""controller/eviction.py: a preempted pod is evicted, any other ended job's pod deleted."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.wellknown import Reason
from controller.eviction import evict_pod, eviction_body
from controller.plan import EVICTION_REASONS
from kube_client import Conflict, KubeApiError, NotFound, TooManyRequests


@pytest.mark.parametrize(
    ("reason", "evict"),
    [
        pytest.param(Reason.JOB_PREEMPTED, True, id="preempted-evict"),
        pytest.param(Reason.JOB_REQUEUED, True, id="requeued-evict"),
        pytest.param(Reason.JOB_COMPLETED, False, id="completed-delete"),
        pytest.param(Reason.JOB_TIMEOUT, False, id="timeout-delete"),
        pytest.param(Reason.JOB_CANCELLED, False, id="cancelled-delete"),
    ],
)
def test_the_plan_evicts_only_when_slurm_took_the_allocation_back(reason: Reason, evict: bool) -> None:
    assert (reason in EVICTION_REASONS) is evict


@pytest.mark.parametrize(
    ("uid", "options"),
    [pytest.param("u-1", {"preconditions": {"uid": "u-1"}}, id="uid"), pytest.param(None, None, id="no-uid")],
)
def test_eviction_body(uid: str | None, options: dict[str, Any] | None) -> None:
    body = eviction_body("ns", "p", uid)
    assert body["apiVersion"] == "policy/v1" and body["kind"] == "Eviction"
    assert body["metadata"] == {"name": "p", "namespace": "ns"}
    assert body.get("deleteOptions") == options


class FakeKube:
    def __init__(self, evict_error: KubeApiError | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.evict_error = evict_error

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.calls.append(("delete", namespace, name, uid or ""))
        return True

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path, body["deleteOptions"]["preconditions"]["uid"]))
        if self.evict_error is not None:
            raise self.evict_error
        return {}


def _error(cls: type[KubeApiError], status: int) -> KubeApiError:
    return cls(status, "reason", f"HTTP {status}")


EVICT = ("POST", "/api/v1/namespaces/ns/pods/p/eviction", "u")


@pytest.mark.parametrize(
    ("reason", "error", "calls", "removed"),
    [
        pytest.param(Reason.JOB_PREEMPTED, None, [EVICT], True, id="evicted"),
        pytest.param(Reason.JOB_PREEMPTED, _error(NotFound, 404), [EVICT], False, id="gone"),
        pytest.param(Reason.JOB_PREEMPTED, _error(Conflict, 409), [EVICT], False, id="other-uid"),
        pytest.param(
            Reason.JOB_PREEMPTED,
            _error(TooManyRequests, 429),
            [EVICT, ("delete", "ns", "p", "u")],
            True,
            id="pdb-refuses-then-delete",
        ),
    ],
)
async def test_evict_pod(
    reason: str, error: KubeApiError | None, calls: list[tuple[str, ...]], removed: bool
) -> None:
    kube = FakeKube(error)
    assert await evict_pod(kube, "ns", "p", "u", reason) is removed
    assert kube.calls == calls
