"""controller/eviction.py: a preempted pod is evicted, any other ended job's pod deleted."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.wellknown import Reason
from controller.eviction import Removal, eviction_body, removal_for, remove_pod
from kube_client import Conflict, KubeApiError, NotFound, TooManyRequests


@pytest.mark.parametrize(
    ("reason", "removal"),
    [
        pytest.param(Reason.JOB_PREEMPTED, Removal.EVICT, id="preempted-evict"),
        pytest.param(Reason.JOB_COMPLETED, Removal.DELETE, id="completed-delete"),
        pytest.param(Reason.JOB_TIMEOUT, Removal.DELETE, id="timeout-delete"),
        pytest.param(Reason.JOB_CANCELLED, Removal.DELETE, id="cancelled-delete"),
        pytest.param("SomethingElse", Removal.DELETE, id="unknown-delete"),
    ],
)
def test_removal_for(reason: str, removal: Removal) -> None:
    assert removal_for(reason) is removal


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

    async def delete_pod(
        self, namespace: str, name: str, *, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> bool:
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
        pytest.param(Reason.JOB_COMPLETED, None, [("delete", "ns", "p", "u")], True, id="completed-deleted"),
    ],
)
async def test_remove_pod(
    reason: str, error: KubeApiError | None, calls: list[tuple[str, ...]], removed: bool
) -> None:
    kube = FakeKube(error)
    assert await remove_pod(kube, "ns", "p", "u", reason) is removed
    assert kube.calls == calls
