"""`make demo-policy`: Slurm's fair-share and preemption deciding for Kubernetes pods, on the testbed.

Two tenants (accounts physics and biology, fair-share 60/40; biology has just used the whole cluster)
queue the same backlog through the bridge; Slurm starts physics' pods first. Then a `high` QOS job
preempts a `scavenger` pod, which is evicted. Each step prints Slurm's view (squeue / sprio / sshare /
sacct) beside `kubectl get pods`, as a Slurm admin and a Kubernetes user would look at it.

Run on the default cluster of .testbed/env (SLURM_VERSION picks another: 22.05, 24.11, 26.05).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TESTBED = Path(os.environ.get("TESTBED_DIR", REPO / ".testbed"))
NS = "demo-policy"
SCHEDULER = "demo-policy-scheduler"
PARTITION = "slurm-bridge"


def read_env() -> dict[str, str]:
    script = f"set -a; . {shlex.quote(str(TESTBED / 'env'))}; set +a; env -0"
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, env={}).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


class Demo:
    def __init__(self, env: dict[str, str], version: str) -> None:
        v = version.replace(".", "_")
        self.version = version
        self.bin = Path(env[f"SLURM_BIN_{v}"])
        self.kubectl_bin = str(TESTBED / "bin" / "k8s" / "kubectl")
        self.kubeconfig = env["KUBECONFIG"]
        self.url = env[f"SLURMRESTD_URL_{v}"]
        self.jwt_key = env[f"SLURM_JWT_KEY_{v}"]

    def slurm(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, check=False
        )
        return done.stdout + done.stderr

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        cmd = [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, input=stdin, check=False)
        return done.stdout + done.stderr

    def pods(self) -> str:
        return self.kubectl(
            "-n", NS, "get", "pods", "-o",
            "custom-columns=POD:.metadata.name,PHASE:.status.phase,NODE:.spec.nodeName,"
            "SLURM-JOB:.metadata.labels.scheduler\\.slinky\\.slurm\\.net/slurm-jobid",
        )  # fmt: skip

    def pod(self, name: str, annotations: dict[str, str], cpu: str = "4") -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "annotations": annotations},
            "spec": {
                "schedulerName": SCHEDULER,
                "tolerations": [{"key": "slinky.slurm.net/managed-node", "operator": "Exists"}],
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"limits": {"cpu": cpu, "memory": "100Mi"}},
                    }
                ],
            },
        }
        self.kubectl("create", "-f", "-", stdin=json.dumps(manifest))


def beside(left_title: str, left: str, right_title: str, right: str) -> str:
    a = [left_title, *left.rstrip().splitlines()]
    b = [right_title, *right.rstrip().splitlines()]
    width = max(len(line) for line in a) + 3
    rows = [
        f"{(a[i] if i < len(a) else ''):<{width}}{b[i] if i < len(b) else ''}"
        for i in range(max(len(a), len(b)))
    ]
    return "\n".join(rows)


def wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.5)
    print(f"(gave up waiting for {what})")


def bridge_config(demo: Demo) -> dict[str, Any]:
    return {
        "scheduler_name": SCHEDULER,
        "namespaces": [NS],
        "node_selector": "scheduler.slinky.slurm.net/slurm-bridge=true",
        "cluster_id": "demo-policy",
        "poll_interval_seconds": 0.5,
        "metrics_listen_address": "127.0.0.1:17579",
        "slurm": {"url": demo.url, "user": "slurm", "jwt_key_file": demo.jwt_key, "partition": PARTITION},
        "kubernetes": {"kubeconfig": demo.kubeconfig},
        "leader_election": {"lease_name": "demo-policy", "lease_namespace": "slurm-bridge-system"},
        "nodeset": {"enabled": False},
    }


def fair_share(demo: Demo) -> None:
    print(
        "\n=== 1. Fair-share: biology just used the whole cluster; both tenants queue 4 whole-node pods ==="
    )
    demo.slurm(
        "sbatch", "-p", PARTITION, "-A", "biology", "-N", "4", "--exclusive", "-J", "demo-biology-usage",
        "-D", "/tmp", "--wrap", "sleep 3",
    )  # fmt: skip

    def biology_behind() -> bool:
        rows = [
            r.split("|")
            for r in demo.slurm("sshare", "-a", "-n", "-P", "-o", "Account,User,FairShare").splitlines()
        ]
        fs = {r[0].strip(): r[2] for r in rows if len(r) == 3 and r[1] == "slurm" and r[2]}
        return bool(fs.get("biology")) and float(fs["biology"]) < float(fs.get("physics") or 0)

    print("(waiting for Slurm's next fair-share pass, at most a minute)")
    wait("fair-share pass", biology_behind, 90)
    blocker = demo.slurm(
        "sbatch", "--parsable", "-p", PARTITION, "-N", "4", "--exclusive", "-J", "demo-blocker", "-D", "/tmp",
        "--wrap", "sleep 300",
    ).strip()  # fmt: skip
    # The backlog is queued only once the blocker holds every node: queued earlier, a pod could start on
    # a node another job frees before the blocker has them all, whatever its fair-share.
    state = ["squeue", "-h", "-j", blocker, "-o", "%T"]
    wait("the blocker holding every node", lambda: demo.slurm(*state).strip() == "RUNNING", 300)
    for i in range(4):
        demo.pod(
            f"biology-{i}",
            {"slinky.slurm.net/account": "biology", "testbed.slurm-bridge.io/run-duration": "6s"},
        )
        demo.pod(
            f"physics-{i}",
            {"slinky.slurm.net/account": "physics", "testbed.slurm-bridge.io/run-duration": "6s"},
        )
    time.sleep(4)
    print(
        demo.slurm("sshare", "-a", "-A", "physics,biology", "-o", "Account,User,RawShares,RawUsage,FairShare")
    )
    print(
        beside(
            "$ sprio",
            demo.slurm("sprio", "-o", "%.6i %.10u %.9a %.9Y %.9F"),
            "$ kubectl get pods",
            demo.pods(),
        )
    )
    demo.slurm("scancel", blocker)
    time.sleep(3)
    print("\n--- the blocker ended: Slurm starts the higher fair-share first ---")
    print(
        beside(
            "$ squeue",
            demo.slurm("squeue", "-p", PARTITION, "-o", "%.6i %.14j %.9a %.8T"),
            "$ kubectl get pods",
            demo.pods(),
        )
    )
    wait("backlog done", lambda: "Running" not in demo.pods() and "Pending" not in demo.pods(), 60)
    label = "scheduler\\.slinky\\.slurm\\.net/slurm-jobid"
    jsonpath = f"jsonpath={{.items[*].metadata.labels.{label}}}"
    ids = demo.kubectl("-n", NS, "get", "pods", "-o", jsonpath).split()
    print("\n$ sacct")
    print(
        demo.slurm(
            "sacct",
            "-X",
            "-j",
            ",".join(ids),
            "-o",
            "JobID,JobName%14,Account,QOS,State,ExitCode,Start,Elapsed",
        )
    )
    demo.kubectl("-n", NS, "delete", "pods", "--all", "--wait=true", "--timeout=60s")


def preemption(demo: Demo) -> None:
    print("\n=== 2. Preemption: a `high` job needs the whole cluster; a `scavenger` pod runs there ===")
    demo.pod(
        "scavenger-0", {"slinky.slurm.net/qos": "scavenger", "slinky.slurm.net/account": "scavenge"}, cpu="1"
    )
    wait("scavenger running", lambda: "Running" in demo.pods(), 60)
    print(
        beside(
            "$ squeue",
            demo.slurm("squeue", "-p", PARTITION, "-o", "%.6i %.14j %.10q %.8T"),
            "$ kubectl get pods",
            demo.pods(),
        )
    )
    high = demo.slurm(
        "sbatch", "--parsable", "-p", PARTITION, "-q", "high", "-A", "physics", "-N", "4", "--exclusive",
        "-J", "demo-high", "-D", "/tmp", "--wrap", "sleep 5",
    ).strip()  # fmt: skip
    wait("scavenger evicted", lambda: "scavenger-0" not in demo.pods(), 60)
    print(f"\n--- job {high} (QOS high) preempted the scavenger pod; the bridge evicted it ---")
    print(
        beside(
            "$ squeue",
            demo.slurm("squeue", "-p", PARTITION, "-o", "%.6i %.14j %.10q %.8T"),
            "$ kubectl get pods",
            demo.pods(),
        )
    )
    print(demo.kubectl("-n", NS, "get", "events", "--field-selector", "involvedObject.name=scavenger-0", "-o",
                       "custom-columns=REASON:.reason,MESSAGE:.message"))  # fmt: skip
    time.sleep(1)
    print("$ sacct")
    print(
        demo.slurm(
            "sacct", "-X", "-S", "now-5minutes", "-o", "JobID,JobName%14,Account,QOS,State,ExitCode,Elapsed"
        )
    )


def main() -> int:
    env = read_env()
    version = os.environ.get("SLURM_VERSION") or env.get("SLURM_VERSION", "26.05")
    demo = Demo(env, version)
    print(f"Slurm {version}: policies of the testbed (testbed/slurm.sh, docs/slurm-policies.md)")
    demo.kubectl("create", "namespace", NS)
    demo.kubectl("-n", NS, "delete", "pods", "--all", "--wait=true", "--timeout=60s")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bridge.yaml"
        config.write_text(yaml.safe_dump(bridge_config(demo)))
        log = (Path(tmp) / "bridge.log").open("wb")
        bridge = subprocess.Popen(
            [sys.executable, "-m", "slurm_bridge.cli", "run", "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        try:
            time.sleep(3)
            fair_share(demo)
            preemption(demo)
        finally:
            demo.kubectl("-n", NS, "delete", "pods", "--all", "--wait=true", "--timeout=60s")
            bridge.terminate()
            bridge.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
