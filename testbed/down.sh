#!/usr/bin/env bash
# Stop every testbed process (all Slurm versions and Kubernetes). State stays in .testbed/ for a quick restart;
# `make clean` removes it.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
bash "$HERE/monitoring.sh" down
bash "$HERE/docker.sh" down
bash "$HERE/nodesets.sh" down
bash "$HERE/workload-controllers.sh" down
for v in 22.05 24.11 26.05; do bash "$HERE/slurm.sh" down "$v"; done
bash "$HERE/mariadb.sh" down
bash "$HERE/k8s.sh" down
# Placeholder batch scripts can outlive a stopped slurmd.
pkill -f -- "slurmstepd: \[" 2>/dev/null || true
rm -f "$STATE_ROOT/env"
