"""The testbed's kubelet stand-in for NodeSet pods: a REAL slurmd for every slurmd pod that runs.

kwok moves pods through their phases but runs nothing, and the testbed has no kube-scheduler. For pods
labelled app.kubernetes.io/name=slurmd this process plays both parts that matter to Slurm:
- binds an unscheduled slurmd pod to the testbed's host node (NODESET_HOST), as kube-scheduler would;
- runs `slurmd -N <pod hostname>` (testbed/slurm.sh slurmd-start) while the pod is bound and not being
  deleted, and stops it when the pod is deleted or gone, so Slurm's capacity follows the NodeSet;
- before stopping it, runs the slurmd container's preStop exec hook as a kubelet would, bounded by the
  pod's terminationGracePeriodSeconds (kwok removes a deleted pod's object at once, so the last copy
  seen is used), with the cluster's Slurm commands on PATH and SLURMD_NODENAME set.
The Slurm cluster is the testbed's default one, or the pod annotation testbed.slurm-bridge.io/slurm-version.
Only NodeSet-style nodes (declared FUTURE, named like ns-N) are ever started or stopped.

    python testbed/nodeset_kubelet.py --kubeconfig FILE --default-version 26.05 --versions "26.05 24.11"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import subprocess
from functools import partial
from pathlib import Path

from kube_client import PODS, Informer, KubeClient, KubeError, KubeObject

HERE = Path(__file__).resolve().parent
NODESET_HOST = "nodeset-host"
ANNOTATION_VERSION = "testbed.slurm-bridge.io/slurm-version"
SELECTOR = "app.kubernetes.io/name=slurmd"
MANAGED = re.compile(r"ns-[0-9]+")  # the FUTURE nodes testbed/slurm.sh declares
log = logging.getLogger("nodeset-kubelet")


def slurm_sh(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(HERE / "slurm.sh"), *args], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        log.warning("slurm.sh %s: %s", " ".join(args), done.stderr.strip())
    return done.stdout


# A pod seen last, by Slurm node name: its preStop hook and grace period outlive its object.
last_seen: dict[str, KubeObject] = {}
stopping: dict[str, asyncio.Task[None]] = {}


def bin_dir(version: str) -> Path:
    return Path(os.environ.get("TESTBED_DIR") or HERE.parent / ".testbed") / "bin" / version


def pre_stop(pod: KubeObject) -> tuple[list[str] | None, float]:
    """The slurmd container's preStop exec command (None: none) and the pod's grace period."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or [{}]
    slurmd = next((c for c in containers if c.get("name") == "slurmd"), containers[0])
    command = (((slurmd.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
    grace = spec.get("terminationGracePeriodSeconds")
    return (list(command) if command else None), float(30 if grace is None else grace)


async def stop_node(version: str, node: str) -> None:
    """What a kubelet does to a deleted pod's container: preStop (bounded by the grace period), then stop."""
    command, grace = pre_stop(last_seen.get(node) or {})
    if command:
        env = {
            **os.environ,
            "PATH": f"{bin_dir(version)}:{os.environ.get('PATH', '')}",
            "SLURMD_NODENAME": node,
        }
        log.info("Slurm %s: %s: running its preStop hook (grace %.0f s)", version, node, grace)
        hook = await asyncio.create_subprocess_exec(*command, env=env)
        try:
            await asyncio.wait_for(hook.wait(), timeout=grace)
        except TimeoutError:
            hook.kill()
            log.info("Slurm %s: %s: preStop outlived the grace period", version, node)
    log.info("Slurm %s: stopping slurmd %s (its pod is gone)", version, node)
    await asyncio.to_thread(slurm_sh, "slurmd-stop", version, node)


def forget_stopping(node: str, _task: asyncio.Task[None]) -> None:
    stopping.pop(node, None)


def wanted(pods: list[KubeObject], default_version: str) -> set[tuple[str, str]]:
    """(version, node) of every bound slurmd pod that is not being deleted."""
    out = set()
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if meta.get("deletionTimestamp") or not spec.get("nodeName"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        node = spec.get("hostname") or meta.get("name") or ""
        if MANAGED.fullmatch(node):
            out.add(((meta.get("annotations") or {}).get(ANNOTATION_VERSION) or default_version, node))
    return out


async def sync(kube: KubeClient, pods: Informer, default_version: str, versions: list[str]) -> None:
    current = pods.objects()
    for pod in current:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if not spec.get("nodeName") and not meta.get("deletionTimestamp"):
            try:
                await kube.bind_pod(meta["namespace"], meta["name"], NODESET_HOST, uid=meta.get("uid"))
                log.info("bound %s/%s to %s", meta["namespace"], meta["name"], NODESET_HOST)
            except KubeError as error:
                log.warning("cannot bind %s/%s: %s", meta["namespace"], meta["name"], error)
    for pod in current:
        node = (pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name") or ""
        if MANAGED.fullmatch(node):
            last_seen[node] = pod
    want = wanted(current, default_version)
    for version in versions:
        running = {n for n in slurm_sh("slurmd-list", version).split() if MANAGED.fullmatch(n)}
        mine = {node for v, node in want if v == version}
        for node in sorted(mine - running):
            if node in stopping:
                continue  # the old pod's container is still stopping
            log.info("Slurm %s: starting slurmd %s", version, node)
            await asyncio.to_thread(slurm_sh, "slurmd-start", version, node)
        for node in sorted(running - mine):
            if node not in stopping:
                task = asyncio.create_task(stop_node(version, node))
                task.add_done_callback(partial(forget_stopping, node))
                stopping[node] = task


async def main_async(kubeconfig: Path, default_version: str, versions: list[str]) -> None:
    kube = await KubeClient.connect(kubeconfig)
    pods = Informer(kube, PODS, label_selector=SELECTOR, name="slurmd-pods")
    changed = asyncio.Event()
    pods.add_handler(lambda _key: changed.set())
    pods.start()
    await pods.wait_synced()
    log.info("watching slurmd pods; default Slurm %s", default_version)
    while True:
        changed.clear()
        try:
            await sync(kube, pods, default_version, versions)
        except Exception:
            log.exception("sync failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=5.0)


def main() -> None:
    # A daemon must not keep descriptors it inherited (a caller's flock would stay held for its lifetime).
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--default-version", required=True)
    parser.add_argument("--versions", required=True, help="space-separated Slurm versions that run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main_async(args.kubeconfig, args.default_version, args.versions.split()))


if __name__ == "__main__":
    main()
