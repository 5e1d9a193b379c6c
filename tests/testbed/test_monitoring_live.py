"""The monitoring chain on the testbed: exporter → Prometheus → prometheus-adapter → aggregated API → HPA.

testbed/monitoring.sh (run by testbed/up.sh) starts Prometheus on 127.0.0.1:17490, scraping the bridge's
metrics address 127.0.0.1:17480 (job `slurm-bridge`), and prometheus-adapter with
deploy/monitoring/prometheus-adapter-rules.yaml as `v1beta1.external.metrics.k8s.io`. These tests start
the bridge's metrics process themselves (`slurm-bridge run` or `slurm-bridge exporter` with
.testbed/bridge.yaml, the default Slurm cluster) and check, against the real services:

- every PromQL expression in deploy/monitoring/ (Grafana dashboard, adapter rules, KEDA trigger) parses
  and returns series;
- the External metric follows the `nodeset` partition's queue (jobs submitted with sbatch);
- the HPA of deploy/monitoring/hpa-nodeset.yaml scales NodeSet `ns` up for pending jobs and back down
  when they are cancelled. No NodeSet controller runs here: the test copies spec.replicas to
  status.replicas and sets status.selector, as a controller would.

The jobs a test submits are named `mon-live-*` and cancelled when it ends. Prometheus or the adapter
missing is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import testbed_env
from tests.testbed.bridge_harness import wait_for
from tests.testbed_env import REPO, TESTBED_DIR, KubeCluster, SlurmCluster

pytestmark = [pytest.mark.testbed]

MONITORING = REPO / "deploy" / "monitoring"
BRIDGE_CONFIG = TESTBED_DIR / "bridge.yaml"
METRICS_URL = "http://127.0.0.1:17480/metrics"
EXTERNAL_API = "/apis/external.metrics.k8s.io/v1beta1"
NAMESPACE = "slurm-bridge-system"
NODESET = "ns"
PARTITION = "nodeset"  # ns-[0-7], all FUTURE until NodeSet pods run slurmd
SELECTOR = "app.kubernetes.io/name=slurmd,app.kubernetes.io/instance=ns"
JOB = "slurm-bridge"
# Grafana variables as the test resolves them
DASHBOARD_VARS = {"$__rate_interval": "1m", "$job": JOB, "$partition": ".*"}


# ---- the services ----------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=10.0)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises on a parse or evaluation error."""
        r = self.http.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def series(self, match: str) -> list[dict[str, str]]:
        r = self.http.get(f"{self.url}/api/v1/series", params={"match[]": match, "start": time.time() - 60})
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, str]] = body["data"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def default_cluster(testbed: testbed_env.Testbed) -> SlurmCluster:
    return testbed.slurm[testbed.default_version]


@pytest.fixture(scope="module")
def prometheus(testbed: testbed_env.Testbed) -> Prometheus:
    url = testbed.env.get("PROMETHEUS_URL", "http://127.0.0.1:17490")
    try:
        ready = httpx.get(f"{url}/-/ready", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        ready = False
    if not ready:
        pytest.fail(f"Prometheus is not running at {url} (testbed/monitoring.sh up)", pytrace=False)
    return Prometheus(url)


@pytest.fixture(scope="module")
def external_api(kube: KubeCluster) -> KubeCluster:
    out = kube.kubectl("get", "--raw", EXTERNAL_API, check=False)
    if '"external.metrics.k8s.io/v1beta1"' not in out:
        pytest.fail(
            f"{EXTERNAL_API} is not served (prometheus-adapter missing? testbed/monitoring.sh up)",
            pytrace=False,
        )
    return kube


@contextlib.contextmanager
def bridge_metrics(
    command: str, prometheus: Prometheus, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`slurm-bridge COMMAND --config .testbed/bridge.yaml` serving 127.0.0.1:17480, until Prometheus has
    scraped it twice (rate() needs two samples)."""
    log_path = workdir / f"{command}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slurm_bridge.cli", command, "--config", str(BRIDGE_CONFIG)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def serving() -> bool:
            assert proc.poll() is None, f"{command} exited:\n{log_path.read_text(errors='replace')[-3000:]}"
            try:
                return "slurm_exporter_up 1.0" in httpx.get(METRICS_URL, timeout=2.0).text
            except httpx.HTTPError:
                return False

        wait_for(f"slurm-bridge {command} serving {METRICS_URL}", serving, timeout=60, every=0.5)
        serving_since = time.time()

        def scraped_twice() -> bool:
            # Prometheus scrapes every 5 s: a latest scrape 6 s after the process served means the one
            # before it saw this process too
            # timestamp() of a plain selector: the sample's time (of an expression it is the query's)
            last = prometheus.value(f'timestamp(slurm_exporter_up{{job="{JOB}"}})')
            return last is not None and last > serving_since + 6

        wait_for("Prometheus to scrape the bridge twice", scraped_twice, timeout=60, every=1.0)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- Slurm jobs --------------------------------------------------------------------------------------


class Queue:
    """Jobs this test submits to the `nodeset` partition; all cancelled on exit."""

    def __init__(self, cluster: SlurmCluster) -> None:
        self.cluster = cluster
        self.name = f"mon-live-{uuid.uuid4().hex[:8]}"
        self.ids: list[str] = []

    def submit(self, nodes: int, *, hold: bool = False) -> str:
        args = ["sbatch", "--parsable", "-p", PARTITION, "-N", str(nodes), "-J", self.name, "-t", "10"]
        args += ["--chdir=/tmp", "-o", "/dev/null"]
        if hold:
            args.append("--hold")
        job_id = self.cluster.cli(*args, "--wrap", "sleep 600").strip().split(";")[0]
        self.ids.append(job_id)
        return job_id

    def cancel(self) -> None:
        if self.ids:
            self.cluster.cli("scancel", *self.ids, check=False)
        self.cluster.cli("scancel", "-n", self.name, check=False)

    def gone(self) -> bool:
        return not self.cluster.cli("squeue", "-h", "-n", self.name, "-t", "PD,R,CG,S", check=False).strip()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


# ---- (a) every query in deploy/monitoring returns series -----------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = str(target["expr"])
            for var, value in DASHBOARD_VARS.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unresolved Grafana variable in {expr!r}"
            out.append((f"dashboard {panel['title']!r} {target['refId']}", expr))
    return out


def rule_queries(label_matchers: str) -> list[tuple[str, str, str]]:
    """(metric served, seriesQuery, metricsQuery with the adapter's templates filled in)."""
    rules = yaml.safe_load((MONITORING / "prometheus-adapter-rules.yaml").read_text())
    out = []
    for rule in rules["externalRules"]:
        series_query = str(rule["seriesQuery"])
        name = series_query.split('__name__="', 1)[1].split('"', 1)[0]
        served = str(rule.get("name", {}).get("as", name))
        query = str(rule["metricsQuery"]).replace("<<.Series>>", name)
        query = query.replace("<<.LabelMatchers>>", label_matchers)
        out.append((served, series_query, query))
    return out


def test_every_monitoring_query_returns_series(
    prometheus: Prometheus, default_cluster: SlurmCluster, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(Queue(default_cluster))
        queue.submit(1, hold=True)  # a pending reason (JobHeldUser) for "jobs pending by reason"
        queue.submit(8)  # pending for Resources (ns-[0-7] are never all up here): the "startable" rule
        # `run` (not only `exporter`): the dashboard's bridge latencies come from the scheduler/controller
        stack.enter_context(
            bridge_metrics("run", prometheus, tmp_path, env={"SLURM_BRIDGE_NODESET__ENABLED": "false"})
        )

        def startable_seen() -> bool:
            return bool(
                prometheus.query(
                    f'slurm_partition_jobs_pending_by_reason{{job="{JOB}",partition="{PARTITION}",'
                    'reason=~"Resources|Priority|None"}'
                )
            )

        wait_for("a Resources-pending job in Prometheus", startable_seen, timeout=30, every=1.0)

        queries = dashboard_queries()
        for served, series_query, query in rule_queries(f'partition="{PARTITION}"'):
            queries.append((f"adapter rule {served}", query))
            assert prometheus.series(series_query), (
                f"adapter rule {served}: seriesQuery {series_query} matches nothing"
            )
        keda = yaml.safe_load((MONITORING / "keda-scaledobject.yaml").read_text())
        for trigger in keda["spec"]["triggers"]:
            queries.append(("keda trigger", str(trigger["metadata"]["query"])))

        failures = []
        for what, expr in queries:
            try:
                if not prometheus.query(expr):
                    failures.append(f"{what}: no series for {expr}")
            except ValueError as e:
                failures.append(f"{what}: {e} in {expr}")
        assert not failures, "\n".join(failures)
        print(f"{len(queries)} queries checked against {prometheus.url}")


def test_deploy_manifests_are_well_formed(kube: KubeCluster) -> None:
    """Server-side dry run where the API exists on the testbed; KEDA's and prometheus-operator's CRDs
    do not (KEDA takes ~16 min to build on 2 cores), so those objects are only checked for shape."""
    kube.kubectl("apply", "--dry-run=server", "-f", str(MONITORING / "hpa-nodeset.yaml"))
    docs = list(yaml.safe_load_all((MONITORING / "servicemonitor.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Service", "ServiceMonitor"}
    kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(kinds["Service"]))
    monitor = kinds["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = monitor["spec"]["selector"]["matchLabels"].items()
    assert selected <= kinds["Service"]["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in kinds["Service"]["spec"]["ports"]
    }

    keda = yaml.safe_load((MONITORING / "keda-scaledobject.yaml").read_text())
    assert keda["apiVersion"] == "keda.sh/v1alpha1" and keda["kind"] == "ScaledObject"
    target = keda["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "slinky.slurm.net/v1beta1",
        "NodeSet",
        NODESET,
    )
    assert 0 <= keda["spec"]["minReplicaCount"] <= keda["spec"]["maxReplicaCount"] <= 8
    trigger = keda["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0

    scrape = yaml.safe_load((MONITORING / "prometheus-scrape.yaml").read_text())
    assert [c["job_name"] for c in scrape["scrape_configs"]] == [JOB, "slurmctld"]


# ---- (b) the External metric through the aggregated API -------------------------------------------


def quantity(value: str) -> float:
    """A Kubernetes quantity as the metrics API writes it ("4", "500m", "2k")."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if value and value[-1] in suffixes:
        return float(value[:-1]) * suffixes[value[-1]]
    return float(value)


def external_value(kube: KubeCluster, metric: str, partition: str = PARTITION) -> float | None:
    selector = urllib.parse.quote(f"partition={partition}")
    out = kube.kubectl(
        "get",
        "--raw",
        f"{EXTERNAL_API}/namespaces/{NAMESPACE}/{metric}?labelSelector={selector}",
        check=False,
    )
    if not out.strip():
        return None
    items = json.loads(out).get("items", [])
    return sum(quantity(str(i["value"])) for i in items) if items else None


def wait_value(what: str, probe: Callable[[], float | None], want: float, timeout: float) -> float:
    """Seconds until probe() == want."""
    t0 = time.monotonic()
    wait_for(f"{what} == {want}", lambda: probe() == want, timeout=timeout, every=0.5)
    return time.monotonic() - t0


def test_external_metric_follows_the_nodeset_queue(
    prometheus: Prometheus, external_api: KubeCluster, default_cluster: SlurmCluster, tmp_path: Path
) -> None:
    kube = external_api
    with bridge_metrics("exporter", prometheus, tmp_path), Queue(default_cluster) as queue:

        def listed() -> bool:
            # the adapter relists Prometheus' series every 10 s: a metric whose series went stale
            # (no exporter running) comes back on the next relist
            resources = json.loads(kube.kubectl("get", "--raw", EXTERNAL_API))["resources"]
            wanted = {"slurm_partition_nodes_demanded", "slurm_partition_jobs_pending"}
            return wanted <= {r["name"] for r in resources}

        wait_for("the adapter to list the rules' metrics", listed, timeout=30, every=1.0)

        def demanded() -> float | None:
            return external_value(kube, "slurm_partition_nodes_demanded")

        def pending() -> float | None:
            return external_value(kube, "slurm_partition_jobs_pending")

        wait_for("the External metric for partition nodeset", lambda: demanded() is not None, timeout=60)
        d0, p0 = demanded(), pending()
        assert d0 is not None and p0 is not None
        # one held 1-node job (pending, demands nothing) and two 2-node jobs. With no slurmd in `nodeset`
        # they pend (Resources, then ReqNodeNotAvail behind it): +4 nodes demanded, +3 pending. If NodeSet
        # pods run slurmd there (a NodeSet controller left some), they may start: still +4 demanded
        # (running jobs' nodes count) unless they share nodes, so the test asks for at least +2.
        t0 = time.monotonic()
        queue.submit(1, hold=True)
        queue.submit(2)
        queue.submit(2)

        def as_prometheus_says() -> float | None:
            """The adapter's value once it is the exporter's current one, and up by at least 2."""
            value = demanded()
            prom = prometheus.value(f'max(slurm_partition_nodes_demanded{{partition="{PARTITION}"}})')
            return value if value is not None and value == prom and value >= d0 + 2 else None

        high = wait_for("nodes demanded in nodeset to rise", as_prometheus_says, timeout=90, every=0.5)
        up = time.monotonic() - t0
        wait_for("jobs pending in nodeset to rise", lambda: (pending() or 0) >= p0 + 1, timeout=30)
        queue.cancel()
        down = wait_value("nodes demanded in nodeset after scancel", demanded, d0, timeout=90)
        wait_value("jobs pending in nodeset after scancel", pending, p0, timeout=30)
        print(
            f"External metric via the aggregated API: sbatch -> demanded {d0:g}->{high:g} in {up:.1f} s; "
            f"scancel -> {d0:g} in {down:.1f} s"
        )


# ---- (c) the HPA scales the NodeSet ----------------------------------------------------------------


class FakeNodeSetController:
    """Keeps status.replicas = spec.replicas and status.selector set on NodeSet `ns`, as the NodeSet
    controller would (the HPA divides by status.replicas and needs the selector)."""

    def __init__(self, kube: KubeCluster) -> None:
        self.kube = kube
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.history: list[tuple[float, int]] = []

    def spec_replicas(self) -> int:
        out = self.kube.kubectl("-n", NAMESPACE, "get", "nodeset", NODESET, "-o", "jsonpath={.spec.replicas}")
        return int(out or 0)

    def set_status(self, replicas: int) -> None:
        patch = {"status": {"replicas": replicas, "selector": SELECTOR}}
        self.kube.kubectl(
            "-n", NAMESPACE, "patch", "nodeset", NODESET, "--subresource=status", "--type=merge",
            "-p", json.dumps(patch),
        )  # fmt: skip

    def _loop(self) -> None:
        last = -1
        while not self.stop.is_set():
            with contextlib.suppress(RuntimeError, ValueError):
                want = self.spec_replicas()
                if want != last:
                    self.set_status(want)
                    self.history.append((time.monotonic(), want))
                    last = want
            self.stop.wait(0.5)

    def __enter__(self) -> FakeNodeSetController:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def expected_replicas(demand: float, hpa: dict[str, Any]) -> int:
    spec = hpa["spec"]
    target = quantity(str(spec["metrics"][0]["external"]["target"]["averageValue"]))
    return int(min(spec["maxReplicas"], max(spec.get("minReplicas", 1), math.ceil(demand / target))))


def test_hpa_scales_the_nodeset_with_the_queue(
    prometheus: Prometheus, external_api: KubeCluster, default_cluster: SlurmCluster, tmp_path: Path
) -> None:
    kube = external_api
    hpa_file = MONITORING / "hpa-nodeset.yaml"
    hpa = yaml.safe_load(hpa_file.read_text())
    hpa_name = hpa["metadata"]["name"]

    def replicas() -> int:
        out = kube.kubectl("-n", NAMESPACE, "get", "nodeset", NODESET, "-o", "jsonpath={.spec.replicas}")
        return int(out or 0)

    # Kubernetes 1.37's HPA scales a target up from zero only if it scaled it to zero itself (condition
    # ScaledToZero); a target at 0 from the start is "ScalingDisabled". So start at 1 and let it go to 0.
    kube.kubectl("-n", NAMESPACE, "scale", "nodeset", NODESET, "--replicas=1")
    fake = FakeNodeSetController(kube)
    fake.set_status(1)
    try:
        with (
            bridge_metrics("exporter", prometheus, tmp_path),
            Queue(default_cluster) as queue,
            fake,
        ):
            base = external_value(kube, "slurm_partition_nodes_demanded")
            assert base is not None, "no External metric for partition nodeset"
            kube.kubectl("apply", "-f", str(hpa_file))
            start = expected_replicas(base, hpa)
            wait_for(f"the HPA to settle at {start}", lambda: replicas() == start, timeout=90)
            fake.history.clear()

            # three 2-node jobs in `nodeset`: 6 more nodes demanded (pending; or running, if NodeSet pods
            # with slurmd exist there: their nodes count too)
            t0 = time.monotonic()
            for _ in range(3):
                queue.submit(2)

            def risen() -> int | None:
                value = external_value(kube, "slurm_partition_nodes_demanded")
                return expected_replicas(value, hpa) if value is not None and value >= base + 2 else None

            def scaled_up() -> int | None:
                want = risen()
                return want if want is not None and want > start and replicas() == want else None

            high = wait_for("spec.replicas of NodeSet ns to follow the demand up", scaled_up, timeout=120)
            scale_up = time.monotonic() - t0

            t1 = time.monotonic()
            queue.cancel()
            wait_for("the jobs to leave the queue", queue.gone, timeout=60)
            wait_for(f"spec.replicas of NodeSet ns back to {start}", lambda: replicas() == start, timeout=150)
            scale_down = time.monotonic() - t1
            window = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            steps = [r for _, r in fake.history]
            print(
                f"HPA on NodeSet ns: demand +6 nodes -> replicas {start}->{high} in {scale_up:.1f} s; "
                f"jobs cancelled -> {start} in {scale_down:.1f} s (scale-down window {window} s); "
                f"replica steps {steps}"
            )
            # no oscillation: up in steps that only rise, then down once
            peak = steps.index(max(steps))
            assert steps[: peak + 1] == sorted(steps[: peak + 1]), steps
            assert steps[peak:] == sorted(steps[peak:], reverse=True), steps
    finally:
        kube.kubectl("-n", NAMESPACE, "delete", "hpa", hpa_name, "--ignore-not-found")
        kube.kubectl("-n", NAMESPACE, "scale", "nodeset", NODESET, "--replicas=0", check=False)
        with contextlib.suppress(RuntimeError):
            fake.set_status(0)
