#!/usr/bin/env bash
# Print the Node objects of the testbed's bridged nodes, named like the Slurm nodes of testbed/slurm-conf.sh
# (slurm-bridge-0..3; 2 and 3 with 2 GPUs), for kwok to run. One source for the testbed (k8s.sh) and the
# docker-compose dev stack.
set -euo pipefail
NODES=(slurm-bridge-0 slurm-bridge-1 slurm-bridge-2 slurm-bridge-3)
GPU_NODES=(slurm-bridge-2 slurm-bridge-3)
for n in "${NODES[@]}"; do
  gpu=""
  [[ " ${GPU_NODES[*]} " == *" $n "* ]] && gpu="nvidia.com/gpu: \"2\""
  cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    type: kwok
    slurm-bridge.io/testbed: "true"
    scheduler.slinky.slurm.net/slurm-bridge: "true"
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
spec:
  taints:
  - {key: slinky.slurm.net/managed-node, value: slurm-bridge-scheduler, effect: NoSchedule}
status:
  capacity: {cpu: "4", memory: 8Gi, pods: "110", $gpu}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110", $gpu}
NODE
done
