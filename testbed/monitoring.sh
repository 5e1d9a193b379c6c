#!/usr/bin/env bash
# The monitoring chain of the testbed, on loopback: Prometheus (Debian package) scraping the bridge's
# exporter (127.0.0.1:17480) and Slurm 26.05's own OpenMetrics (slurmctld, port 17200), and
# prometheus-adapter (built from the Go module proxy, cached by version) serving the project's rules
# (deploy/monitoring/prometheus-adapter-rules.yaml) as v1beta1.external.metrics.k8s.io through the
# kube-apiserver's aggregation layer, for the HPA in kube-controller-manager.
#   monitoring.sh up | down | status       (needs the Kubernetes part of the testbed up)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
S="$STATE_ROOT/monitoring"
PROM_PORT=17490
ADAPTER_PORT=17491
EXPORTER_TARGET=127.0.0.1:17480 # metrics_listen_address of .testbed/bridge.yaml
SLURMCTLD_26_TARGET=127.0.0.1:17200 # slurmctld 26.05 (MetricsType=metrics/openmetrics)
ADAPTER_DIR="$CACHE/prometheus-adapter/$PROMETHEUS_ADAPTER_VERSION"
ADAPTER="$ADAPTER_DIR/bin/adapter"
RULES="$REPO/deploy/monitoring/prometheus-adapter-rules.yaml"
KUBECONFIG_FILE="$STATE_ROOT/k8s/admin.kubeconfig"
NAMESPACE=slurm-bridge-system
log() { echo "[monitoring] $*" >&2; }
die() { echo "[monitoring] FATAL: $*" >&2; exit 1; }
kubectl() { "$CACHE/k8s/$K8S_VERSION/bin/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
running() { pgrep -f -- "$1" >/dev/null; }
PROM_PATTERN="prometheus --config.file=$S/prometheus.yml"
ADAPTER_PATTERN="adapter --prometheus-url=http://127.0.0.1:$PROM_PORT/"

install_prometheus() {
  command -v prometheus >/dev/null && return 0
  log "installing prometheus from Debian"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends prometheus >"$S/apt.log" 2>&1; then
    apt-get update >>"$S/apt.log" 2>&1 || true
    apt-get install -y --no-install-recommends prometheus >>"$S/apt.log" 2>&1 ||
      die "apt-get install prometheus failed; see $S/apt.log"
  fi
  command -v prometheus >/dev/null || die "the prometheus package installed no prometheus binary"
  log "prometheus $(prometheus --version 2>&1 | awk 'NR==1{print $3}') installed in $((SECONDS - t0)) s"
}

build_adapter() {
  [[ -x "$ADAPTER" ]] && return 0
  source "$HERE/go.sh"
  ensure_go || die "no Go toolchain (see above)"
  export GOFLAGS="${GOFLAGS:--mod=mod}" GOTOOLCHAIN=local
  mkdir -p "$ADAPTER_DIR"
  # One build at a time per cache: a second caller waits, then finds the binary cached.
  exec 7>"$ADAPTER_DIR/build.lock"
  flock 7
  if [[ -x "$ADAPTER" ]]; then exec 7>&-; return 0; fi
  local mod="$ADAPTER_DIR/module" t0=$SECONDS
  mkdir -p "$mod" "$ADAPTER_DIR/bin"
  # `go install ...@version` fails here (the proxy refuses the version list): a wrapper module does not.
  cat >"$mod/go.mod" <<GOMOD
module bridge.local/adapterbuild

go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1.0/')

require sigs.k8s.io/prometheus-adapter $PROMETHEUS_ADAPTER_VERSION
GOMOD
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
GO
  log "prometheus-adapter $PROMETHEUS_ADAPTER_VERSION: go mod tidy"
  (cd "$mod" && go mod tidy) >"$S/adapter-build.log" 2>&1 ||
    { tail -n 20 "$S/adapter-build.log" >&2; die "go mod tidy for prometheus-adapter failed; see $S/adapter-build.log"; }
  log "prometheus-adapter $PROMETHEUS_ADAPTER_VERSION: go build (about 4 min on 2 cold cores)"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$ADAPTER.tmp" sigs.k8s.io/prometheus-adapter/cmd/adapter) \
    >>"$S/adapter-build.log" 2>&1 ||
    { tail -n 20 "$S/adapter-build.log" >&2; die "building prometheus-adapter failed; see $S/adapter-build.log"; }
  mv "$ADAPTER.tmp" "$ADAPTER"
  log "prometheus-adapter $PROMETHEUS_ADAPTER_VERSION built in $((SECONDS - t0)) s ($ADAPTER)"
  exec 7>&-
}

wait_for() { # seconds what command...
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready within ${secs}s; see $S/*.log"
    sleep 0.5
  done
}

write_prometheus_config() {
  # The slurmctld jobs pick the path per target through __metrics_path__; `source` tells them apart
  # from the exporter's series of the same name (Slurm's native names are shared on purpose).
  cat >"$S/prometheus.yml" <<YAML
# Written by testbed/monitoring.sh; the bridge's part is deploy/monitoring/prometheus-scrape.yaml.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
- job_name: slurm-bridge
  scrape_interval: 5s
  scrape_timeout: 4s
  static_configs:
  - targets: ["$EXPORTER_TARGET"]
    labels: {source: slurm-bridge}
- job_name: slurmctld
  scrape_interval: 5s
  scrape_timeout: 4s
  static_configs:
$(for p in jobs nodes partitions scheduler; do
    printf '  - targets: ["%s"]\n    labels: {source: slurmctld, slurm_version: "26.05", endpoint: %s, __metrics_path__: /metrics/%s}\n' \
      "$SLURMCTLD_26_TARGET" "$p" "$p"
  done)
YAML
}

start_prometheus() {
  if running "$PROM_PATTERN"; then
    # a changed config (a newer monitoring.sh) is applied by a reload, not a restart
    cp "$S/prometheus.yml" "$S/prometheus.yml.old"
    write_prometheus_config
    if ! cmp -s "$S/prometheus.yml" "$S/prometheus.yml.old"; then
      log "prometheus config changed: reloading"
      curl -sf -X POST "http://127.0.0.1:$PROM_PORT/-/reload" >/dev/null || die "prometheus did not reload $S/prometheus.yml"
    fi
    rm -f "$S/prometheus.yml.old"
    return 0
  fi
  write_prometheus_config
  if command -v promtool >/dev/null; then
    promtool check config "$S/prometheus.yml" >"$S/promtool.log" 2>&1 ||
      { cat "$S/promtool.log" >&2; die "generated $S/prometheus.yml is invalid"; }
  fi
  log "starting prometheus on 127.0.0.1:$PROM_PORT"
  nohup prometheus --config.file="$S/prometheus.yml" --storage.tsdb.path="$S/prometheus-data" \
    --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle >"$S/prometheus.log" 2>&1 </dev/null &
  wait_for 60 prometheus curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"
}

start_adapter() {
  running "$ADAPTER_PATTERN" && return 0
  [[ -f "$RULES" ]] || die "adapter rules $RULES missing"
  log "starting prometheus-adapter $PROMETHEUS_ADAPTER_VERSION on 127.0.0.1:$ADAPTER_PORT"
  mkdir -p "$S/adapter-certs"
  nohup "$ADAPTER" --prometheus-url="http://127.0.0.1:$PROM_PORT/" --metrics-relist-interval=10s \
    --config="$RULES" --secure-port="$ADAPTER_PORT" --bind-address=127.0.0.1 --cert-dir="$S/adapter-certs" \
    --lister-kubeconfig="$KUBECONFIG_FILE" --authentication-kubeconfig="$KUBECONFIG_FILE" \
    --authorization-kubeconfig="$KUBECONFIG_FILE" >"$S/adapter.log" 2>&1 </dev/null &
}

register_apiservice() {
  # Loopback endpoints are refused by the apiserver; a selector-less Service with an FQDN EndpointSlice
  # whose address is 127.0.0.1 is what works (TESTBED-FACTS). The aggregator never dials the ClusterIP.
  kubectl apply -f - >/dev/null <<YAML || die "could not register v1beta1.external.metrics.k8s.io"
apiVersion: v1
kind: Service
metadata:
  name: prometheus-adapter
  namespace: $NAMESPACE
spec:
  ports:
  - {name: https, port: 443, protocol: TCP, targetPort: $ADAPTER_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: prometheus-adapter-loopback
  namespace: $NAMESPACE
  labels: {kubernetes.io/service-name: prometheus-adapter}
addressType: FQDN
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
ports:
- {name: https, port: $ADAPTER_PORT, protocol: TCP}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.external.metrics.k8s.io
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  service: {name: prometheus-adapter, namespace: $NAMESPACE, port: 443}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
}

up() {
  [[ -f "$KUBECONFIG_FILE" ]] || die "Kubernetes is not up ($KUBECONFIG_FILE missing): run testbed/up.sh"
  mkdir -p "$S"
  install_prometheus
  build_adapter
  start_prometheus
  start_adapter
  wait_for 60 prometheus-adapter curl -sfk "https://127.0.0.1:$ADAPTER_PORT/healthz"
  kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE" >/dev/null
  register_apiservice
  wait_for 90 "the aggregated API /apis/external.metrics.k8s.io/v1beta1" \
    kubectl get --raw /apis/external.metrics.k8s.io/v1beta1
  log "ready: prometheus http://127.0.0.1:$PROM_PORT, adapter https://127.0.0.1:$ADAPTER_PORT as external.metrics.k8s.io/v1beta1"
}

down() {
  if [[ -f "$KUBECONFIG_FILE" ]] && kubectl get --raw /readyz --request-timeout=3s >/dev/null 2>&1; then
    # an APIService with nothing behind it makes every discovery call report an error
    kubectl delete apiservice v1beta1.external.metrics.k8s.io --ignore-not-found --request-timeout=10s \
      >/dev/null 2>&1 || true
  fi
  local pat="($ADAPTER_PATTERN|$PROM_PATTERN)" pids
  pids="$(pgrep -f -- "$pat" || true)"
  [[ -z "$pids" ]] && return 0
  log "stopping $(wc -w <<<"$pids") processes"
  kill $pids 2>/dev/null || true
  for _ in $(seq 50); do
    pgrep -f -- "$pat" >/dev/null || break
    sleep 0.2
  done
  pids="$(pgrep -f -- "$pat" || true)"
  [[ -z "$pids" ]] || kill -9 $pids 2>/dev/null || true
}

status() {
  echo "== Monitoring: prometheus-adapter $PROMETHEUS_ADAPTER_VERSION"
  if running "$PROM_PATTERN"; then
    echo "prometheus http://127.0.0.1:$PROM_PORT: targets $(curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/targets" |
      grep -o '"health":"[a-z]*"' | sort | uniq -c | tr -s ' \n' ' ')"
  else
    echo "prometheus: not running"
  fi
  if running "$ADAPTER_PATTERN"; then
    echo "prometheus-adapter https://127.0.0.1:$ADAPTER_PORT: running"
    kubectl get apiservice v1beta1.external.metrics.k8s.io 2>/dev/null || true
  else
    echo "prometheus-adapter: not running"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: monitoring.sh up|down|status" ;;
esac
