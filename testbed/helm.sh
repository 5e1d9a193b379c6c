#!/usr/bin/env bash
# Helm on the testbed: built from the Go module proxy (a wrapper module requiring helm.sh/helm/v4 at the
# pinned HELM_VERSION, so it links exactly the dependency versions Helm was released with), cached outside
# the repo keyed by version, and linked into $TESTBED_DIR/bin/k8s (the PATH .testbed/env gives).
#   helm.sh up | build | status     (idempotent; `up` = build if not cached + link)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
HELM_BIN="$CACHE/helm/$HELM_VERSION/bin"
log() { echo "[helm] $*" >&2; }
die() { echo "[helm] FATAL: $*" >&2; exit 1; }

build() {
  if [[ -x "$HELM_BIN/helm" ]]; then log "helm $HELM_VERSION cached at $HELM_BIN/helm"; return 0; fi
  source "$HERE/go.sh"
  ensure_go || die "no Go toolchain (see above)"
  export GOFLAGS="${GOFLAGS:--mod=mod}" GOTOOLCHAIN=local CGO_ENABLED=0
  mkdir -p "$CACHE/helm"
  # One build at a time per cache: a second caller waits, then finds the binary cached.
  exec 9>"$CACHE/helm/build.lock"
  flock 9
  if [[ -x "$HELM_BIN/helm" ]]; then log "helm $HELM_VERSION cached at $HELM_BIN/helm"; exec 9>&-; return 0; fi
  local mod="$CACHE/helm/$HELM_VERSION/module" t0=$SECONDS
  mkdir -p "$mod" "$HELM_BIN"
  cat >"$mod/go.mod" <<GOMOD
module bridge.local/helmbuild

go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1.0/')

require helm.sh/helm/v4 $HELM_VERSION
GOMOD
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v4/cmd/helm"
GO
  log "helm $HELM_VERSION: go mod tidy"
  (cd "$mod" && go mod tidy) || die "go mod tidy failed for helm.sh/helm/v4@$HELM_VERSION (Go module proxy reachable?)"
  # The same version stamp upstream's Makefile sets for a tagged build (`helm version` prints it).
  local ld="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  log "helm $HELM_VERSION: go build (a few minutes on 2 cold cores)"
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$HELM_BIN/helm.tmp" helm.sh/helm/v4/cmd/helm) ||
    die "go build helm.sh/helm/v4/cmd/helm failed"
  mv "$HELM_BIN/helm.tmp" "$HELM_BIN/helm"
  exec 9>&-
  log "helm $HELM_VERSION built in $((SECONDS - t0)) s"
}

link() {
  mkdir -p "$STATE_ROOT/bin/k8s"
  ln -sfn "$HELM_BIN/helm" "$STATE_ROOT/bin/k8s/helm"
  "$STATE_ROOT/bin/k8s/helm" version --short >/dev/null || die "the linked helm does not run"
  log "helm $("$STATE_ROOT/bin/k8s/helm" version --short) on PATH as $STATE_ROOT/bin/k8s/helm"
}

status() {
  if [[ -x "$STATE_ROOT/bin/k8s/helm" ]]; then
    echo "[helm] $("$STATE_ROOT/bin/k8s/helm" version --short) at $STATE_ROOT/bin/k8s/helm"
  else
    echo "[helm] not installed (testbed/helm.sh up)"
  fi
}

case "${1:-}" in
  up) build; link ;;
  build) build ;;
  status) status ;;
  *) echo "usage: $0 up|build|status" >&2; exit 2 ;;
esac
