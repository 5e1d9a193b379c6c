"""The testbed's Docker engine as tests see it: build the project's image, run containers of it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.testbed_env import REPO, TESTBED_DIR

IMAGE = os.environ.get("SLURM_BRIDGE_IMAGE", "slurm-k8s-bridge:dev")


def docker_env(testbed_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `docker`/`docker-compose`: the testbed's engine, the legacy builder."""
    host = (testbed_env or {}).get("DOCKER_HOST")
    if not host:
        env_file = TESTBED_DIR / "docker.env"
        if env_file.exists():
            host = env_file.read_text().strip().split("=", 1)[1]
    env = {**os.environ, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}
    if host:
        env["DOCKER_HOST"] = host
    return env


def docker(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 120, stderr: bool = False
) -> str:
    """Run `docker ARGS`; its stdout, and its stderr after it if asked (`docker logs` writes there)."""
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-3000:]}"
        )
    return done.stdout + done.stderr if stderr else done.stdout


def build_image(env: dict[str, str], tag: str = IMAGE) -> float:
    """`docker build` of the repository's Dockerfile (layers cached by the engine); returns seconds taken."""
    t0 = time.monotonic()
    docker(env, "build", "--network", "host", "-q", "-t", tag, str(REPO), timeout=900)
    return time.monotonic() - t0


def readable_copy(src: Path, dst: Path, uid: int = 10001) -> Path:
    """A copy of a secret file the image's non-root user can read (as a mounted Secret would be)."""
    dst.write_bytes(src.read_bytes())
    os.chown(dst, uid, uid)
    dst.chmod(0o400)
    return dst
