"""The Helm chart (deploy/helm/slurm-bridge) on the testbed's real API server, and its RBAC proven.

- `helm lint` / `helm template` are clean for every mode, and the rendered config is one the bridge loads;
- `helm install` (split mode, NodeSet controller on) puts every object through the real API server, then
  `helm uninstall` removes it;
- the scheduler and the controller run as host processes, each with a kubeconfig holding a TokenRequest
  token of ITS OWN ServiceAccount from the chart (never the admin's): single pods, a refused pod, a gang
  and a NodeSet scale-out/in all work with the chart's rules, and nothing they did was Forbidden;
- `kubectl auth can-i --as` shows what those accounts must not be able to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_config
from tests import testbed_env
from tests.testbed.bridge_harness import (
    BridgeProcess,
    Cluster,
    bridge_config,
    condition,
    phase,
    pod_manifest,
    unique,
    wait_for,
)
from tests.testbed_env import REPO, TESTBED_DIR, KubeCluster, SlurmCluster
from webhook.registration import webhook_configurations

pytestmark = pytest.mark.testbed

CHART = REPO / "deploy" / "helm" / "slurm-bridge"
CRDS = REPO / "deploy" / "crds"
HELM = TESTBED_DIR / "bin" / "k8s" / "helm"
RELEASE = "chart-e2e"
RELEASE_NS = "chart-e2e"  # the release, its ServiceAccounts and Leases, and the NodeSet namespace
PODS_NS = "chart-e2e-pods"  # the one namespace the release manages
OTHER_NS = "chart-e2e-other"  # a namespace it does not manage
FULLNAME = f"{RELEASE}-slurm-bridge"
# A second release, all-in-one: the flows below run with ITS account (scheduler + controller rules). The
# split release's accounts are proven by the can-i matrix; run as two processes, the controller deletes a
# pod whose job-id label it sees before its own job cache polled the job (controller/plan.py,
# _plan_live_pod: JOB_VANISHED), a race of split mode itself, not of RBAC.
RELEASE_AIO = "chart-e2e-aio"
FULLNAME_AIO = f"{RELEASE_AIO}-slurm-bridge"
SA = {c: f"{FULLNAME}-{c}" for c in ("scheduler", "controller", "exporter")} | {"all-in-one": FULLNAME_AIO}
# A scheduler name of its own: every bridge on the testbed watches the pods of its schedulerName in all
# namespaces, and a bridge that meets a bound pod whose job it does not know deletes it.
SCHEDULER_NAME = "chart-e2e-scheduler"
NODESET = "ns"  # the Slurm nodes ns-[0-7] are declared FUTURE in partition `nodeset`
_PORTS = {"scheduler": 17661, "controller": 17662}
INSTALL_VALUES = [
    "mode=split",
    # The testbed has no kubelet to run the image: the Deployments are validated and kept at 0; the bridge
    # runs as host processes with the Deployments' ServiceAccounts instead.
    f"schedulerName={SCHEDULER_NAME}",
    "replicas=0",
    "exporterReplicas=0",
    f"namespaces={{{PODS_NS}}}",
    "slurm.jwtKeySecret.name=chart-e2e-slurm-jwt-key",
    "nodeset.enabled=true",
    "nodeset.slurmUser=root",
    "metrics.serviceMonitor.enabled=false",
    "networkPolicy.enabled=true",
]


@pytest.fixture(autouse=True)
def _helm_installed(testbed: testbed_env.Testbed) -> None:
    """testbed/up.sh (run by the session fixture) builds Helm and links it into the testbed's bin/k8s."""
    assert HELM.exists(), f"{HELM} missing: testbed/helm.sh up did not run"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done


def render(*sets: str) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NS]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


# ---- the chart on its own -------------------------------------------------------------------------------

MODES = {
    "all-in-one-token": ["slurm.tokenSecret.name=t"],
    "split-key-nodeset": ["mode=split", "slurm.jwtKeySecret.name=k", "nodeset.enabled=true"],
    "everything": [
        "mode=split",
        "slurm.jwtKeySecret.name=k",
        "nodeset.enabled=true",
        "nodeset.namespace=slurmd",
        "nodeset.tokenSecret.name=op",
        "clusterId=site-a",
        "metrics.serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
        "commonLabels.site=a",
        "config.workers=8",
    ],
}


