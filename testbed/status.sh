#!/usr/bin/env bash
# What runs, as an operator and a Kubernetes user would see it.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
for v in 22.05 24.11 26.05; do bash "$HERE/slurm.sh" status "$v"; done
bash "$HERE/k8s.sh" status
bash "$HERE/workload-controllers.sh" status
bash "$HERE/monitoring.sh" status
bash "$HERE/docker.sh" status
bash "$HERE/helm.sh" status
