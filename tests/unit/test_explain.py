from __future__ import annotations

import io
import json
import os
import sys
import types
from pathlib import Path

import pytest

from bridge.config import BridgeConfig
from bridge.explain import ManifestError, explain_manifests, sbatch_command, sbatch_options
from slurm_bridge.cli import main
from slurm_client import JobSpec

SEED_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: pause-pod
  namespace: slurm-bridge
  annotations:
    slinky.slurm.net/job-name: "pausepod"
spec:
  schedulerName: slurm-bridge-scheduler
  containers:
  - name: pause-pod
    image: registry.k8s.io/pause:3.6
"""

GPU_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: trainer
  namespace: slurm-bridge
  annotations:
    slurmjob.slinky.slurm.net/timelimit: "30"
spec:
  schedulerName: slurm-bridge-scheduler
  containers:
  - name: main
    image: trainer
    resources:
      requests: {cpu: 1500m, memory: 1Gi}
      limits: {nvidia.com/gpu: 1}
"""


@pytest.fixture(autouse=True)
def _no_bridge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("SLURM_BRIDGE_"):
            monkeypatch.delenv(name)


def run(tmp_path: Path, manifest: str, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "manifest.yaml"
    path.write_text(manifest)
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", stdout)
        patch.setattr("sys.stderr", stderr)
        code = main(["explain", "-f", str(path), *extra])
    return code, stdout.getvalue(), stderr.getvalue()


def test_explain_prints_job_json_and_sbatch_line(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, GPU_POD)
    assert (code, err) == (0, "")
    header, *body, sbatch = out.strip().splitlines()
    assert header == "# Pod slurm-bridge/trainer"
    job = json.loads("\n".join(body))
    assert job["name"] == "trainer"
    assert (job["cpus_per_task"], job["memory_per_node_mb"], job["gres_per_node"]) == (2, 1024, {"gpu": 1})
    assert sbatch == (
        "sbatch --job-name=trainer --partition=slurm-bridge --nodes=1 --ntasks=1 --cpus-per-task=2"
        " --mem=1024M --gres=gpu:1 --time=30"
    )


def test_seed_demo_pod_keeps_its_job_name(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, SEED_POD)
    assert code == 0
    assert (
        "sbatch --job-name=pausepod --partition=slurm-bridge --nodes=1 --ntasks=1 --cpus-per-task=1 --mem=1M"
        in out
    )


def test_config_file_applies(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("slurm:\n  partition: k8s\n  default_time_limit_minutes: 15\n")
    code, out, _ = run(tmp_path, SEED_POD, "--config", str(config))
    assert code == 0
    assert "--partition=k8s" in out
    assert "--time=15" in out


def test_translation_errors_exit_1_and_list_every_problem(tmp_path: Path) -> None:
    bad = SEED_POD.replace(
        '    slinky.slurm.net/job-name: "pausepod"',
        '    slinky.slurm.net/timelimit: "1h"\n    slinky.slurm.net/exclusive: "sometimes"',
    )
    code, out, err = run(tmp_path, bad + "---\n" + GPU_POD)
    assert code == 1
    assert "error: Pod slurm-bridge/pause-pod cannot become a Slurm job:" in err
    assert "  - slinky.slurm.net/timelimit: '1h' is not a whole number >= 1" in err
    assert '  - slinky.slurm.net/exclusive: \'sometimes\' is not "true" or "false"' in err
    assert "sbatch --job-name=trainer" in out  # the good pod is still explained


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("kind: [", "not valid YAML"),
        ("kind: Service\nmetadata: {name: s}\n", "no Pod, or workload with a pod template, found"),
        ("- just\n- a list\n", "expected a Kubernetes object"),
    ],
    ids=["bad-yaml", "no-pods", "not-an-object"],
)
def test_unusable_manifest_exits_2(tmp_path: Path, manifest: str, message: str) -> None:
    code, out, err = run(tmp_path, manifest)
    assert (code, out) == (2, "")
    assert message in err


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-f", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("workers: none\n")
    assert main(["explain", "-f", str(tmp_path), "--config", str(config)]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_manifest_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SEED_POD))
    assert main(["explain", "-f", "-"]) == 0
    assert "--job-name=pausepod" in capsys.readouterr().out


WORKLOAD_SPEC = """\
  template:
    metadata:
      annotations: {slinky.slurm.net/partition: gpu}
    spec:
      schedulerName: slurm-bridge-scheduler
      containers: [{name: c, image: x, resources: {requests: {cpu: "3"}}}]
"""


@pytest.mark.parametrize(
    ("manifest", "source"),
    [
        (
            f"kind: Deployment\nmetadata: {{name: web, namespace: slurm-bridge}}\nspec:\n{WORKLOAD_SPEC}",
            "Deployment",
        ),
        (
            f"kind: ReplicaSet\nmetadata: {{name: web, namespace: slurm-bridge}}\nspec:\n{WORKLOAD_SPEC}",
            "ReplicaSet",
        ),
        (f"kind: Job\nmetadata: {{name: web, namespace: slurm-bridge}}\nspec:\n{WORKLOAD_SPEC}", "Job"),
        (
            "kind: CronJob\nmetadata: {name: web, namespace: slurm-bridge}\n"
            "spec:\n  jobTemplate:\n    spec:\n"
            + "".join(f"    {line}\n" for line in WORKLOAD_SPEC.splitlines()),
            "CronJob",
        ),
        (
            "kind: List\nitems:\n- kind: Job\n  metadata: {name: web, namespace: slurm-bridge}\n  spec:\n"
            + "".join(f"  {line}\n" for line in WORKLOAD_SPEC.splitlines()),
            "Job",
        ),
    ],
    ids=["deployment", "replicaset", "job", "cronjob", "list"],
)
def test_workloads_use_their_pod_template(manifest: str, source: str) -> None:
    explanation = explain_manifests(manifest, BridgeConfig())
    (item,) = explanation.pods
    assert item.source == f"{source} slurm-bridge/web"
    assert item.spec is not None
    assert (item.spec.name, item.spec.partition, item.spec.cpus_per_task) == ("web", "gpu", 3)


