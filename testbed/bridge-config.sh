#!/usr/bin/env bash
# Write .testbed/bridge.yaml: a bridge config for the testbed's default Slurm cluster (argument: its version).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
VERSION="${1:?usage: bridge-config.sh SLURM_VERSION}"
v="${VERSION/./_}"
set -a
# shellcheck disable=SC1091
source "$STATE_ROOT/env"
set +a
url_var="SLURMRESTD_URL_$v" key_var="SLURM_JWT_KEY_$v"
cat >"$STATE_ROOT/bridge.yaml" <<YAML
# Written by testbed/bridge-config.sh for the testbed's Slurm $VERSION; run: slurm-bridge run --config $STATE_ROOT/bridge.yaml
scheduler_name: slurm-bridge-scheduler
namespaces: [slurm-bridge]
node_selector: scheduler.slinky.slurm.net/slurm-bridge=true
cluster_id: testbed
poll_interval_seconds: 1
metrics_listen_address: 127.0.0.1:17480
slurm:
  url: ${!url_var}
  user: slurm
  jwt_key_file: ${!key_var}
  partition: slurm-bridge
  default_time_limit_minutes: 60
kubernetes:
  kubeconfig: $KUBECONFIG
leader_election:
  lease_namespace: slurm-bridge-system
nodeset:
  slurm_user: root  # drain/resume need a Slurm operator; the testbed's slurm user is none
YAML
