"""The testbed writes each cluster a token signed with that cluster's own key (issue 16).

A shell that sourced .testbed/env has `.testbed/bin/<default version>` first in PATH; its wrappers set
that cluster's SLURM_CONF, so `slurm.sh up 22.05` used to mint the 22.05 token from the default
(26.05) slurmctld. `slurm.sh up` is idempotent on a running cluster: re-running it with such a PATH
re-mints and re-writes the token, which must then verify with the cluster's own key.
"""

from __future__ import annotations

import os
import subprocess
import time

import jwt
import pytest

from tests import testbed_env
from tests.testbed_env import ENV_FILE, REPO, SlurmCluster


def _verifies(token: str, cluster: SlurmCluster) -> bool:
    try:
        jwt.decode(token, cluster.jwt_key_file.read_bytes(), algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return False
    return True


def test_every_written_token_verifies_with_its_own_key(slurm_cluster: SlurmCluster) -> None:
    assert _verifies(slurm_cluster.token, slurm_cluster), f"SLURM_JWT of Slurm {slurm_cluster.version}"
    assert _verifies(slurm_cluster.token_file.read_text().strip(), slurm_cluster), (
        f"token file of Slurm {slurm_cluster.version}"
    )


def test_up_with_another_clusters_commands_in_path_mints_its_own_token(
    testbed: testbed_env.Testbed, slurm_cluster: SlurmCluster
) -> None:
    others = [c for v, c in testbed.slurm.items() if v != slurm_cluster.version]
    if not others:
        pytest.fail("needs two Slurm versions (SLURM_VERSIONS) to put another cluster's commands in PATH")
    other = others[0]
    env = dict(os.environ)
    # As a shell that sourced .testbed/env of another default cluster would have it.
    env["PATH"] = f"{other.bin_dir}:{env.get('PATH', '')}"
    env["SLURM_JWT"] = other.token
    env["TESTBED_DIR"] = str(ENV_FILE.parent)
    started = time.monotonic()
    # Not under testbed/up.sh's lock (another `up` may hold it for minutes on a shared machine): with the
    # daemons running, `slurm.sh up` only mints, checks and writes the token and the env file.
    done = subprocess.run(
        ["bash", str(REPO / "testbed" / "slurm.sh"), "up", slurm_cluster.version],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.monotonic() - started < 60
    written = slurm_cluster.token_file.read_text().strip()
    assert _verifies(written, slurm_cluster), (
        f"Slurm {slurm_cluster.version}'s token was signed with another key (Slurm {other.version}'s: "
        f"{_verifies(written, other)})"
    )