def test_helm_lint_is_clean() -> None:
    for name, sets in MODES.items():
        args = ["lint", "--strict", str(CHART)]
        for s in sets:
            args += ["--set", s]
        out = helm(*args).stdout
        assert "0 chart(s) failed" in out, f"{name}: {out}"


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_template_renders_a_config_the_bridge_loads(mode: str, tmp_path: Path) -> None:
    docs = render(*MODES[mode])
    kinds = [d["kind"] for d in docs]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "bridge.yaml"
    path.write_text(config_map["data"]["bridge.yaml"])
    config = load_config(path, environ={})
    assert config.leader_election.lease_namespace == RELEASE_NS
    assert config.metrics_listen_address == "0.0.0.0:8080"
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == (1 if mode == "all-in-one-token" else 3)
    assert kinds.count("PodDisruptionBudget") == len(deployments)
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["args"][-1] == "--config=/etc/slurm-bridge/bridge.yaml"
        exporter_only = c["args"][0] == "exporter"
        assert pod["automountServiceAccountToken"] is (not exporter_only)
    if mode == "all-in-one-token":
        assert str(config.slurm.token_file).endswith("/token") and config.slurm.jwt_key_file is None
        assert config.nodeset.enabled is False and config.cluster_id is None
        assert "NetworkPolicy" not in kinds and "ServiceMonitor" not in kinds
    if mode == "everything":
        assert config.cluster_id == "site-a" and config.workers == 8
        assert config.nodeset.namespace == "slurmd" and config.nodeset.token_file is not None
        assert {"NetworkPolicy", "ServiceMonitor"} <= set(kinds)
        assert all(d["metadata"]["labels"]["site"] == "a" for d in docs)
        nodesets = next(
            d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-nodesets")
        )
        assert nodesets["metadata"]["namespace"] == "slurmd"
        roles = [d for d in docs if d["kind"] == "ClusterRole"]
        assert not any("namespaces" in r.get("resources", []) for d in roles for r in d["rules"])


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["slurm.tokenSecret.name=a", "slurm.jwtKeySecret.name=b"], "only one of"),
        ([], "needs a JWT"),
        (["slurm.tokenSecret.name=a", "mode=apart"], "all-in-one or split"),
    ],
    ids=["two-credentials", "no-credential", "bad-mode"],
)
def test_template_refuses_a_bad_setup(sets: list[str], says: str) -> None:
    args = ["template", RELEASE, str(CHART)]
    for s in sets:
        args += ["--set", s]
    done = helm(*args, check=False)
    assert done.returncode != 0 and says in done.stderr


