#!/usr/bin/env bash
# Build a pinned Kubernetes control plane (kube-apiserver, kube-controller-manager, kubectl),
# etcd and kwok from the Go module proxy. Binaries are cached outside the repo, keyed by version,
# so a warm machine rebuilds nothing. Usage: build-k8s.sh  (reads versions from testbed/versions.env)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
K8S_BIN="$CACHE/k8s/$K8S_VERSION/bin"
ETCD_BIN="$CACHE/etcd/$ETCD_VERSION/bin"
KWOK_BIN="$CACHE/kwok/$KWOK_VERSION/bin"
log() { echo "[build-k8s] $*" >&2; }
# shellcheck source=go.sh
source "$HERE/go.sh"
ensure_go || { log "FATAL: no Go toolchain; the Kubernetes build needs one"; exit 1; }
export GOFLAGS="${GOFLAGS:--mod=mod}" GOTOOLCHAIN=local
# One build at a time per cache: a second caller waits, then finds the binaries cached.
mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
flock 9

build_kubernetes() {
  if [[ -x "$K8S_BIN/kube-apiserver" && -x "$K8S_BIN/kube-controller-manager" && -x "$K8S_BIN/kubectl" ]]; then
    log "kubernetes $K8S_VERSION cached at $K8S_BIN"; return 0
  fi
  local mod="$CACHE/k8s/$K8S_VERSION/module" staging_ver="v0.${K8S_VERSION#v1.}"
  mkdir -p "$mod" "$K8S_BIN"
  log "kubernetes $K8S_VERSION: resolving staging modules"
  local kdir
  kdir="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$kdir/go.mod" ]] || { log "FATAL: could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  {
    echo "module bridge.local/k8sbuild"; echo; echo "go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1.0/')"; echo
    echo "require k8s.io/kubernetes $K8S_VERSION"; echo
    # every ./staging replace in upstream's go.mod becomes a real module version
    grep -E '^[[:space:]]*k8s.io/[^ ]+ => ./staging/' "$kdir/go.mod" | awk -v v="$staging_ver" '{print "replace " $1 " => " $1 " " v}'
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "kubernetes $K8S_VERSION: go mod tidy ($(grep -c '^replace' "$mod/go.mod") staging replaces)"
  (cd "$mod" && go mod tidy)
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  log "kubernetes $K8S_VERSION: go build (about 10 min on 2 cold cores)"
  local t0=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$K8S_BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
  log "kubernetes $K8S_VERSION built in $((SECONDS - t0)) s"
}

build_etcd() {
  if [[ -x "$ETCD_BIN/etcd" ]]; then log "etcd $ETCD_VERSION cached"; return 0; fi
  local mod="$CACHE/etcd/$ETCD_VERSION/module"
  mkdir -p "$mod" "$ETCD_BIN"
  cat >"$mod/go.mod" <<GOMOD
module bridge.local/etcdbuild

go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1.0/')

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$mod/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "etcd $ETCD_VERSION: building"
  (cd "$mod" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd" .)
}

build_kwok() {
  if [[ -x "$KWOK_BIN/kwok" ]]; then log "kwok $KWOK_VERSION cached"; return 0; fi
  mkdir -p "$KWOK_BIN"
  log "kwok $KWOK_VERSION: building"
  GOBIN="$KWOK_BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

case "${1:-all}" in
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  all) build_etcd; build_kwok; build_kubernetes ;;
  *) log "unknown target $1"; exit 2 ;;
esac
