#!/usr/bin/env bash
# The testbed's NodeSet pieces: the NodeSet `ns` (deploy/examples/nodeset.yaml, created with 0 replicas when
# absent) and the kubelet stand-in that runs a real slurmd per NodeSet pod (testbed/nodeset_kubelet.py).
#   nodesets.sh up DEFAULT_VERSION "VERSIONS..." | down
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
S="$STATE_ROOT/k8s"
PY="$REPO/.venv/bin/python"
log() { echo "[nodesets] $*" >&2; }
die() { echo "[nodesets] FATAL: $*" >&2; exit 1; }
PATTERN="nodeset_kubelet.py --kubeconfig $S/admin.kubeconfig"

up() {
  local default="$1" versions="$2" args pids
  [[ -x "$PY" ]] || die "the project venv is missing ($PY); run make venv"
  kubectl() { "$STATE_ROOT/bin/k8s/kubectl" --kubeconfig "$S/admin.kubeconfig" "$@"; }
  kubectl -n slurm-bridge-system get nodeset ns >/dev/null 2>&1 ||
    kubectl apply -f "$REPO/deploy/examples/nodeset.yaml" >/dev/null || die "could not create NodeSet ns"
  args="--default-version $default --versions \"$versions\""
  pids="$(pgrep -f -- "$PATTERN" || true)"
  if [[ -n "$pids" && "$(cat "$STATE_ROOT/nodeset-kubelet.args" 2>/dev/null)" != "$args" ]]; then
    kill $pids 2>/dev/null || true
    pids=""
  fi
  if [[ -z "$pids" ]]; then
    log "starting the slurmd stand-in for NodeSet pods (Slurm $default; clusters $versions)"
    nohup "$PY" "$HERE/nodeset_kubelet.py" --kubeconfig "$S/admin.kubeconfig" \
      --default-version "$default" --versions "$versions" >"$STATE_ROOT/nodeset-kubelet.log" 2>&1 </dev/null &
    echo "$args" >"$STATE_ROOT/nodeset-kubelet.args"
  fi
}

down() {
  local pids
  pids="$(pgrep -f -- "nodeset_kubelet.py --kubeconfig" || true)"
  [[ -z "$pids" ]] || kill $pids 2>/dev/null || true
}

case "${1:-}" in
  up) up "${2:?default version}" "${3:?versions}" ;;
  down) down ;;
  *) die "usage: nodesets.sh up DEFAULT VERSIONS | down" ;;
esac