def test_crds_have_one_source(tmp_path: Path) -> None:
    """The chart's crds/ are symlinks to deploy/crds/, and `helm package` ships their content."""
    shipped = sorted(p.name for p in (CHART / "crds").iterdir())
    assert shipped == sorted(p.name for p in CRDS.glob("*.yaml"))
    for name in shipped:
        assert (CHART / "crds" / name).resolve() == (CRDS / name).resolve()
    helm("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("slurm-bridge-*.tgz")
    with tarfile.open(package) as tar:
        for name in shipped:
            member = tar.extractfile(f"slurm-bridge/crds/{name}")
            assert member is not None and member.read() == (CRDS / name).read_bytes()


# ---- the admission webhook in the chart -------------------------------------------------------------------

WEBHOOK_MODES = {
    "self-one-replica": ["slurm.tokenSecret.name=t", "webhook.enabled=true", "replicas=1"],
    "cert-manager-split": [
        "mode=split",
        "slurm.jwtKeySecret.name=k",
        "webhook.enabled=true",
        "webhook.certificates=cert-manager",
    ],
    "cert-manager-cluster-issuer": [
        "slurm.jwtKeySecret.name=k",
        "webhook.enabled=true",
        "webhook.certificates=cert-manager",
        "webhook.certManager.issuerRef.name=site-ca",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
    ],
}


@pytest.mark.parametrize("mode", list(WEBHOOK_MODES), ids=list(WEBHOOK_MODES))
def test_the_webhook_registration_matches_the_bridges_own(mode: str, tmp_path: Path) -> None:
    """The chart registers the webhook exactly as webhook/registration.py does (rules, selectors, paths,
    the bridge's identities left out of validation), served by the pods that run the scheduler."""
    sets = WEBHOOK_MODES[mode]
    lint = ["lint", "--strict", str(CHART)]
    for s in sets:
        lint += ["--set", s]
    assert "0 chart(s) failed" in helm(*lint).stdout
    docs = render(*sets)
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "bridge.yaml"
    path.write_text(config_map["data"]["bridge.yaml"])
    config = load_config(path, environ={})
    assert config.webhook.enabled
    svc = f"{RELEASE}-slurm-bridge-webhook"
    assert f"{svc}.{RELEASE_NS}.svc" in config.webhook.dns_names
    self_made = mode.startswith("self")
    assert config.webhook.generate_certificates is self_made
    assert (config.webhook.registration_name is not None) is self_made
    expected = webhook_configurations(config, ca_bundle=b"", service=(RELEASE_NS, svc, 443), name="x")
    for want in expected:
        got = next(d for d in docs if d["kind"] == want["kind"])
        assert len(got["webhooks"]) == len(want["webhooks"])
        for g, w in zip(got["webhooks"], want["webhooks"], strict=True):
            for key in ("rules", "namespaceSelector", "failurePolicy", "timeoutSeconds", "sideEffects"):
                assert g[key] == w[key], (want["kind"], key)
            assert g["clientConfig"]["service"]["path"] == w["clientConfig"]["service"]["path"]
            assert g.get("matchConditions") == w.get("matchConditions")
        injected = (got["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
        assert (injected == f"{RELEASE_NS}/{svc}") is (not self_made)
    serving = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and any(p["name"] == "webhook" for p in d["spec"]["template"]["spec"]["containers"][0]["ports"])
    ]
    assert [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in serving] == [
        "all-in-one" if "split" not in mode else "scheduler"
    ]
    kinds = [d["kind"] for d in docs]
    assert ("Certificate" in kinds) is (not self_made)
    assert ("Issuer" in kinds) is (mode == "cert-manager-split")


def test_self_made_webhook_certificates_refuse_several_replicas() -> None:
    done = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "slurm.tokenSecret.name=t",
        "--set",
        "webhook.enabled=true",
        check=False,
    )
    assert done.returncode != 0 and "serves one replica" in done.stderr


def test_the_webhook_objects_pass_the_api_servers_validation(admin: KubeCluster) -> None:
    """A server-side dry run: every object the webhook adds is valid for kube-apiserver 1.37 (nothing is
    registered: a webhook without a server behind it would block the managed namespaces)."""
    docs = render(*WEBHOOK_MODES["self-one-replica"])
    wanted = [
        d
        for d in docs
        if d["kind"]
        in (
            "Service",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "ClusterRole",
            "ClusterRoleBinding",
        )
    ]
    _ensure_namespace(admin, RELEASE_NS)
    out = admin.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(wanted))
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io" in out
    assert "validatingwebhookconfiguration.admissionregistration.k8s.io" in out


# ---- installed on the testbed ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> KubeCluster:
    """The testbed's admin credentials from a private copy: every session's `testbed/up.sh` rewrites
    admin.kubeconfig, and a reader caught mid-write falls back to localhost:8080."""
    copy = tmp_path_factory.mktemp("admin") / "admin.kubeconfig"

    def copied() -> bool:
        text = kube.kubeconfig.read_text()
        if "current-context: testbed" not in text:
            return False
        copy.write_text(text)
        copy.chmod(0o600)
        return True

    wait_for("a whole admin.kubeconfig", copied, timeout=30)
    return dataclasses.replace(kube, kubeconfig=copy)


def _ensure_namespace(kube: KubeCluster, name: str) -> None:
    kube.kubectl("create", "namespace", name, "--dry-run=client", "-o", "yaml")
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


@pytest.fixture(scope="module")
def release(admin: KubeCluster) -> Iterator[dict[str, float]]:
    kube = admin
    env_kubeconfig = str(kube.kubeconfig)
    os.environ.setdefault("HELM_CACHE_HOME", str(TESTBED_DIR / "helm" / "cache"))
    os.environ.setdefault("HELM_CONFIG_HOME", str(TESTBED_DIR / "helm" / "config"))
    os.environ.setdefault("HELM_DATA_HOME", str(TESTBED_DIR / "helm" / "data"))
    releases = {RELEASE: INSTALL_VALUES, RELEASE_AIO: [v for v in INSTALL_VALUES if v != "mode=split"]}
    for name in releases:
        helm("uninstall", name, "-n", RELEASE_NS, "--kubeconfig", env_kubeconfig, "--wait", check=False)
    for ns in (RELEASE_NS, PODS_NS, OTHER_NS):
        _ensure_namespace(kube, ns)
    timings = {}
    for name, values in releases.items():
        args = ["install", name, str(CHART), "-n", RELEASE_NS, "--kubeconfig", env_kubeconfig]
        for s in values:
            args += ["--set", s]
        t0 = time.monotonic()
        helm(*args)
        timings[name] = time.monotonic() - t0
        print(f"\nhelm install {name}: {timings[name]:.2f} s")
    yield timings
    for name in releases:
        t0 = time.monotonic()
        helm("uninstall", name, "-n", RELEASE_NS, "--kubeconfig", env_kubeconfig, "--wait")
        print(f"\nhelm uninstall {name}: {time.monotonic() - t0:.2f} s")
        left = kube.kubectl(
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            f"app.kubernetes.io/instance={name}",
            "-o",
            "name",
        )
        assert not left.strip(), f"left after uninstall: {left}"
    kube.kubectl(
        "delete", "namespace", RELEASE_NS, PODS_NS, OTHER_NS, "--wait=true", "--timeout=90s", check=False
    )


