"""`make demo`: the seed's first demo on the local testbed, as an operator and a user would see it.

Starts `slurm-bridge run --config .testbed/bridge.yaml`, applies deploy/examples/pause-pod.yaml, shows
the placeholder job in `squeue` and the pod Running on the node Slurm chose, then deletes the pod and
shows that its job ended with the pod's outcome.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bridge import wellknown

REPO = Path(__file__).resolve().parent.parent
TESTBED = Path(os.environ.get("TESTBED_DIR", REPO / ".testbed"))
EXAMPLES = REPO / "deploy" / "examples"
MANIFEST = EXAMPLES / "pause-pod.yaml"


def testbed_environment() -> dict[str, str]:
    env_file = TESTBED / "env"
    if not env_file.exists():
        sys.exit(f"no testbed environment at {env_file}: run `make testbed-up` first")
    script = f"set -a; . {shlex.quote(str(env_file))}; set +a; env -0"
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def sh(env: dict[str, str], command: str, *, show: bool = True) -> str:
    if show:
        print(f"\n$ {command}", flush=True)
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=False)
    if show:
        print((done.stdout + done.stderr).rstrip(), flush=True)
    return done.stdout


def wait(what: str, probe: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            sys.exit(f"demo: timed out waiting for {what}")
        time.sleep(0.5)


def main() -> None:
    env = testbed_environment()
    print(f"Testbed: Slurm {env['SLURM_VERSION']}, Kubernetes {env['K8S_VERSION']}")
    sh(env, "sinfo")
    sh(env, "kubectl get nodes")
    log = (TESTBED / "demo-bridge.log").open("w")
    bridge = subprocess.Popen(
        [sys.executable, "-m", "slurm_bridge.cli", "run", "--config", str(TESTBED / "bridge.yaml")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        pause_pod_demo(env, bridge.pid, log.name)
        podgroup_demo(env)
    finally:
        bridge.terminate()
        bridge.wait(timeout=20)
        sh(env, "kubectl -n slurm-bridge delete pod pause-pod --ignore-not-found --wait=false", show=False)
    print("\nDemo done. The testbed keeps running: `make testbed-status`, `make testbed-down`.")


def pause_pod_demo(env: dict[str, str], pid: int, log_name: str) -> None:
    print(f"\nslurm-bridge run is up (pid {pid}, log {log_name}); applying the seed's pause pod")
    sh(env, f"kubectl apply -f {MANIFEST}")

    def pod_running() -> bool:
        phase = sh(env, "kubectl -n slurm-bridge get pod pause-pod -o jsonpath={.status.phase}", show=False)
        return phase == "Running"

    wait("the pod to run", pod_running)
    sh(env, "squeue")
    sh(env, "kubectl -n slurm-bridge get pods -o wide")
    pod = json.loads(sh(env, "kubectl -n slurm-bridge get pod pause-pod -o json", show=False))
    job_id = pod["metadata"]["labels"][wellknown.LABEL_SLURM_JOB_ID]
    print(f"\npod label      {wellknown.LABEL_SLURM_JOB_ID}={job_id}")
    node = pod["metadata"]["annotations"][wellknown.ANNOTATION_SLURM_NODE]
    print(f"pod annotation {wellknown.ANNOTATION_SLURM_NODE}={node}")
    print(f"pod finalizers {pod['metadata']['finalizers']}")
    print("\nDeleting the pod: the bridge ends its Slurm job with the pod's outcome.")
    sh(env, "kubectl -n slurm-bridge delete pod pause-pod --wait=true --timeout=60s")
    sh(env, f"squeue -t all -j {job_id} -o '%.8i %.12j %.10T %.8M %R'")
    sh(env, f"scontrol show job {job_id} | grep -E 'JobState|ExitCode'")


PODGROUPS = "kubectl -n slurm-bridge get podgroups.scheduling.x-k8s.io"


def podgroup_demo(env: dict[str, str]) -> None:
    """Gangs: nginx-pg runs as one 2-node job; sleep-pg waits for Resources, then runs and finishes."""
    print("\n=== Second demo: gangs (PodGroup = ONE Slurm job) ===")
    print("As in the seed, 3 nodes are free: an operator's job holds slurm-bridge-3.")
    blocker = (
        sh(
            env,
            "sbatch --parsable -p slurm-bridge -w slurm-bridge-3 --exclusive -J operator -D /tmp "
            "--wrap 'sleep 600'",
            show=False,
        )
        .strip()
        .split(";")[0]
    )
    try:
        sh(env, f"kubectl apply -f {EXAMPLES / 'podgroup-demo.yaml'}")
        wait("nginx-pg Running", lambda: phase_of(env, "nginx-pg") == "Running", 90)
        sh(env, f"kubectl apply -f {EXAMPLES / 'podgroup-sleep.yaml'}")

        def sleep_pg_waits() -> bool:
            out = sh(env, "squeue -h -n sleep-pg -o %r", show=False)
            return "Resources" in out

        wait("sleep-pg pending for Resources", sleep_pg_waits, 60)
        sh(env, "kubectl -n slurm-bridge get pods -o wide")
        sh(env, PODGROUPS)
        sh(env, "squeue")
        sh(env, "sinfo")
        print("\nDeleting nginx-pg frees its nodes; sleep-pg starts, runs 5 s and finishes.")
        sh(env, f"kubectl delete -f {EXAMPLES / 'podgroup-demo.yaml'} --wait=false")
        wait("sleep-pg Running", lambda: phase_of(env, "sleep-pg") == "Running", 90)
        sh(env, "kubectl -n slurm-bridge get pods -o wide")
        sh(env, PODGROUPS)
        sh(env, "squeue")
        wait("sleep-pg Finished", lambda: phase_of(env, "sleep-pg") == "Finished", 90)
        sh(env, PODGROUPS)
        sh(env, "squeue -t all -n pgReplicaset,sleep-pg -o '%.8i %.14j %.10T %.6D %N'")
    finally:
        sh(
            env,
            f"kubectl delete -f {EXAMPLES / 'podgroup-sleep.yaml'} --ignore-not-found --wait=false",
            show=False,
        )
        sh(
            env,
            f"kubectl delete -f {EXAMPLES / 'podgroup-demo.yaml'} --ignore-not-found --wait=false",
            show=False,
        )
        sh(env, f"scancel {blocker}", show=False)


def phase_of(env: dict[str, str], podgroup: str) -> str:
    return sh(env, f"{PODGROUPS} {podgroup} -o jsonpath={{.status.phase}}", show=False).strip()


if __name__ == "__main__":
    main()