def test_notes_for_pods_the_bridge_would_not_take() -> None:
    pod = "kind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: c}]}\n"
    manifest = pod + "---\nkind: Service\n"
    explanation = explain_manifests(manifest, BridgeConfig())
    (item,) = explanation.pods
    assert explanation.skipped == ("Service",)
    assert any("schedulerName is not set" in note for note in item.notes)
    assert any("namespace 'default' is not allowed" in note for note in item.notes)


def test_missing_namespace_assumes_an_allowed_one() -> None:
    manifest = "kind: Pod\nmetadata: {name: p}\nspec: {schedulerName: slurm-bridge-scheduler}\n"
    explanation = explain_manifests(manifest, BridgeConfig(namespaces=["ml"]))
    assert explanation.pods[0].source == "Pod ml/p"
    assert explanation.pods[0].notes == ("no namespace given; assuming 'ml'",)


def test_manifest_error_is_typed() -> None:
    with pytest.raises(ManifestError):
        explain_manifests("", BridgeConfig())


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        (JobSpec(name="a"), ["--job-name=a", "--nodes=1"]),
        (
            JobSpec(name="a", min_nodes=1, max_nodes=3, tasks=1, cpus_per_task=4, memory_per_node_mb=512),
            ["--job-name=a", "--nodes=1-3", "--ntasks=1", "--cpus-per-task=4", "--mem=512M"],
        ),
        (
            JobSpec(name="a", gres_per_node={"gpu": 1, "gpu:a100": 2}, time_limit_minutes=5, exclusive=True),
            ["--job-name=a", "--nodes=1", "--gres=gpu:1,gpu:a100:2", "--time=5", "--exclusive"],
        ),
        (
            JobSpec(
                name="a",
                partition="p",
                account="acct",
                qos="q",
                constraints="intel&ib",
                reservation="r",
                licenses="matlab:1",
                wckey="w",
                priority=10,
                nice=5,
                excluded_nodes=["n1", "n2"],
                hold=True,
            ),
            [
                "--job-name=a",
                "--partition=p",
                "--account=acct",
                "--qos=q",
                "--nodes=1",
                "--constraint=intel&ib",
                "--reservation=r",
                "--licenses=matlab:1",
                "--wckey=w",
                "--priority=10",
                "--nice=5",
                "--exclude=n1,n2",
                "--hold",
            ],
        ),
    ],
    ids=["minimal", "node-range-and-resources", "gres-time-exclusive", "everything-else"],
)
def test_sbatch_options(spec: JobSpec, options: list[str]) -> None:
    assert sbatch_options(spec) == options


def test_sbatch_command_quotes_for_the_shell() -> None:
    assert sbatch_command(JobSpec(name="my job", constraints="a&b")) == (
        "sbatch '--job-name=my job' --nodes=1 '--constraint=a&b'"
    )


@pytest.mark.parametrize(
    ("argv", "components"),
    [
        (["scheduler"], {"scheduler"}),
        (["controller"], {"controller"}),
        (["exporter"], {"exporter"}),
        (["run"], {"scheduler", "controller", "exporter"}),
        (["run", "--components", "controller, scheduler"], {"scheduler", "controller"}),
        (["webhook"], {"webhook"}),
        (["run", "--components", "webhook,scheduler"], {"webhook", "scheduler"}),
    ],
    ids=["scheduler", "controller", "exporter", "run-all", "run-some", "webhook", "run-with-webhook"],
)
def test_components_start_through_the_runner(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], components: set[str]
) -> None:
    calls: list[set[str]] = []

    def fake_run(config: BridgeConfig, chosen: set[str]) -> int:
        calls.append(chosen)
        return 3

    monkeypatch.setitem(sys.modules, "slurm_bridge.app", types.SimpleNamespace(run=fake_run))
    assert main(argv) == 3
    assert calls == [components]


def test_missing_runner_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "slurm_bridge.app", None)  # makes the import fail
    assert main(["controller"]) == 2
    assert "controller: not available in this build" in capsys.readouterr().err


def test_run_rejects_unknown_components(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--components", "scheduler,bogus"]) == 2
    assert "--components takes a subset of" in capsys.readouterr().err


def test_run_adds_the_webhook_when_the_config_enables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[set[str]] = []

    def fake_run(config: BridgeConfig, chosen: set[str]) -> int:
        calls.append(chosen)
        return 0

    monkeypatch.setitem(sys.modules, "slurm_bridge.app", types.SimpleNamespace(run=fake_run))
    monkeypatch.setenv("SLURM_BRIDGE_WEBHOOK__ENABLED", "true")
    assert main(["run"]) == 0
    assert calls == [{"scheduler", "controller", "exporter", "webhook"}]