def test_install_creates_every_object(admin: KubeCluster, release: dict[str, float]) -> None:
    kube = admin
    manifest = helm("get", "manifest", RELEASE, "-n", RELEASE_NS, "--kubeconfig", str(kube.kubeconfig)).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    assert len(docs) > 20
    for d in docs:
        meta = d["metadata"]
        where = ["-n", meta["namespace"]] if meta.get("namespace") else []
        kind = d["kind"].lower() + "." + (d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else "")
        kube.kubectl(*where, "get", kind.rstrip("."), meta["name"], "-o", "name")
    status = helm("status", RELEASE, "-n", RELEASE_NS, "--kubeconfig", str(kube.kubeconfig)).stdout
    assert "STATUS: deployed" in status
    # The CRDs came from the chart's crds/ (or were there already): served either way.
    for crd in ("nodesets.slinky.slurm.net", "podgroups.scheduling.x-k8s.io"):
        kube.kubectl("get", "crd", crd, "-o", "name")


# What the chart's accounts must NOT be able to do: (account, verb, resource, namespace). `namespace` None
# asks cluster-wide. Each row is one `kubectl auth can-i --as=system:serviceaccount:...`.
MUST_NOT: list[tuple[str, str, str, str | None]] = [
    *[
        (c, "get", "secrets", ns)
        for c in ("scheduler", "controller", "exporter")
        for ns in (RELEASE_NS, PODS_NS)
    ],
    *[(c, "list", "secrets", None) for c in ("scheduler", "controller")],
    *[(c, "create", "pods", PODS_NS) for c in ("scheduler", "controller")],
    *[(c, "delete", "nodes", None) for c in ("scheduler", "controller")],
    *[(c, "patch", "nodes", None) for c in ("scheduler", "controller")],
    *[(c, "escalate", "clusterroles", None) for c in ("scheduler", "controller")],
    *[(c, "bind", "clusterroles", None) for c in ("scheduler", "controller")],
    *[(c, "create", "rolebindings", PODS_NS) for c in ("scheduler", "controller")],
    *[(c, "create", "clusterrolebindings", None) for c in ("scheduler", "controller")],
    *[(c, "impersonate", "serviceaccounts", RELEASE_NS) for c in ("scheduler", "controller")],
    *[(c, "create", "serviceaccounts/token", RELEASE_NS) for c in ("scheduler", "controller")],
    *[(c, "create", "pods/exec", PODS_NS) for c in ("scheduler", "controller")],
    *[(c, "get", "configmaps", RELEASE_NS) for c in ("scheduler", "controller")],
    *[(c, "get", "namespaces/default", None) for c in ("scheduler", "controller")],
    # pod writes only in the managed namespace
    ("scheduler", "patch", "pods", OTHER_NS),
    ("controller", "patch", "pods", OTHER_NS),
    ("controller", "delete", "pods", OTHER_NS),
    ("controller", "delete", "pods", "kube-system"),
    ("controller", "create", "pods/binding", OTHER_NS),
    ("controller", "create", "pods/eviction", OTHER_NS),
    ("controller", "patch", "podgroups.scheduling.x-k8s.io", OTHER_NS),
    # the scheduler never binds, deletes or evicts
    ("scheduler", "create", "pods/binding", PODS_NS),
    ("scheduler", "delete", "pods", PODS_NS),
    ("scheduler", "create", "pods/eviction", PODS_NS),
    # NodeSets: only the controller, only in its namespace, never their spec or scale
    ("scheduler", "list", "nodesets.slinky.slurm.net", RELEASE_NS),
    ("controller", "list", "nodesets.slinky.slurm.net", PODS_NS),
    ("controller", "patch", "nodesets.slinky.slurm.net", RELEASE_NS),
    ("controller", "update", "nodesets.slinky.slurm.net/scale", RELEASE_NS),
    ("controller", "create", "pods", OTHER_NS),
    # Leases: each its own
    ("scheduler", "update", f"leases/{FULLNAME}-controller", RELEASE_NS),
    ("controller", "update", f"leases/{FULLNAME}-scheduler", RELEASE_NS),
    ("controller", "delete", f"leases/{FULLNAME}-controller", RELEASE_NS),
    ("scheduler", "create", "leases", PODS_NS),
    # the all-in-one account: both components' rules, nothing more
    ("all-in-one", "get", "secrets", RELEASE_NS),
    ("all-in-one", "create", "pods", PODS_NS),
    ("all-in-one", "delete", "pods", OTHER_NS),
    ("all-in-one", "update", f"leases/{FULLNAME}-controller", RELEASE_NS),
    ("all-in-one", "delete", "nodes", None),
    # the exporter talks only to Slurm
    ("exporter", "list", "pods", None),
    ("exporter", "create", "events", PODS_NS),
]
# And the rows the flows below need (a sanity check that the question is asked right).
MUST: list[tuple[str, str, str, str | None]] = [
    ("scheduler", "watch", "pods", None),
    ("scheduler", "patch", "pods/status", OTHER_NS),
    ("scheduler", "patch", "pods", PODS_NS),
    ("controller", "create", "pods/binding", PODS_NS),
    ("controller", "create", "pods/eviction", PODS_NS),
    ("controller", "delete", "pods", PODS_NS),
    ("controller", "create", "pods", RELEASE_NS),
    ("controller", "patch", "nodesets.slinky.slurm.net/status", RELEASE_NS),
    ("scheduler", "update", f"leases/{FULLNAME}-scheduler", RELEASE_NS),
    ("controller", "get", f"leases/{FULLNAME}-controller", RELEASE_NS),
    ("scheduler", "get", "namespaces/kube-system", None),
    ("controller", "patch", "podgroups.scheduling.k8s.io/status", PODS_NS),
    ("all-in-one", "create", "pods/binding", PODS_NS),
    ("all-in-one", "update", f"leases/{FULLNAME_AIO}", RELEASE_NS),
    ("all-in-one", "create", "pods", RELEASE_NS),
]


