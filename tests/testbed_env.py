"""The running testbed as tests see it: read from .testbed/env, written by testbed/up.sh."""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTBED_DIR = Path(os.environ.get("TESTBED_DIR", REPO / ".testbed"))
ENV_FILE = TESTBED_DIR / "env"

NODES = ("slurm-bridge-0", "slurm-bridge-1", "slurm-bridge-2", "slurm-bridge-3")
GPU_NODES = ("slurm-bridge-2", "slurm-bridge-3")
PARTITION = "slurm-bridge"


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    """Evaluate the env file with the shell (it references its own variables) and return what it sets."""
    script = f"set -a; . {shlex.quote(str(path))}; set +a; env -0"
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, env={}).stdout
    pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return dict(pairs)


@dataclass(frozen=True)
class SlurmCluster:
    """One running Slurm cluster of the testbed."""

    version: str
    url: str
    user: str
    token: str
    token_file: Path
    jwt_key_file: Path
    bin_dir: Path
    partition: str = PARTITION
    nodes: tuple[str, ...] = NODES
    gpu_nodes: tuple[str, ...] = GPU_NODES

    def cli(self, *args: str, check: bool = True) -> str:
        """Run one of this cluster's commands (squeue, sinfo, scontrol, scancel, ...) and return stdout."""
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def __repr__(self) -> str:  # keep the token out of test output
        return f"SlurmCluster(version={self.version!r}, url={self.url!r})"


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    kubectl_path: Path
    version: str
    nodes: tuple[str, ...] = NODES

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        cmd = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, input=stdin)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout


@dataclass(frozen=True)
class Testbed:
    env: dict[str, str]
    slurm: dict[str, SlurmCluster] = field(default_factory=dict)
    kube: KubeCluster | None = None

    @property
    def default_version(self) -> str:
        return self.env["SLURM_VERSION"]

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Testbed:
        clusters = {}
        for version in env["SLURM_VERSIONS"].split():
            v = version.replace(".", "_")
            clusters[version] = SlurmCluster(
                version=version,
                url=env[f"SLURMRESTD_URL_{v}"],
                user=env[f"SLURM_USER_{v}"],
                token=env[f"SLURM_JWT_{v}"],
                token_file=Path(env[f"SLURM_JWT_FILE_{v}"]),
                jwt_key_file=Path(env[f"SLURM_JWT_KEY_{v}"]),
                bin_dir=Path(env[f"SLURM_BIN_{v}"]),
            )
        kube = KubeCluster(
            kubeconfig=Path(env["KUBECONFIG"]),
            kubectl_path=Path(env["K8S_BIN"]) / "kubectl",
            version=env["K8S_VERSION"],
        )
        return cls(env=env, slurm=clusters, kube=kube)
