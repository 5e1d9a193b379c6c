#!/usr/bin/env bash
# The real JobSet and LeaderWorkerSet controllers on the testbed: built from the Go module proxy (each in a
# wrapper module of its own, so each links exactly the dependency versions it was released with; binaries
# cached outside the repo, keyed by version), their CRDs installed from the module cache, both run on
# loopback with their admission webhooks registered through clientConfig.url + caBundle.
#   workload-controllers.sh up | down | status | build
# Needs the Kubernetes control plane (testbed/k8s.sh up) running.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
S="$STATE_ROOT/workload-controllers"
WBIN="$CACHE/workload-controllers/jobset-$JOBSET_VERSION-lws-$LWS_VERSION/bin"
K8S_BIN="$CACHE/k8s/$K8S_VERSION/bin"
KUBECONFIG_FILE="$STATE_ROOT/k8s/admin.kubeconfig"
JOBSET_WEBHOOK_PORT=17610
JOBSET_HEALTH_PORT=17611
LWS_WEBHOOK_PORT=17620
LWS_HEALTH_PORT=17621
log() { echo "[workload-controllers] $*" >&2; }
die() { echo "[workload-controllers] FATAL: $*" >&2; exit 1; }
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
go_minor() { go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1.0/'; }

# Build one controller: wrapper module requiring MODULE@VERSION, `go build PKG -o BIN`.
build_one() { # name module version package
  local name="$1" module="$2" version="$3" pkg="$4" mod
  if [[ -x "$WBIN/$name" ]]; then log "$name cached at $WBIN/$name"; return 0; fi
  mod="$CACHE/workload-controllers/jobset-$JOBSET_VERSION-lws-$LWS_VERSION/module-$name"
  mkdir -p "$mod" "$WBIN"
  cat >"$mod/go.mod" <<GOMOD
module bridge.local/${name}build

go $(go_minor)

require $module $version
GOMOD
  cat >"$mod/tools.go" <<GO
//go:build tools

package tools

import _ "$pkg"
GO
  log "$name: go mod tidy ($module@$version)"
  (cd "$mod" && go mod tidy) || die "$name: go mod tidy failed for $module@$version (Go module proxy reachable?)"
  log "$name: go build"
  local t0=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$WBIN/$name.tmp" "$pkg") || die "$name: go build $pkg failed"
  mv "$WBIN/$name.tmp" "$WBIN/$name"
  log "$name built in $((SECONDS - t0)) s"
}

build() {
  source "$HERE/go.sh"
  ensure_go || die "no Go toolchain (see above)"
  export GOFLAGS="${GOFLAGS:--mod=mod}" GOTOOLCHAIN=local
  mkdir -p "$CACHE/workload-controllers"
  # One build at a time per cache: a second caller waits, then finds the binaries cached.
  exec 9>"$CACHE/workload-controllers/build.lock"
  flock 9
  local t0=$SECONDS
  build_one jobset-controller sigs.k8s.io/jobset "$JOBSET_VERSION" sigs.k8s.io/jobset
  build_one lws-controller sigs.k8s.io/lws "$LWS_VERSION" sigs.k8s.io/lws/cmd
  exec 9>&-
  log "controllers ready in $((SECONDS - t0)) s ($WBIN)"
}

module_dir() { # module version -> dir in the module cache
  go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

make_certs() {
  local p="$S/pki"
  [[ -f "$p/.complete" ]] && return 0
  mkdir -p "$p"
  log "creating webhook serving certificates"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=workload-webhooks-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout tls.key -out tls.csr 2>/dev/null
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n') -out tls.crt 2>/dev/null
    rm -f tls.csr
  )
  touch "$p/.complete"
}

# The webhook configurations of one controller, as its kustomize overlay would render them, but with every
# clientConfig pointing at loopback. Pod webhooks keep their upstream objectSelector, so pods of other
# workloads never depend on these processes.
webhook_yaml() { # prefix port pod-label group version kind-path resource validated-pod-operations
  local prefix="$1" port="$2" podlabel="$3" group="$4" ver="$5" kpath="$6" res="$7" podvalidate="$8" ca
  ca="$(base64 -w0 <"$S/pki/ca.crt")"
  local kind verb path name podops
  for kind in Mutating Validating; do
    if [[ $kind == Mutating ]]; then verb=mutate podops=CREATE; else verb=validate podops="$podvalidate"; fi
    cat <<YAML
---
apiVersion: admissionregistration.k8s.io/v1
kind: ${kind}WebhookConfiguration
metadata:
  name: ${prefix}-$(tr '[:upper:]' '[:lower:]' <<<"$kind")-webhook-configuration
  labels: {app.kubernetes.io/managed-by: slurm-bridge-testbed}
webhooks:
YAML
    path="/$verb-$kpath"
    name="${verb:0:1}${res%s}.kb.io"
    cat <<YAML
- name: $name
  admissionReviewVersions: [v1]
  clientConfig: {url: "https://127.0.0.1:$port$path", caBundle: "$ca"}
  failurePolicy: Fail
  sideEffects: None
  rules:
  - {apiGroups: ["$group"], apiVersions: ["$ver"], operations: [CREATE, UPDATE], resources: ["$res"]}
- name: ${verb:0:1}pod.kb.io
  admissionReviewVersions: [v1]
  clientConfig: {url: "https://127.0.0.1:$port/$verb--v1-pod", caBundle: "$ca"}
  failurePolicy: Fail
  sideEffects: None
  objectSelector:
    matchExpressions: [{key: "$podlabel", operator: Exists}]
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [$podops], resources: [pods]}
YAML
  done
}

