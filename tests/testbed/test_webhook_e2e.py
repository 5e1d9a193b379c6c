"""The admission webhook against the real kube-apiserver: registered through clientConfig.url on loopback
with the caBundle the webhook generated itself, scoped to this module's namespaces only (the API server
is shared), removed at the end.

A user here is `kubectl --as=webhook-e2e-user` (in group system:masters, so RBAC never refuses it first);
the bridge's identity is the testbed's admin, the user the bridge process runs as.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import BridgeConfig
from tests.testbed.bridge_harness import (
    BridgeProcess,
    Cluster,
    bridge_config,
    condition,
    force_clear,
    phase,
    unique,
    wait_for,
)
from tests.testbed.bridge_harness import pod_manifest as harness_pod_manifest
from tests.testbed_env import REPO, KubeCluster, SlurmCluster
from webhook.registration import webhook_configurations

pytestmark = pytest.mark.testbed

WEBHOOK_PORT = 17460
BRIDGE_METRICS_PORT = 17461
NAME = "webhook-e2e"
USER = "webhook-e2e-user"
_SUFFIX = uuid.uuid4().hex[:4]
NS_OPT = f"webhook-e2e-opt-{_SUFFIX}"  # opted in by namespace label
NS_PHYS = f"webhook-e2e-phys-{_SUFFIX}"  # listed in the bridge's namespaces; tenant policy: account physics
NS_OTHER = f"webhook-e2e-other-{_SUFFIX}"  # not managed
JOBID_LABEL = "scheduler.slinky.slurm.net/slurm-jobid"
# A scheduler name of its own: a bridge acts on every pod naming its scheduler that carries a job-id label
# (a bound pod whose job it does not know is deleted as vanished), whatever the namespace, so bridges of
# other tests on the shared API server must never see these pods, nor this bridge theirs.
SCHEDULER = "webhook-e2e-scheduler"
TENANCY = {
    "enabled": True,
    "rules": [
        {
            "namespaces": [NS_PHYS],
            "policy": {"default_account": "physics", "accounts": ["physics"], "slurm_user": "alice"},
        }
    ],
    "default": {},
}


class WebhookProcess:
    """`python -m webhook --config FILE` in the background."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config_path = workdir / "webhook.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "webhook.log"
        self.cert_dir = Path(config["webhook"]["cert_dir"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "webhook", "--config", str(self.config_path)]
        self.process = subprocess.Popen(
            cmd, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT
        )
        wait_for("webhook healthz", self.healthy, 30)

    def healthy(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log_path.read_text()
        if not (self.cert_dir / "ca.crt").exists():
            return False
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{WEBHOOK_PORT}/healthz", context=context, timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)
        self.process = None


def pod_manifest(name: str, **kwargs: Any) -> dict[str, Any]:
    manifest = harness_pod_manifest(name, **kwargs)
    manifest["spec"]["schedulerName"] = SCHEDULER
    return manifest


def kubectl_as_user(
    kube: KubeCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(kube.kubectl_path),
        "--kubeconfig",
        str(kube.kubeconfig),
        f"--as={USER}",
        "--as-group=system:masters",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)


def webhook_settings(tmp: Path) -> dict[str, Any]:
    return {
        "scheduler_name": SCHEDULER,
        "namespaces": [NS_PHYS],
        "tenancy": TENANCY,
        "webhook": {
            "enabled": True,
            "listen_address": f"127.0.0.1:{WEBHOOK_PORT}",
            "cert_dir": str(tmp / "certs"),
            "bridge_usernames": ["admin"],
            "check_interval_seconds": 5,
        },
    }


@pytest.fixture(scope="module")
def webhook(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    tmp = tmp_path_factory.mktemp("webhook")
    settings = webhook_settings(tmp)
    for namespace in (NS_OPT, NS_PHYS, NS_OTHER):
        _kubectl_retrying(kube, "create", "namespace", namespace)
    _kubectl_retrying(kube, "label", "namespace", NS_OPT, "slurm-bridge.io/scheduling=true")
    for namespace in (NS_OPT, NS_PHYS, NS_OTHER):
        wait_for(
            "service account",
            lambda ns=namespace: kube.kubectl("-n", ns, "get", "sa", "default", check=False),  # type: ignore[misc]
        )
    process = WebhookProcess(settings, tmp)
    try:
        started = time.monotonic()
        process.start()
        config = BridgeConfig.model_validate(settings)
        manifests = webhook_configurations(
            config,
            ca_bundle=(process.cert_dir / "ca.crt").read_bytes(),
            url=f"https://127.0.0.1:{WEBHOOK_PORT}",
            name=NAME,
            only_namespaces=[NS_OPT, NS_PHYS, NS_OTHER],
        )
        kube.kubectl(
            "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        )
        # The API server picks a new configuration up within a moment: wait until a refusal shows it.
        wait_for("webhook registered", lambda: _refuses_owned_label(kube), 30, every=0.5)
        print(f"webhook up and registered in {time.monotonic() - started:.1f}s")
        yield process
    finally:
        # Each step on its own, retried: another session's `testbed/up.sh` may be rewriting the
        # kubeconfig just now, and nothing of this module may stay registered on the shared API server.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            _kubectl_retrying(kube, "delete", kind, NAME, "--ignore-not-found")
        process.stop()
        for namespace in (NS_OPT, NS_PHYS, NS_OTHER):
            _clear_namespace(kube, namespace)
            _kubectl_retrying(kube, "delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def _kubectl_retrying(kube: KubeCluster, *args: str) -> None:
    for attempt in range(10):
        try:
            kube.kubectl(*args)
            return
        except RuntimeError as error:
            if "AlreadyExists" in str(error):
                return
            if attempt == 9:
                raise
            time.sleep(2)


def _refuses_owned_label(kube: KubeCluster) -> bool:
    probe = pod_manifest(unique("probe"), namespace=NS_PHYS, labels={JOBID_LABEL: "1"})
    probe["spec"]["schedulerName"] = "webhook-e2e-nobody"
    done = kubectl_as_user(kube, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe))
    return done.returncode != 0 and "only the bridge may set it" in done.stderr


def _clear_namespace(kube: KubeCluster, namespace: str) -> None:
    force_clear(kube, namespace)


def test_bad_manifest_is_refused_at_apply(kube: KubeCluster, webhook: WebhookProcess) -> None:
    bad = pod_manifest(unique("bad"), namespace=NS_PHYS, annotations={"slinky.slurm.net/timelimit": "soon"})
    done = kubectl_as_user(kube, "apply", "-f", "-", stdin=json.dumps(bad))
    assert done.returncode != 0
    assert "denied the request" in done.stderr
    assert "slinky.slurm.net/timelimit: 'soon' is not a whole number >= 1" in done.stderr

    group = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": unique("pg"),
            "namespace": NS_PHYS,
            "annotations": {"slinky.slurm.net/min-nodes": "3"},
        },
        "spec": {"minMember": 2},
    }
    done = kubectl_as_user(kube, "apply", "-f", "-", stdin=json.dumps(group))
    assert done.returncode != 0
    assert "slinky.slurm.net/min-nodes on the group" in done.stderr


def test_tenant_policy_refuses_foreign_account_at_apply(kube: KubeCluster, webhook: WebhookProcess) -> None:
    foreign = pod_manifest(
        unique("foreign"), namespace=NS_PHYS, annotations={"slinky.slurm.net/account": "biology"}
    )
    done = kubectl_as_user(kube, "apply", "-f", "-", stdin=json.dumps(foreign))
    assert done.returncode != 0
    assert f"account 'biology' is not allowed in namespace '{NS_PHYS}' (allowed: physics)" in done.stderr


def test_users_edit_of_the_job_id_label_is_refused(kube: KubeCluster, webhook: WebhookProcess) -> None:
    name = unique("labelled")
    pod = pod_manifest(name, namespace=NS_PHYS, labels={JOBID_LABEL: "12345"})
    pod["spec"]["schedulerName"] = "webhook-e2e-nobody"  # nobody schedules it: it only carries the label
    kube.kubectl("create", "-f", "-", stdin=json.dumps(pod))  # as admin, the bridge's identity
    edit = kubectl_as_user(kube, "-n", NS_PHYS, "label", "pod", name, f"{JOBID_LABEL}=999", "--overwrite")
    assert edit.returncode != 0
    assert f"label {JOBID_LABEL} '12345' -> '999': only the bridge may set it, not {USER}" in edit.stderr
    removal = kubectl_as_user(kube, "-n", NS_PHYS, "label", "pod", name, f"{JOBID_LABEL}-")
    assert removal.returncode != 0
    fine = kubectl_as_user(kube, "-n", NS_PHYS, "label", "pod", name, "team=blue")
    assert fine.returncode == 0, fine.stderr
    labels = json.loads(kube.kubectl("-n", NS_PHYS, "get", "pod", name, "-o", "json"))["metadata"]["labels"]
    assert labels[JOBID_LABEL] == "12345"
    kube.kubectl("-n", NS_PHYS, "delete", "pod", name, "--wait=false")


# Slurm 26.05 only: the testbed's accounting (slurmdbd, users alice/bob, accounts physics/biology) runs there.
@pytest.mark.slurm_version("26.05")
def test_pod_without_scheduler_name_is_scheduled_by_slurm_and_policy_applies(
    kube: KubeCluster, slurm_cluster: SlurmCluster, webhook: WebhookProcess, tmp_path: Path
) -> None:
    cluster = Cluster(kube, slurm_cluster)
    config = bridge_config(
        slurm_cluster, kube, cluster_id=f"{NAME}-{_SUFFIX}", metrics_port=BRIDGE_METRICS_PORT
    )
    config.update(scheduler_name=SCHEDULER, namespaces=[NS_OPT, NS_PHYS], tenancy=TENANCY)
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    try:
        # A user's plain pod, no schedulerName and no toleration, in the opted-in namespace.
        name = unique("plain")
        plain = pod_manifest(name, namespace=NS_OPT, tolerate=False)
        del plain["spec"]["schedulerName"]
        done = kubectl_as_user(kube, "create", "-f", "-", stdin=json.dumps(plain))
        assert done.returncode == 0, done.stderr
        created = cluster.pod(name, NS_OPT)
        assert created is not None
        assert created["spec"]["schedulerName"] == SCHEDULER
        assert any(t.get("key") == "slinky.slurm.net/managed-node" for t in created["spec"]["tolerations"])
        wait_for("plain pod Running", lambda: phase(cluster.pod(name, NS_OPT)) == "Running", 90)
        jobs = cluster.jobs_for_pod(name)
        assert jobs and jobs[0]["state"] == "RUNNING", jobs
        assert cluster.pod(name, NS_OPT)["spec"]["nodeName"] == jobs[0]["nodes"]  # type: ignore[index]

        # The controller checks the policy too: a pod the webhook did not validate (created with the
        # bridge's identity, which validation leaves out) is refused with a condition and an event.
        refused = unique("refused")
        cluster.create(
            pod_manifest(refused, namespace=NS_PHYS, annotations={"slinky.slurm.net/account": "biology"})
        )

        def refusal() -> str:
            found = condition(cluster.pod(refused, NS_PHYS), "PodScheduled") or {}
            return str(found.get("message") or "") if found.get("status") == "False" else ""

        message = wait_for("refusal condition", refusal, 60)
        assert "account 'biology' is not allowed" in message
        assert cluster.jobs_for_pod(refused) == []
        assert "SlurmTenantPolicyViolation" in cluster.event_reasons(refused, NS_PHYS)

        # A pod of the tenant without an account runs as the tenant's Slurm user, charged to the
        # policy's default account, and its outcome lands in accounting under that user and account.
        charged = unique("charged")
        ends = {"testbed.slurm-bridge.io/run-duration": "3s"}
        cluster.create(pod_manifest(charged, namespace=NS_PHYS, annotations=ends))
        wait_for("tenant pod Running", lambda: phase(cluster.pod(charged, NS_PHYS)) == "Running", 90)
        job_id = cluster.jobs_for_pod(charged)[0]["id"]
        assert slurm_cluster.cli("squeue", "-h", "-j", job_id, "-o", "%u|%a").strip() == "alice|physics"
        wait_for("tenant pod Succeeded", lambda: phase(cluster.pod(charged, NS_PHYS)) == "Succeeded", 60)
        wait_for("job COMPLETED", lambda: cluster.job_state(job_id)[0] == "COMPLETED", 30)

        def accounted() -> str:
            out = slurm_cluster.cli("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "User,Account,State")
            return out.strip() if "COMPLETED" in out else ""

        assert wait_for("sacct record", accounted, 30) == "alice|physics|COMPLETED"
    finally:
        for namespace in (NS_OPT, NS_PHYS):
            kube.kubectl("-n", namespace, "delete", "pods", "--all", "--wait=false")
        for namespace in (NS_OPT, NS_PHYS):
            wait_for(
                "pods gone",
                lambda ns=namespace: not kube.kubectl("-n", ns, "get", "pods", "-o", "name"),  # type: ignore[misc]
                40,
            )
        bridge.stop()


def test_webhook_down_blocks_nothing_outside_managed_namespaces(
    kube: KubeCluster, webhook: WebhookProcess
) -> None:
    webhook.stop()
    try:
        name = unique("elsewhere")
        pod = pod_manifest(name, namespace=NS_OTHER)
        del pod["spec"]["schedulerName"]
        pod["spec"]["nodeName"] = "slurm-bridge-0"  # no kube-scheduler on the testbed: placed by hand
        pod["spec"]["containers"][0]["resources"] = {}
        started = time.monotonic()
        done = kubectl_as_user(kube, "create", "-f", "-", stdin=json.dumps(pod))
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 5
        wait_for(
            "pod in another namespace Running", lambda: phase(_pod(kube, NS_OTHER, name)) == "Running", 60
        )

        # Inside a managed namespace the webhook is required (failurePolicy Fail): the create says why.
        inside = pod_manifest(unique("inside"), namespace=NS_OPT)
        refused = kubectl_as_user(kube, "create", "-f", "-", stdin=json.dumps(inside))
        assert refused.returncode != 0
        assert "failed calling webhook" in refused.stderr
    finally:
        webhook.start()


def _pod(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any] | None:
    out = kube.kubectl("-n", namespace, "get", "pod", name, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None
