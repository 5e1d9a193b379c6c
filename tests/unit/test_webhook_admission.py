from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.tenancy import TenancyConfig, TenantPolicy, TenantRule
from bridge.validation import job_option_problems
from webhook.admission import (
    MANAGED_NODE_TOLERATION,
    Decision,
    Request,
    ReviewError,
    mutate_pod,
    response,
    validate,
)
from webhook.registration import webhook_configurations

OURS = "slurm-bridge-scheduler"
BRIDGE = "system:serviceaccount:slurm-bridge-system:slurm-bridge"
USER = "jane"
JOBID = "scheduler.slinky.slurm.net/slurm-jobid"
FINALIZER = "scheduler.slurm.net/finalizer"
CONFIG = BridgeConfig(
    namespaces=("managed", "phys"),
    tenancy=TenancyConfig(
        enabled=True,
        rules=(TenantRule(namespaces=("phys",), policy=TenantPolicy(accounts=("physics",))),),
        default=TenantPolicy(),
    ),
)


def pod(
    *,
    scheduler: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    finalizers: list[str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "pause"}]}
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    if tolerations is not None:
        spec["tolerations"] = tolerations
    meta: dict[str, Any] = {"name": "p", "labels": labels or {}, "annotations": annotations or {}}
    if finalizers:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def review(
    obj: dict[str, Any],
    *,
    namespace: str = "managed",
    operation: str = "CREATE",
    user: str = USER,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    group, _, version = str(obj.get("apiVersion", "v1")).rpartition("/")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "operation": operation,
            "namespace": namespace,
            "userInfo": {"username": user},
            "object": obj,
            "oldObject": old,
        },
    }


def request(obj: dict[str, Any], **kw: Any) -> Request:
    return Request.from_review(review(obj, **kw))


SET_SCHEDULER = {"op": "add", "path": "/spec/schedulerName", "value": OURS}
ADD_TOLERATIONS = {"op": "add", "path": "/spec/tolerations", "value": [MANAGED_NODE_TOLERATION]}
APPEND_TOLERATION = {"op": "add", "path": "/spec/tolerations/-", "value": MANAGED_NODE_TOLERATION}


@pytest.mark.parametrize(
    ("obj", "namespace", "opted_in", "patch"),
    [
        pytest.param(
            pod(scheduler="default-scheduler"),
            "other",
            True,
            [SET_SCHEDULER, ADD_TOLERATIONS],
            id="ns-opted-in",
        ),
        pytest.param(pod(), "other", True, [SET_SCHEDULER, ADD_TOLERATIONS], id="ns-opted-in-unset"),
        pytest.param(
            pod(labels={"slurm-bridge.io/scheduling": "true"}),
            "managed",
            False,
            [SET_SCHEDULER, ADD_TOLERATIONS],
            id="pod-asks",
        ),
        pytest.param(pod(), "managed", False, [], id="managed-not-asking"),
        pytest.param(pod(scheduler=OURS), "managed", False, [ADD_TOLERATIONS], id="ours-gets-toleration"),
        pytest.param(
            pod(scheduler=OURS, tolerations=[{"key": "x", "operator": "Exists"}]),
            "managed",
            False,
            [APPEND_TOLERATION],
            id="toleration-appended",
        ),
        pytest.param(
            pod(scheduler=OURS, tolerations=[{"key": "slinky.slurm.net/managed-node", "operator": "Exists"}]),
            "managed",
            False,
            [],
            id="toleration-present",
        ),
        pytest.param(
            pod(scheduler=OURS, tolerations=[{"operator": "Exists"}]),
            "managed",
            False,
            [],
            id="tolerates-all",
        ),
        pytest.param(pod(scheduler="volcano"), "other", True, [], id="other-scheduler"),
        pytest.param(
            pod(labels={"slurm-bridge.io/scheduling": "false"}), "other", True, [], id="pod-opts-out"
        ),
        pytest.param(
            pod(labels={"slurm-bridge.io/scheduling": "true"}),
            "elsewhere",
            False,
            [],
            id="unmanaged-namespace",
        ),
        pytest.param(pod(scheduler=OURS), "elsewhere", False, [], id="unmanaged-even-ours"),
    ],
)
def test_mutate_pod(obj: dict[str, Any], namespace: str, opted_in: bool, patch: list[dict[str, Any]]) -> None:
    decision = mutate_pod(request(obj, namespace=namespace), CONFIG, namespace_opted_in=opted_in)
    assert decision.allowed
    assert list(decision.patch) == patch


