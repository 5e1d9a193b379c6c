"""`make demo`: the seed's demos on the local testbed, shown as an operator and a user would see them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = Path(os.environ.get("TESTBED_DIR", REPO / ".testbed")) / "env"


def testbed_environment() -> dict[str, str]:
    if not ENV_FILE.exists():
        sys.exit(f"no testbed environment at {ENV_FILE}: run `make testbed-up` first")
    script = f"set -a; . {shlex.quote(str(ENV_FILE))}; set +a; env -0"
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def show(env: dict[str, str], command: str) -> None:
    print(f"\n$ {command}", flush=True)
    subprocess.run(["bash", "-c", command], env=env, check=False)


def main() -> None:
    env = testbed_environment()
    versions, default, k8s = env["SLURM_VERSIONS"], env["SLURM_VERSION"], env["K8S_VERSION"]
    print(f"Testbed: Slurm {versions} (default {default}), Kubernetes {k8s}")
    for command in ("sinfo", "squeue", "kubectl get nodes -o wide"):
        show(env, command)


if __name__ == "__main__":
    main()