controller_config() { # api-group health-port webhook-port
  cat <<YAML
apiVersion: $1/v1alpha1
kind: Configuration
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
health:
  healthProbeBindAddress: 127.0.0.1:$2
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: $3
  certDir: $S/pki
YAML
}

start() { # name args...
  local name="$1"; shift
  if [[ -f "$S/$name.pid" ]] && kill -0 "$(cat "$S/$name.pid")" 2>/dev/null; then
    log "$name already running (pid $(cat "$S/$name.pid"))"; return 0
  fi
  log "starting $name"
  # Close every inherited descriptor above 2 first: a daemon that inherited a lock's descriptor (up.sh's,
  # or `flock /tmp/slurm-bridge-e2e.lock pytest ...`'s) would hold that lock for as long as it runs.
  (
    for fd in /proc/$BASHPID/fd/*; do
      n="${fd##*/}"
      if ((n > 2)); then eval "exec $n>&-" 2>/dev/null || true; fi
    done
    KUBECONFIG="$KUBECONFIG_FILE" exec setsid "$WBIN/$name" "$@"
  ) >>"$S/$name.log" 2>&1 </dev/null &
  echo $! >"$S/$name.pid"
}

# Serving = health probe ready AND the webhook answers TLS on loopback with our CA.
wait_serving() { # name health-port webhook-port
  local i
  for i in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 &&
      curl -sS --cacert "$S/pki/ca.crt" -o /dev/null "https://127.0.0.1:$3/" 2>/dev/null; then
      log "$1 serving (readyz on :$2, webhook on :$3)"; return 0
    fi
    if ! kill -0 "$(cat "$S/$1.pid")" 2>/dev/null; then
      tail -n 15 "$S/$1.log" >&2
      die "$1 exited during startup (log: $S/$1.log)"
    fi
    sleep 0.5
  done
  tail -n 15 "$S/$1.log" >&2
  die "$1 did not serve within 60 s (log: $S/$1.log)"
}