def test_mutate_ignores_updates() -> None:
    decision = mutate_pod(request(pod(), operation="UPDATE", old=pod()), CONFIG, namespace_opted_in=True)
    assert decision == Decision()


def bad(*fragments: str) -> tuple[str, ...]:
    return fragments


@pytest.mark.parametrize(
    ("obj", "namespace", "operation", "user", "old", "refused"),
    [
        pytest.param(pod(scheduler=OURS), "managed", "CREATE", USER, None, (), id="plain-pod"),
        pytest.param(
            pod(scheduler=OURS, annotations={"slinky.slurm.net/timelimit": "soon"}),
            "managed",
            "CREATE",
            USER,
            None,
            bad("slinky.slurm.net/timelimit", "'soon'", "a whole number >= 1"),
            id="bad-timelimit",
        ),
        pytest.param(
            pod(scheduler=OURS, annotations={"slinky.slurm.net/exclusive": "yes"}),
            "managed",
            "CREATE",
            USER,
            None,
            bad("slinky.slurm.net/exclusive", "'yes'", '"true" or "false"'),
            id="bad-exclusive",
        ),
        pytest.param(
            pod(scheduler=OURS, annotations={"slinky.slurm.net/colour": "red"}),
            "managed",
            "CREATE",
            USER,
            None,
            bad("unknown annotation 'slinky.slurm.net/colour'", "account"),
            id="unknown-option",
        ),
        pytest.param(
            pod(scheduler="other", annotations={"slinky.slurm.net/timelimit": "soon"}),
            "managed",
            "CREATE",
            USER,
            None,
            (),
            id="other-scheduler-not-checked",
        ),
        pytest.param(
            pod(scheduler=OURS, annotations={"slinky.slurm.net/account": "biology"}),
            "phys",
            "CREATE",
            USER,
            None,
            bad("account 'biology' is not allowed in namespace 'phys' (allowed: physics)"),
            id="tenant-account",
        ),
        pytest.param(
            pod(scheduler=OURS, labels={JOBID: "42"}),
            "managed",
            "CREATE",
            USER,
            None,
            bad(f"label {JOBID} '42': only the bridge may set it, not jane"),
            id="owned-label-on-create",
        ),
        pytest.param(
            pod(scheduler=OURS, labels={JOBID: "43"}),
            "managed",
            "UPDATE",
            USER,
            pod(scheduler=OURS, labels={JOBID: "42"}),
            bad(f"label {JOBID} '42' -> '43'"),
            id="owned-label-edited",
        ),
        pytest.param(
            pod(scheduler=OURS, labels={JOBID: "43"}),
            "managed",
            "UPDATE",
            BRIDGE,
            pod(scheduler=OURS, labels={JOBID: "42"}),
            (),
            id="bridge-may-edit",
        ),
        pytest.param(
            pod(scheduler=OURS, labels={JOBID: "42", "x": "y"}),
            "managed",
            "UPDATE",
            USER,
            pod(scheduler=OURS, labels={JOBID: "42"}),
            (),
            id="other-label-edit-ok",
        ),
        pytest.param(
            pod(scheduler=OURS, annotations={"slinky.slurm.net/slurm-node": "n1"}),
            "managed",
            "UPDATE",
            USER,
            pod(scheduler=OURS),
            bad("annotation slinky.slurm.net/slurm-node 'n1'"),
            id="owned-annotation",
        ),
        pytest.param(
            pod(scheduler=OURS, finalizers=[FINALIZER]),
            "managed",
            "CREATE",
            USER,
            None,
            bad(f"finalizer {FINALIZER}"),
            id="finalizer-added",
        ),
        pytest.param(
            pod(scheduler=OURS),
            "managed",
            "UPDATE",
            USER,
            pod(scheduler=OURS, finalizers=[FINALIZER]),
            bad(f"finalizer {FINALIZER} removed"),
            id="finalizer-removed",
        ),
        pytest.param(
            pod(scheduler=OURS, deleting=True),
            "managed",
            "UPDATE",
            USER,
            pod(scheduler=OURS, finalizers=[FINALIZER], deleting=True),
            (),
            id="finalizer-removed-while-deleting",
        ),
        pytest.param(
            pod(scheduler=OURS, annotations={"slinky.slurm.net/timelimit": "soon"}, labels={"x": "1"}),
            "managed",
            "UPDATE",
            USER,
            pod(scheduler=OURS, annotations={"slinky.slurm.net/timelimit": "soon"}),
            (),
            id="unchanged-bad-options-not-rechecked",
        ),
        pytest.param(
            {
                "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                "kind": "PodGroup",
                "metadata": {"name": "g", "annotations": {"slinky.slurm.net/min-nodes": "2"}},
                "spec": {"minMember": 2},
            },
            "managed",
            "CREATE",
            USER,
            None,
            bad("slinky.slurm.net/min-nodes on the group", "node counts cannot be set"),
            id="podgroup-node-count",
        ),
        pytest.param(
            {
                "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                "kind": "PodGroup",
                "metadata": {"name": "g", "annotations": {"slinky.slurm.net/qos": "normal"}},
                "spec": {"minMember": 2, "minResources": {"cpu": "lots"}},
            },
            "managed",
            "CREATE",
            USER,
            None,
            bad("minResources: cpu"),
            id="podgroup-min-resources",
        ),
        pytest.param(
            {
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "kind": "JobSet",
                "metadata": {"name": "js", "annotations": {"slinky.slurm.net/priority": "-1"}},
                "spec": {},
            },
            "managed",
            "CREATE",
            USER,
            None,
            bad("slinky.slurm.net/priority", "'-1'", "whole number >= 0"),
            id="jobset-annotation",
        ),
        pytest.param(
            {
                "apiVersion": "leaderworkerset.x-k8s.io/v1",
                "kind": "LeaderWorkerSet",
                "metadata": {"name": "lws", "annotations": {"slinky.slurm.net/account": "biology"}},
                "spec": {},
            },
            "phys",
            "CREATE",
            USER,
            None,
            bad("account 'biology' is not allowed"),
            id="lws-tenant",
        ),
        pytest.param(
            {
                "apiVersion": "scheduling.k8s.io/v1beta1",
                "kind": "Workload",
                "metadata": {"name": "w", "annotations": {"slinky.slurm.net/mem-per-node": "lots"}},
                "spec": {},
            },
            "managed",
            "CREATE",
            USER,
            None,
            bad("slinky.slurm.net/mem-per-node", "'lots'"),
            id="workload-annotation",
        ),
        pytest.param(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "j"},
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"slinky.slurm.net/gres": "gpu:zero:x"}},
                        "spec": {"schedulerName": OURS, "containers": [{"name": "c"}]},
                    }
                },
            },
            "managed",
            "CREATE",
            USER,
            None,
            bad("spec.template: slinky.slurm.net/gres", "'gpu:zero:x'"),
            id="job-template",
        ),
        pytest.param(
            {
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "kind": "JobSet",
                "metadata": {"name": "js"},
                "spec": {
                    "replicatedJobs": [
                        {
                            "template": {
                                "spec": {
                                    "template": {
                                        "metadata": {"annotations": {"slinky.slurm.net/timelimit": "0"}},
                                        "spec": {"containers": [{"name": "c"}]},
                                    }
                                }
                            }
                        }
                    ]
                },
            },
            "managed",
            "CREATE",
            USER,
            None,
            bad("spec.replicatedJobs[0].template.spec.template: slinky.slurm.net/timelimit"),
            id="jobset-template",
        ),
        pytest.param(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}},
            "managed",
            "CREATE",
            USER,
            None,
            (),
            id="other-kind",
        ),
        pytest.param(
            pod(scheduler=OURS, labels={JOBID: "1"}), "managed", "DELETE", USER, None, (), id="delete"
        ),
    ],
)
def test_validate(
    obj: dict[str, Any],
    namespace: str,
    operation: str,
    user: str,
    old: dict[str, Any] | None,
    refused: tuple[str, ...],
) -> None:
    decision = validate(
        request(obj, namespace=namespace, operation=operation, user=user, old=old), CONFIG, [BRIDGE]
    )
    assert decision.allowed == (not refused), decision.message
    for fragment in refused:
        assert fragment in decision.message


