"""The whole autoscaling loop on the testbed, every link real: Slurm queue -> the bridge's exporter ->
Prometheus -> prometheus-adapter -> aggregated External metrics API -> kube-controller-manager's HPA ->
NodeSet `ns` -> the bridge's NodeSet controller -> slurmd pods (real slurmd via the testbed's stand-in).

Runs tools/autoscale_demo.py's scenario (what `make demo-autoscale` plots) and checks it: replicas rise to
the demand, the new nodes register and the pending jobs start; the queue drains, replicas fall, idle nodes
go first and the node running the long job is kept until it ends; no oscillation.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.testbed.bridge_harness import BridgeProcess, bridge_config, wait_for
from tests.testbed_env import KubeCluster, SlurmCluster, read_env
from tools.autoscale_demo import (
    HPA_MANIFEST,
    NAMESPACE,
    NODESET,
    DemoTestbed,
    Sample,
    Scenario,
    run_scenario,
)

pytestmark = [pytest.mark.testbed, pytest.mark.slurm_default_only]

EXPORTER_PORT = 17480  # Prometheus's scrape target (testbed/monitoring.sh)
SCALE_DOWN_WINDOW = 20.0  # hpa-nodeset.yaml's scaleDown.stabilizationWindowSeconds
HPA_SYNC = 5.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period (testbed/k8s.sh)


@pytest.fixture
def bridge(
    slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    config = bridge_config(slurm_cluster, kube, cluster_id="autoscale", metrics_port=EXPORTER_PORT)
    config["nodeset"] = {"enabled": True, "namespace": NAMESPACE, "slurm_user": "root", "resync_seconds": 3}
    process = BridgeProcess(config, tmp_path_factory.mktemp("autoscale"))
    process.start()
    yield process
    kube.kubectl("delete", "-f", str(HPA_MANIFEST), "--ignore-not-found")
    slurm_cluster.cli("scancel", "-p", "nodeset", check=False)
    kube.kubectl("-n", NAMESPACE, "scale", f"nodeset/{NODESET}", "--replicas=0")
    wait_for(
        "the NodeSet back to 0 pods",
        lambda: (
            not kube.kubectl(
                "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={NODESET}", "-o", "name"
            ).strip()
        ),
        timeout=60,
    )
    process.stop()


def test_queue_scales_the_nodeset_out_and_in(bridge: BridgeProcess, slurm_cluster: SlurmCluster) -> None:
    env = {**os.environ, **read_env()}
    env["PATH"] = f"{slurm_cluster.bin_dir}:{env['K8S_BIN']}:{os.environ['PATH']}"
    bed = DemoTestbed(env)
    bridge.assert_alive()
    scenario = Scenario(short_jobs=3, short_seconds=30, long_seconds=75, timeout=300)
    outcome = run_scenario(bed, scenario)
    samples = outcome.samples
    bridge.assert_alive()
    for s in samples:
        print(
            f"t={s.t:6.1f} demand={s.demand} spec={s.spec_replicas} pods={s.replicas} idle={s.idle} "
            f"alloc={s.allocated} drain={s.draining} pending={s.jobs_pending} running={s.jobs_running}"
        )

    peak = max(s.spec_replicas for s in samples)
    peak_at = next(i for i, s in enumerate(samples) if s.spec_replicas == peak)
    assert peak == 4, "4 exclusive one-node jobs demand 4 nodes (within min 0 / max 8)"
    up_t = samples[peak_at].t
    started = next((s for s in samples if s.allocated == 4 and s.jobs_running == 4), None)
    assert started is not None, "the new nodes registered and the pending jobs started"

    after_peak = [s.spec_replicas for s in samples[peak_at:]]
    assert all(a >= b for a, b in itertools.pairwise(after_peak)), (
        f"replicas went up again after the peak (oscillation): {after_peak}"
    )
    assert samples[-1].spec_replicas == 0
    assert samples[-1].replicas == 0

    # scale-in kept the node with the long job: it ran to the end, nothing killed it
    states = {name: outcome.last_state.get(job_id) for job_id, name in outcome.jobs.items()}
    assert set(states.values()) == {"COMPLETED"}, states
    long_only = [s for s in samples if s.t > started.t and s.jobs_running == 1]
    assert long_only, "the short jobs ended before the long one"
    assert any(s.spec_replicas == 1 for s in long_only), "replicas went down to the node the long job holds"
    assert all(s.allocated == 1 for s in long_only), "the node running the long job stayed while it ran"

    # settled within one stabilization window (+ the HPA's sync and Prometheus' scrape) of the demand
    drop = _settle_time(samples, final_demand=0.0)
    print(
        f"scale-up: {up_t:.1f} s from submit to spec.replicas={peak}; "
        f"all 4 jobs running at {started.t:.1f} s; scale-in to 0: {drop:.1f} s after the demand reached 0"
    )
    assert drop <= SCALE_DOWN_WINDOW + 3 * HPA_SYNC + 10, f"took {drop:.1f} s to settle"


def _settle_time(samples: list[Sample], final_demand: float) -> float:
    first_zero = next(
        i
        for i, s in enumerate(samples)
        if s.demand == final_demand and all(x.demand in (final_demand, None) for x in samples[i:])
    )
    settled = next(s for s in samples[first_zero:] if s.spec_replicas == 0)
    return settled.t - samples[first_zero].t