up() {
  [[ -f "$KUBECONFIG_FILE" ]] || die "no Kubernetes control plane state at $KUBECONFIG_FILE; run testbed/k8s.sh up first"
  kubectl get --raw /readyz >/dev/null 2>&1 || die "kube-apiserver is not ready; run testbed/k8s.sh up first"
  build
  mkdir -p "$S"
  make_certs
  export GOFLAGS="${GOFLAGS:--mod=mod}" GOTOOLCHAIN=local
  local jdir ldir
  jdir="$(module_dir sigs.k8s.io/jobset "$JOBSET_VERSION")"
  ldir="$(module_dir sigs.k8s.io/lws "$LWS_VERSION")"
  local jcrd="$jdir/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml"
  local lcrd="$ldir/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml"
  [[ -f "$jcrd" && -f "$lcrd" ]] || die "CRD manifests not found in the module cache ($jcrd, $lcrd)"
  log "installing CRDs jobsets.jobset.x-k8s.io and leaderworkersets.leaderworkerset.x-k8s.io"
  kubectl apply --server-side --force-conflicts -f "$jcrd" -f "$lcrd" >/dev/null || die "CRD install failed"
  kubectl wait --for=condition=Established --timeout=30s \
    crd/jobsets.jobset.x-k8s.io crd/leaderworkersets.leaderworkerset.x-k8s.io >/dev/null ||
    die "CRDs not Established within 30 s"
  # LWS reads its own namespace from the service-account file (absent here) and defaults to lws-system.
  kubectl create namespace lws-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  controller_config config.jobset.x-k8s.io "$JOBSET_HEALTH_PORT" "$JOBSET_WEBHOOK_PORT" >"$S/jobset-config.yaml"
  controller_config config.lws.x-k8s.io "$LWS_HEALTH_PORT" "$LWS_WEBHOOK_PORT" >"$S/lws-config.yaml"
  start jobset-controller --config "$S/jobset-config.yaml" --zap-log-level=info
  start lws-controller --config "$S/lws-config.yaml"
  wait_serving jobset-controller "$JOBSET_HEALTH_PORT" "$JOBSET_WEBHOOK_PORT"
  wait_serving lws-controller "$LWS_HEALTH_PORT" "$LWS_WEBHOOK_PORT"
  {
    webhook_yaml jobset "$JOBSET_WEBHOOK_PORT" jobset.sigs.k8s.io/jobset-name jobset.x-k8s.io v1alpha2 \
      jobset-x-k8s-io-v1alpha2-jobset jobsets CREATE
    webhook_yaml lws "$LWS_WEBHOOK_PORT" leaderworkerset.sigs.k8s.io/name leaderworkerset.x-k8s.io v1 \
      leaderworkerset-x-k8s-io-v1-leaderworkerset leaderworkersets "CREATE, UPDATE"
  } >"$S/webhooks.yaml"
  kubectl apply -f "$S/webhooks.yaml" >/dev/null || die "registering the admission webhooks failed"
  # End to end: a server-side dry-run create goes through both defaulting and validating webhooks.
  local i ok=""
  for i in $(seq 1 30); do
    if dry_run_ok; then ok=1; break; fi
    sleep 1
  done
  [[ -n "$ok" ]] || die "JobSet/LWS admission webhooks do not answer the apiserver (logs: $S/*.log)"
  log "JobSet $JOBSET_VERSION and LeaderWorkerSet $LWS_VERSION controllers up, webhooks registered"
}

dry_run_ok() {
  kubectl create --dry-run=server -o name -f - >/dev/null 2>"$S/dry-run.err" <<'YAML'
apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata: {name: testbed-dry-run, namespace: default}
spec:
  replicatedJobs:
  - name: w
    replicas: 1
    template:
      spec:
        template:
          spec:
            restartPolicy: Never
            containers: [{name: c, image: pause}]
---
apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
metadata: {name: testbed-dry-run, namespace: default}
spec:
  replicas: 1
  leaderWorkerTemplate:
    size: 2
    workerTemplate:
      spec:
        containers: [{name: c, image: pause}]
YAML
}

down() {
  # Webhooks first: with failurePolicy Fail, a registered webhook whose process is gone refuses writes.
  if [[ -f "$KUBECONFIG_FILE" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl delete mutatingwebhookconfiguration,validatingwebhookconfiguration \
      -l app.kubernetes.io/managed-by=slurm-bridge-testbed --ignore-not-found >/dev/null 2>&1 || true
  fi
  local name pid
  for name in jobset-controller lws-controller; do
    [[ -f "$S/$name.pid" ]] || continue
    pid="$(cat "$S/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped $name (pid $pid)"
    fi
    rm -f "$S/$name.pid"
  done
}

status() {
  local name pid
  for name in jobset-controller lws-controller; do
    pid="$(cat "$S/$name.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      echo "[workload-controllers] $name running (pid $pid)"
    else
      echo "[workload-controllers] $name not running"
    fi
  done
  if [[ -f "$KUBECONFIG_FILE" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl get jobsets.jobset.x-k8s.io,leaderworkersets.leaderworkerset.x-k8s.io -A 2>/dev/null || true
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  build) build ;;
  *) echo "usage: $0 up|down|status|build" >&2; exit 2 ;;
esac
