"""Shared fixtures: the real testbed is brought up once per run (or reused) and parametrizes Slurm versions.

- `testbed` (session): runs testbed/up.sh (idempotent: reuses what runs), tears down at the end only
  what this run started (KEEP_TESTBED=1 keeps it).
- `slurm_cluster`: one SlurmCluster per Slurm version the run asked for (SLURM_VERSIONS).
- `kube`: the Kubernetes control plane.
A testbed that fails to start fails the tests that need it; with CI=true a skipped testbed test
is turned into a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator

import pytest

from tests.testbed_env import ENV_FILE, REPO, KubeCluster, SlurmCluster, Testbed, read_env


def requested_slurm_versions() -> list[str]:
    raw = os.environ.get("SLURM_VERSIONS") or os.environ.get("SLURM_VERSION")
    if not raw and ENV_FILE.exists():
        raw = read_env().get("SLURM_VERSIONS")
    return (raw or "26.05").replace(",", " ").split()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "slurm_cluster" in metafunc.fixturenames:
        versions = requested_slurm_versions()
        marker = metafunc.definition.get_closest_marker("slurm_version")
        if marker is not None:
            # only the requested versions the test is for (none: pytest reports an empty parameter set)
            versions = [v for v in versions if v in marker.args]
        if metafunc.definition.get_closest_marker("slurm_default_only") is not None:
            versions = versions[:1]
        metafunc.parametrize("slurm_cluster", versions, indirect=True, ids=[f"slurm{v}" for v in versions])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"testbed", "slurm_cluster", "kube"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.testbed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and item.get_closest_marker("testbed"):
        report.outcome = "failed"
        report.longrepr = f"testbed test skipped under CI=true (skips are failures in CI): {report.longrepr}"


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    was_running = ENV_FILE.exists()
    env = dict(os.environ)
    env["SLURM_VERSIONS"] = " ".join(requested_slurm_versions())
    done = subprocess.run(["bash", str(REPO / "testbed" / "up.sh")], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"testbed failed to start:\n{done.stderr[-4000:]}", pytrace=False)
    yield Testbed.from_env(read_env())
    if not was_running and os.environ.get("KEEP_TESTBED") != "1":
        subprocess.run(["bash", str(REPO / "testbed" / "down.sh")], check=False)


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest, testbed: Testbed) -> SlurmCluster:
    version: str = request.param
    if version not in testbed.slurm:
        pytest.fail(f"Slurm {version} was requested but the testbed runs {sorted(testbed.slurm)}")
    return testbed.slurm[version]


@pytest.fixture(scope="session")
def kube(testbed: Testbed) -> KubeCluster:
    assert testbed.kube is not None
    return testbed.kube