def test_response_shapes() -> None:
    allowed = response("u", Decision(patch=({"op": "add", "path": "/x", "value": 1},)))
    assert allowed["response"]["allowed"] is True
    assert allowed["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(allowed["response"]["patch"])) == [
        {"op": "add", "path": "/x", "value": 1}
    ]
    refused = response("u", Decision(allowed=False, message="no"))["response"]
    assert refused == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "no"},
    }


@pytest.mark.parametrize(
    "body",
    [pytest.param({}, id="empty"), pytest.param({"request": {}}, id="no-uid"), pytest.param([], id="list")],
)
def test_bad_reviews(body: Any) -> None:
    with pytest.raises(ReviewError):
        Request.from_review(body)


def test_pod_without_namespace_in_object_uses_request_namespace() -> None:
    obj = pod(scheduler=OURS, annotations={"slinky.slurm.net/account": "biology"})
    assert job_option_problems(obj, CONFIG) == []  # "default" namespace: default policy
    decision = validate(request(obj, namespace="phys"), CONFIG, [BRIDGE])
    assert not decision.allowed


def test_registration_scopes_every_webhook() -> None:
    mutating, validating = webhook_configurations(
        CONFIG, ca_bundle=b"CA", url="https://127.0.0.1:1", name="t", only_namespaces=["a"]
    )
    hooks = mutating["webhooks"] + validating["webhooks"]
    assert len(hooks) == 4
    for hook in hooks:
        expressions = hook["namespaceSelector"]["matchExpressions"]
        assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a"]} in expressions
        assert hook["timeoutSeconds"] <= 5
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:1/")
    assert all(BRIDGE in h["matchConditions"][0]["expression"] for h in validating["webhooks"])
    with pytest.raises(ValueError, match="exactly one"):
        webhook_configurations(CONFIG, ca_bundle=b"", name="t")