def can_i(kube: KubeCluster, account: str, verb: str, resource: str, namespace: str | None) -> bool:
    subresource: list[str] = []
    name = ""
    base, _, rest = resource.partition("/")
    if rest:
        if base in (
            "pods",
            "nodesets.slinky.slurm.net",
            "serviceaccounts",
            "podgroups.scheduling.k8s.io",
        ) and rest in (
            "binding",
            "eviction",
            "status",
            "scale",
            "exec",
            "token",
        ):
            subresource = [f"--subresource={rest}"]
            resource = base
        else:
            name = rest
            resource = base
    target = f"{resource}/{name}" if name else resource
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    sa = f"system:serviceaccount:{RELEASE_NS}:{SA[account]}"
    cmd = [str(kube.kubectl_path), "--kubeconfig", str(kube.kubeconfig), "auth", "can-i", verb, target]
    done = subprocess.run(
        [*cmd, *subresource, *where, f"--as={sa}"], capture_output=True, text=True, timeout=60
    )
    # A misspelt resource or verb is answered "no" with a warning: that would prove nothing.
    assert done.stdout.strip() in ("yes", "no") and "Warning" not in done.stderr, (cmd, done.stderr)
    return done.stdout.strip() == "yes"


def test_service_accounts_cannot_do_what_they_need_not(admin: KubeCluster, release: dict[str, float]) -> None:
    kube = admin
    with ThreadPoolExecutor(max_workers=6) as pool:  # one kubectl each: ~60 questions
        answers = dict(
            zip(MUST_NOT + MUST, pool.map(lambda row: can_i(kube, *row), MUST_NOT + MUST), strict=True)
        )
    allowed = [row for row in MUST_NOT if answers[row]]
    assert not allowed, f"the chart grants more than the bridge needs: {allowed}"
    missing = [row for row in MUST if not answers[row]]
    assert not missing, f"the chart does not grant: {missing}"


