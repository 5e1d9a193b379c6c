#!/usr/bin/env bash
# Print kwok's stage configuration for the testbed and the docker-compose dev stack (one source for both):
# kwok's stock node/pod stages (from its Go module, delays shortened, no jitter) and the testbed's own
# (kwok-stages.yaml, with kwok-succeeded.tmpl spliced in where they say *succeeded).
#   kwok-stages.sh STOCK_STAGE_DIR        (the module's kustomize/stage directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STOCK="${1:?usage: kwok-stages.sh STOCK_STAGE_DIR}"
for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml pod/general/pod-create.yaml \
  pod/general/pod-ready.yaml pod/general/pod-delete.yaml; do
  sed -e 's/jitterDurationMilliseconds: 5000/jitterDurationMilliseconds: 0/' \
    -e 's/^    durationMilliseconds: 1000/    durationMilliseconds: 100/' "$STOCK/$f"
  echo "---"
done
# splice the shared template where the testbed's stages say *succeeded
awk -v tmpl="$HERE/kwok-succeeded.tmpl" '
  /statusTemplate: \*succeeded/ { print "    statusTemplate: |"; while ((getline l < tmpl) > 0) print "      " l; close(tmpl); next }
  { print }' "$HERE/kwok-stages.yaml"