class FakeKube:
    def __init__(self) -> None:
        self.reads = 0
        self.fail = False

    async def get(self, _ref: Any, name: str) -> dict[str, Any]:
        self.reads += 1
        if self.fail:
            raise RuntimeError("API server down")
        return {"metadata": {"name": name, "labels": {"team": "bio"}}}


async def test_namespace_labels_cached_and_failure_is_an_error() -> None:
    from webhook.namespaces import NamespaceLabelCache, needs_namespace_labels
    from webhook.server import Handler

    now = [0.0]
    kube = FakeKube()
    cache = NamespaceLabelCache(kube, ttl=30, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await cache.labels("lab") == {"team": "bio"}
    assert await cache.labels("lab") == {"team": "bio"}
    assert kube.reads == 1
    now[0] = 31
    await cache.labels("lab")
    assert kube.reads == 2

    by_label = CONFIG.model_copy(
        update={
            "tenancy": TenancyConfig(
                enabled=True,
                rules=(
                    TenantRule(namespace_labels={"team": "bio"}, policy=TenantPolicy(accounts=("biology",))),
                ),
            )
        }
    )
    assert needs_namespace_labels(by_label) and not needs_namespace_labels(CONFIG)
    handler = Handler(by_label, cache.labels)
    body = json.dumps(
        review(pod(scheduler=OURS, annotations={"slinky.slurm.net/account": "physics"}), namespace="lab")
    ).encode()
    now[0] = 100
    status, answer = await handler.handle("POST", "/validate", body)
    assert status == 200
    assert "account 'physics' is not allowed in namespace 'lab' (allowed: biology)" in answer.decode()
    kube.fail, now[0] = True, 200
    status, _ = await handler.handle("POST", "/validate", body)
    assert status == 500  # the API server's failure policy decides, never a guessed policy
