#!/usr/bin/env bash
# Bring the whole testbed up (idempotent): the Slurm clusters named by SLURM_VERSIONS (default: SLURM_VERSION,
# default 26.05; the first one is the default cluster) and the Kubernetes control plane. Writes .testbed/env.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
VERSIONS="${SLURM_VERSIONS:-${SLURM_VERSION:-26.05}}"
VERSIONS="${VERSIONS//,/ }"
read -r -a VLIST <<<"$VERSIONS"
DEFAULT="${VLIST[0]}"
mkdir -p "$STATE_ROOT"
# One `up` at a time (test runs in parallel share the testbed); a second waits, then finds it running.
# Every child gets `8>&-`: a daemon that inherited the lock's descriptor would hold it forever.
exec 8>"$STATE_ROOT/.up.lock"
flock 8
t0=$SECONDS
# Slurm installs are mostly downloads and the Kubernetes build is CPU: overlap them.
bash "$HERE/k8s.sh" up >"$STATE_ROOT/k8s-up.log" 2>&1 8>&- &
k8s_pid=$!
slurm_failed=""
for v in "${VLIST[@]}"; do
  bash "$HERE/slurm.sh" up "$v" 8>&- || slurm_failed+=" $v"
done
if ! wait "$k8s_pid"; then
  tail -n 20 "$STATE_ROOT/k8s-up.log" >&2
  echo "[testbed] FATAL: Kubernetes did not come up (full log: $STATE_ROOT/k8s-up.log)" >&2
  exit 1
fi
cat "$STATE_ROOT/k8s-up.log" >&2
[[ -z "$slurm_failed" ]] || { echo "[testbed] FATAL: Slurm$slurm_failed did not come up (see above)" >&2; exit 1; }
# The real JobSet and LeaderWorkerSet controllers (built once from the Go module proxy, cached).
bash "$HERE/workload-controllers.sh" up 8>&- || { echo "[testbed] FATAL: JobSet/LWS controllers did not come up (see above)" >&2; exit 1; }
# Helm (built once from the Go module proxy, cached), on the testbed PATH for the chart's tests
bash "$HERE/helm.sh" up 8>&- || { echo "[testbed] FATAL: Helm build failed (see above)" >&2; exit 1; }
# Prometheus + prometheus-adapter (external.metrics.k8s.io) for the autoscaling chain
bash "$HERE/monitoring.sh" up 8>&-
# A Docker engine (host networking only) and the local base image, for the container image and compose stack
bash "$HERE/docker.sh" up 8>&- || { echo "[testbed] FATAL: dockerd did not come up (see above)" >&2; exit 1; }

# The environment names every running cluster: the requested ones first (the first is the default),
# then any other version still running from an earlier `up`.
for f in "$STATE_ROOT"/slurm-*.env; do
  [[ -e "$f" ]] || continue
  v="${f##*/slurm-}"; v="${v%.env}"
  [[ " ${VLIST[*]} " == *" $v "* ]] || VLIST+=("$v")
done
dv="${DEFAULT/./_}"
{
  echo "# Written by testbed/up.sh; source it: set -a; . .testbed/env; set +a"
  echo "SLURM_VERSIONS=\"${VLIST[*]}\""
  echo "SLURM_VERSION=$DEFAULT"
  cat "$STATE_ROOT/k8s.env"
  for v in "${VLIST[@]}"; do cat "$STATE_ROOT/slurm-$v.env"; done
  echo "SLURMRESTD_URL=\${SLURMRESTD_URL_$dv}"
  echo "SLURM_JWT=\${SLURM_JWT_$dv}"
  echo "SLURM_JWT_FILE=\${SLURM_JWT_FILE_$dv}"
  echo "SLURM_JWT_KEY=\${SLURM_JWT_KEY_$dv}"
  echo "SLURM_USER=slurm"
  echo "PROMETHEUS_URL=http://127.0.0.1:17490"
  cat "$STATE_ROOT/docker.env"
  echo "PATH=$STATE_ROOT/bin/k8s:$STATE_ROOT/bin/$DEFAULT:\$PATH"
} >"$STATE_ROOT/env"
if [[ -f "$HERE/bridge-config.sh" ]]; then bash "$HERE/bridge-config.sh" "$DEFAULT" 8>&-; fi
bash "$HERE/nodesets.sh" up "$DEFAULT" "${VLIST[*]}" 8>&-
echo "[testbed] up in $((SECONDS - t0)) s: Slurm ${VLIST[*]} + Kubernetes; environment in $STATE_ROOT/env" >&2