# ---- the bridge with the chart's credentials ------------------------------------------------------------


def token_kubeconfig(kube: KubeCluster, account: str, path: Path) -> Path:
    """A kubeconfig for the chart's ServiceAccount `account`, holding a TokenRequest token."""
    token = kube.kubectl("-n", RELEASE_NS, "create", "token", SA[account], "--duration=2h").strip()
    admin = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = dict(admin["clusters"][0]["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "testbed", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": {"cluster": "testbed", "user": account}}],
                "current-context": account,
            }
        )
    )
    path.chmod(0o600)
    return path


class ComponentProcess(BridgeProcess):
    """`slurm-bridge <component> --config FILE` (the command the chart's split Deployments run)."""

    def __init__(self, config: dict[str, Any], workdir: Path, component: str) -> None:
        super().__init__(config, workdir, name=component)
        self.component = component

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # the token is the only credential
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "slurm_bridge.cli", self.component, "--config", str(self.config_path)]
        self.process = subprocess.Popen(
            [*cmd, "--log-level", "DEBUG"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )


class ChartCluster(Cluster):
    processes: dict[str, ComponentProcess]

    def assert_never_forbidden(self) -> None:
        """Nothing the bridge did for this test's objects was refused. Refusals in namespaces the release does
        not manage are RBAC doing its job: the bridge plans every PodGroup of the cluster (the group
        informer is cluster-wide, whatever scheduler its pods name) and would write their status."""
        ours = (f'namespace "{RELEASE_NS}"', f'namespace "{PODS_NS}"', f'namespace "{OTHER_NS}"')
        for name, p in self.processes.items():
            p.assert_alive()
            refused = [line for line in p.log().splitlines() if "403 Forbidden" in line]
            bad = [line for line in refused if "in the namespace" not in line or any(o in line for o in ours)]
            assert not bad, f"{name} was refused by RBAC:\n" + "\n".join(bad[:10])
            if refused:
                print(f"\n{name}: {len(refused)} writes outside the managed namespaces refused: {refused[0]}")


@pytest.fixture(scope="module")
def cluster(
    slurm_cluster: SlurmCluster,
    admin: KubeCluster,
    release: dict[str, float],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartCluster]:
    kube = admin
    workdir = tmp_path_factory.mktemp(f"chart-{slurm_cluster.version}")
    cluster = ChartCluster(kube, slurm_cluster)
    _clear(cluster)
    cluster.processes = {}
    config = bridge_config(
        slurm_cluster,
        kube,
        cluster_id=f"chart-{slurm_cluster.version.replace('.', '')}",
        metrics_port=_PORTS["scheduler"],
    )
    config["namespaces"] = [PODS_NS]
    config["scheduler_name"] = SCHEDULER_NAME
    kubeconfig = token_kubeconfig(kube, "all-in-one", workdir / "all-in-one.kubeconfig")
    config["kubernetes"] = {"kubeconfig": str(kubeconfig)}
    config["leader_election"].update(lease_name=FULLNAME_AIO, lease_namespace=RELEASE_NS)
    config["nodeset"] = {"enabled": True, "namespace": RELEASE_NS, "slurm_user": "root", "resync_seconds": 3}
    process = ComponentProcess(config, workdir, "run")  # what the all-in-one Deployment runs
    process.start()
    cluster.processes["all-in-one"] = process
    wait_for("bridge ready", lambda: _ready(_PORTS["scheduler"]), timeout=60)
    yield cluster
    for ns in (PODS_NS, OTHER_NS):
        kube.kubectl(
            "-n", ns, "delete", "pods,podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False
        )
    with contextlib.suppress(AssertionError):
        wait_for("test pods gone", lambda: not kube.kubectl("-n", PODS_NS, "get", "pods", "-o", "name"), 40)
    for process in cluster.processes.values():
        process.stop()
    _clear(cluster)


def _ready(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _clear(cluster: Cluster) -> None:
    """No NodeSet, no slurmd pod, no leftover test pod (finalizers dropped) from an earlier run."""
    kube = cluster.kube
    kube.kubectl("-n", RELEASE_NS, "delete", "nodeset", NODESET, "--ignore-not-found", "--wait=false")
    for ns in (RELEASE_NS, PODS_NS, OTHER_NS):
        for name in kube.kubectl("-n", ns, "get", "pods", "-o", "name").split():
            kube.kubectl(
                "-n",
                ns,
                "patch",
                name,
                "--type=json",
                "-p",
                '[{"op":"remove","path":"/metadata/finalizers"}]',
                check=False,
            )
            kube.kubectl("-n", ns, "delete", name, "--grace-period=0", "--force", "--wait=false", check=False)
    wait_for(
        "no pods left in the test namespaces",
        lambda: all(
            not kube.kubectl("-n", ns, "get", "pods", "-o", "name").strip()
            for ns in (RELEASE_NS, PODS_NS, OTHER_NS)
        ),
        timeout=40,
    )


def _pod(name: str, namespace: str, **kwargs: Any) -> dict[str, Any]:
    manifest = pod_manifest(name, namespace=namespace, **kwargs)
    manifest["spec"]["schedulerName"] = SCHEDULER_NAME
    return manifest


def test_single_pod_runs_with_chart_rbac(cluster: ChartCluster) -> None:
    name = unique("chart-pod")
    cluster.create(_pod(name, PODS_NS, annotations={"slinky.slurm.net/job-name": name}))
    pod = wait_for(
        "pod bound and running", lambda: (p := cluster.pod(name, PODS_NS)) and phase(p) == "Running" and p, 60
    )
    (job,) = cluster.jobs_named(name)
    assert job["state"] == "RUNNING" and pod["spec"]["nodeName"] == job["nodes"]
    assert "Scheduled" in cluster.event_reasons(name, PODS_NS)
    cluster.delete_pod(name, PODS_NS)
    wait_for("pod gone", lambda: cluster.pod(name, PODS_NS) is None, 60)
    wait_for("job ended", lambda: cluster.jobs_named(name)[0]["state"] in ("COMPLETED", "CANCELLED"), 60)
    cluster.assert_never_forbidden()


def test_pod_in_a_namespace_not_managed_is_told_why(cluster: ChartCluster) -> None:
    name = unique("chart-refused")
    cluster.create(_pod(name, OTHER_NS))
    said = wait_for(
        "PodScheduled=False",
        lambda: (
            (c := condition(cluster.pod(name, OTHER_NS), "PodScheduled")) and c.get("status") == "False" and c
        ),
        60,
    )
    assert said["reason"] == "NamespaceNotAllowed"
    assert "NamespaceNotAllowed" in cluster.event_reasons(name, OTHER_NS)
    pod = cluster.pod(name, OTHER_NS)
    assert pod is not None and not pod["metadata"].get("finalizers") and not cluster.jobs_named(name)
    cluster.delete_pod(name, OTHER_NS)
    cluster.assert_never_forbidden()


def test_gang_runs_with_chart_rbac(cluster: ChartCluster) -> None:
    group = unique("chart-gang")
    cluster.create(
        {
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {
                "name": group,
                "namespace": PODS_NS,
                "annotations": {"slinky.slurm.net/job-name": group},
            },
            "spec": {"minMember": 2},
        }
    )
    members = [f"{group}-{i}" for i in range(2)]
    for name in members:
        cluster.create(_pod(name, PODS_NS, labels={"scheduling.x-k8s.io/pod-group": group}))
    pods = wait_for(
        "both members running",
        lambda: (
            (ps := [cluster.pod(n, PODS_NS) for n in members])
            and all(phase(p) == "Running" for p in ps)
            and ps
        ),
        90,
    )
    jobs = [j for j in cluster.jobs_named(group) if j["state"] == "RUNNING"]
    assert len(jobs) == 1, jobs
    assert len({p["spec"]["nodeName"] for p in pods if p}) == 2
    status = json.loads(
        cluster.kube.kubectl("-n", PODS_NS, "get", "podgroups.scheduling.x-k8s.io", group, "-o", "json")
    )
    wait_for(
        "group status Running",
        lambda: (
            json.loads(
                cluster.kube.kubectl(
                    "-n", PODS_NS, "get", "podgroups.scheduling.x-k8s.io", group, "-o", "json"
                )
            )
            .get("status", {})
            .get("phase")
            == "Running"
        ),
        30,
    )
    assert status["metadata"]["labels"].get("scheduler.slinky.slurm.net/slurm-jobid") == jobs[0]["id"]
    for name in members:
        cluster.delete_pod(name, PODS_NS)
    cluster.kube.kubectl("-n", PODS_NS, "delete", "podgroups.scheduling.x-k8s.io", group, "--wait=false")
    wait_for("members gone", lambda: all(cluster.pod(n, PODS_NS) is None for n in members), 60)
    cluster.assert_never_forbidden()


def _nodeset(version: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "slinky.slurm.net/v1beta1",
        "kind": "NodeSet",
        "metadata": {
            "name": NODESET,
            "namespace": RELEASE_NS,
            "annotations": {"slurm-bridge.io/partition": "nodeset"},
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": {"testbed.slurm-bridge.io/slurm-version": version}},
                "spec": {"terminationGracePeriodSeconds": 1},
            },
        },
    }


def _scaled(nodeset: dict[str, Any]) -> dict[str, Any]:
    conditions = nodeset.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Scaled"), {})


def _slurm_state(cluster: Cluster, node: str) -> str:
    return cluster.slurm.cli("sinfo", "-h", "-N", "-n", node, "-o", "%T", check=False).strip()


def test_nodeset_scales_with_chart_rbac(cluster: ChartCluster) -> None:
    kube = cluster.kube

    def get() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            kube.kubectl("-n", RELEASE_NS, "get", "nodeset", NODESET, "-o", "json")
        )
        return found

    kube.kubectl("apply", "-f", "-", stdin=json.dumps(_nodeset(cluster.slurm.version, 1)))
    wait_for("slurmd pod ns-0 created", lambda: cluster.pod("ns-0", RELEASE_NS) is not None, 60)
    wait_for("status.replicas 1", lambda: get().get("status", {}).get("replicas") == 1, 60)
    assert get()["status"].get("selector")
    # The stand-in kubelet runs a real `slurmd -N ns-0`: wait until Slurm has it, so scale-in must drain it.
    wait_for("ns-0 Running", lambda: phase(cluster.pod("ns-0", RELEASE_NS)) == "Running", 60)
    wait_for("Slurm node ns-0 idle", lambda: "idle" in _slurm_state(cluster, "ns-0"), 60)
    kube.kubectl("-n", RELEASE_NS, "scale", f"nodeset/{NODESET}", "--replicas=0")
    if cluster.slurm.version == "22.05":
        # REST v0.0.38 has no node update: the drain is refused, said in the status, and nothing deleted.
        wait_for("Scaled=False DrainRefused", lambda: _scaled(get()).get("reason") == "DrainRefused", 30)
        assert cluster.pod("ns-0", RELEASE_NS) is not None
        assert "DrainRefused" in cluster.event_reasons(NODESET, RELEASE_NS)
        kube.kubectl("-n", RELEASE_NS, "delete", "nodeset", NODESET, "--wait=true")
        wait_for("ns-0 collected with its NodeSet", lambda: cluster.pod("ns-0", RELEASE_NS) is None, 60)
        for state in ("down", "future"):  # the node back to how the testbed declares it
            cluster.slurm.cli(
                "scontrol", "update", "nodename=ns-0", f"state={state}", "reason=chart-e2e", check=False
            )
    else:
        wait_for(
            "slurmd pod ns-0 deleted after the drain", lambda: cluster.pod("ns-0", RELEASE_NS) is None, 90
        )
        wait_for("status.replicas 0", lambda: get().get("status", {}).get("replicas") == 0, 60)
        events = cluster.event_reasons(NODESET, RELEASE_NS)
        assert {"CreatedPod", "Draining", "DeletedPod"} <= events, events
        kube.kubectl("-n", RELEASE_NS, "delete", "nodeset", NODESET, "--wait=false")
    cluster.assert_never_forbidden()


def test_every_resource_the_bridge_names_has_a_rule() -> None:
    """Drift guard: a ResourceRef the bridge's code uses (kube_client's names) without a rule in the chart
    fails here before it fails at a site. Only CustomResourceDefinitions (used by tests) have none."""
    import kube_client

    refs = {
        name: getattr(kube_client, name)
        for name in kube_client.__all__
        if isinstance(getattr(kube_client, name), kube_client.ResourceRef)
    }
    docs = render(*MODES["split-key-nodeset"])  # NodeSets on, cluster id derived: every rule rendered
    granted = {
        (group, resource)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for rule in d["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
    }
    missing = [
        name
        for name, ref in refs.items()
        if name != "CUSTOM_RESOURCE_DEFINITIONS" and (ref.group, ref.plural) not in granted
    ]
    assert not missing, f"no RBAC rule in the chart for {missing}"
    assert not any(r.startswith("secrets") or r == "*" for _, r in granted)
    assert not any("*" in rule.get("verbs", []) for d in docs if "rules" in d for rule in d["rules"])
