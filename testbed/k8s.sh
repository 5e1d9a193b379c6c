#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager of the
# pinned release (built from the Go module proxy by build-k8s.sh, cached), plus kwok as the kubelet
# stand-in and Node objects named like the Slurm nodes.
#   k8s.sh up | down | status
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
S="$STATE_ROOT/k8s"
K8S_BIN="$CACHE/k8s/$K8S_VERSION/bin"
ETCD="$CACHE/etcd/$ETCD_VERSION/bin/etcd"
KWOK="$CACHE/kwok/$KWOK_VERSION/bin/kwok"
ETCD_PORT=17400
ETCD_PEER_PORT=17401
API_PORT=17443
KCM_PORT=17457
KWOK_PORT=17410
NODES=(slurm-bridge-0 slurm-bridge-1 slurm-bridge-2 slurm-bridge-3)
GPU_NODES=(slurm-bridge-2 slurm-bridge-3)
FEATURES="GenericWorkload=true"
log() { echo "[k8s] $*" >&2; }
die() { echo "[k8s] FATAL: $*" >&2; exit 1; }
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$S/admin.kubeconfig" "$@"; }
running() { pgrep -f -- "$1" >/dev/null; }

make_certs() {
  local p="$S/pki"
  [[ -f "$p/.complete" ]] && return 0
  mkdir -p "$p" && cd "$p"
  log "creating certificates"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=testbed-ca" -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=testbed-front-proxy-ca" \
    -keyout front-proxy-ca.key -out front-proxy-ca.crt 2>/dev/null
  sign() { # name subject ca extensions
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 3650 \
      -extfile <(printf '%s\n' "$4") -out "$1.crt" 2>/dev/null
    rm -f "$1.csr"
  }
  sign apiserver "/CN=kube-apiserver" ca \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1"
  sign admin "/O=system:masters/CN=admin" ca "extendedKeyUsage=clientAuth"
  sign controller-manager "/CN=system:kube-controller-manager" ca "extendedKeyUsage=clientAuth"
  sign kwok "/O=system:masters/CN=kwok" ca "extendedKeyUsage=clientAuth"
  sign front-proxy-client "/CN=front-proxy-client" front-proxy-ca "extendedKeyUsage=clientAuth"
  openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
  touch "$p/.complete"
}

kubeconfig_for() { # user -> file
  local user="$1" file="$S/$1.kubeconfig" p="$S/pki"
  # Written aside, then renamed: every test session runs `up`, and a reader must never see a half file.
  cat >"$file.tmp.$$" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$p/$user.crt")
    client-key-data: $(base64 -w0 "$p/$user.key")
contexts:
- name: testbed
  context: {cluster: testbed, user: $user}
current-context: testbed
KC
  chmod 0600 "$file.tmp.$$"
  mv -f "$file.tmp.$$" "$file"
}

wait_http() { # url seconds what [curl args...]
  local url="$1" secs="$2" what="$3"; shift 3
  local deadline=$((SECONDS + secs))
  until curl -sf "$@" "$url" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not become ready at $url within ${secs}s; see $S/*.log"
    sleep 0.5
  done
}

start_etcd() {
  running "etcd --name testbed-etcd" && return 0
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  nohup "$ETCD" --name testbed-etcd --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
    --quota-backend-bytes=4294967296 --log-level=warn >"$S/etcd.log" 2>&1 </dev/null &
  wait_http "http://127.0.0.1:$ETCD_PORT/health" 30 etcd
}

start_apiserver() {
  running "kube-apiserver --etcd-servers=http://127.0.0.1:$ETCD_PORT" && return 0
  log "starting kube-apiserver $K8S_VERSION on 127.0.0.1:$API_PORT"
  local p="$S/pki"
  nohup "$K8S_BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --secure-port="$API_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$p/sa.pub" \
    --service-account-signing-key-file="$p/sa.key" --service-cluster-ip-range=10.96.0.0/16 \
    --authorization-mode=Node,RBAC --feature-gates="$FEATURES" \
    --runtime-config=scheduling.k8s.io/v1beta1=true \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User --proxy-client-cert-file="$p/front-proxy-client.crt" \
    --proxy-client-key-file="$p/front-proxy-client.key" --enable-aggregator-routing=true \
    >"$S/kube-apiserver.log" 2>&1 </dev/null &
  wait_http "https://127.0.0.1:$API_PORT/readyz" 90 kube-apiserver --cacert "$p/ca.crt" \
    --cert "$p/admin.crt" --key "$p/admin.key"
}

start_controller_manager() {
  running "kube-controller-manager --kubeconfig=$S/controller-manager.kubeconfig" && return 0
  log "starting kube-controller-manager"
  local p="$S/pki"
  nohup "$K8S_BIN/kube-controller-manager" --kubeconfig="$S/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$S/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$S/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --use-service-account-credentials=true --controllers='*' --feature-gates="$FEATURES" \
    --horizontal-pod-autoscaler-sync-period=5s \
    >"$S/kube-controller-manager.log" 2>&1 </dev/null &
  wait_http "https://127.0.0.1:$KCM_PORT/healthz" 60 kube-controller-manager -k
}

kwok_stages() { # kwok's stock node/pod stages (from its module, delays shortened) + the testbed's own
  local mod out="$S/kwok-stages.yaml"
  mod="$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$mod/kustomize/stage" ]] || die "kwok $KWOK_VERSION stages not found in the Go module cache"
  # one stage set for the testbed and the docker-compose dev stack
  bash "$HERE/kwok-stages.sh" "$mod/kustomize/stage" >"$out"
  echo "$out"
}

start_kwok() {
  running "kwok --kubeconfig $S/kwok.kubeconfig" && return 0
  log "starting kwok $KWOK_VERSION (kubelet stand-in)"
  local stages
  stages="$(kwok_stages)"
  nohup "$KWOK" --kubeconfig "$S/kwok.kubeconfig" --config "$stages" --manage-all-nodes=true \
    --cidr=10.0.0.1/24 --node-ip=127.0.0.1 --server-address="127.0.0.1:$KWOK_PORT" \
    >"$S/kwok.log" 2>&1 </dev/null &
}

create_nodes() {
  bash "$HERE/k8s-nodes.sh" | kubectl apply -f - >/dev/null || die "could not create the testbed's Node objects"
  # Where NodeSet slurmd pods run (bound by testbed/nodeset_kubelet.py); not a node the bridge binds to.
  cat <<NODE | kubectl apply -f - >/dev/null || die "could not create the Node nodeset-host"
apiVersion: v1
kind: Node
metadata:
  name: nodeset-host
  labels: {kubernetes.io/hostname: nodeset-host, kubernetes.io/os: linux, type: kwok, slurm-bridge.io/testbed-nodeset-host: "true"}
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
status:
  capacity: {cpu: "32", memory: 64Gi, pods: "110"}
  allocatable: {cpu: "32", memory: 64Gi, pods: "110"}
NODE
  local deadline=$((SECONDS + 60)) ready=0
  while ((SECONDS < deadline)); do
    ready="$(kubectl get nodes -l slurm-bridge.io/testbed=true \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
    ((ready >= ${#NODES[@]})) && break
    sleep 0.5
  done
  ((ready >= ${#NODES[@]})) || die "kwok did not make the nodes Ready ($ready/${#NODES[@]}); see $S/kwok.log"
  # the bridge's namespaces: the seed's demo namespace and one for its own objects (Lease, ...)
  for ns in slurm-bridge slurm-bridge-system; do
    kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  done
  # the default service account must exist before pods can be created in a namespace
  deadline=$((SECONDS + 60))
  until kubectl -n slurm-bridge get serviceaccount default >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "kube-controller-manager never created the default ServiceAccount"
    sleep 0.5
  done
}

write_env() {
  mkdir -p "$STATE_ROOT/bin/k8s"
  ln -sf "$K8S_BIN/kubectl" "$STATE_ROOT/bin/k8s/kubectl"
  cat >"$STATE_ROOT/k8s.env" <<ENV
KUBECONFIG=$S/admin.kubeconfig
KUBE_APISERVER_URL=https://127.0.0.1:$API_PORT
K8S_VERSION=$K8S_VERSION
K8S_BIN=$STATE_ROOT/bin/k8s
K8S_LOGS=$S
ENV
}

up() {
  bash "$HERE/build-k8s.sh" all || die "building Kubernetes $K8S_VERSION / etcd / kwok failed (see above)"
  mkdir -p "$S"
  make_certs
  for u in admin controller-manager kwok; do kubeconfig_for "$u"; done
  start_etcd
  start_apiserver
  start_controller_manager
  start_kwok
  create_nodes
  # the project's CRDs (coscheduling PodGroup, ...)
  kubectl apply -f "$REPO/deploy/crds/" >/dev/null || die "could not install the CRDs in deploy/crds/"
  write_env
  log "ready: Kubernetes $K8S_VERSION at https://127.0.0.1:$API_PORT, nodes ${NODES[*]}"
}

down() {
  local pat="(kwok --kubeconfig $S/|kube-controller-manager --kubeconfig=$S/|kube-apiserver --etcd-servers=http://127.0.0.1:$ETCD_PORT|etcd --name testbed-etcd)"
  local pids
  pids="$(pgrep -f -- "$pat" || true)"
  [[ -z "$pids" ]] && { rm -f "$STATE_ROOT/k8s.env"; return 0; }
  log "stopping $(wc -w <<<"$pids") processes"
  kill $pids 2>/dev/null || true
  for _ in $(seq 50); do
    pgrep -f -- "$pat" >/dev/null || break
    sleep 0.2
  done
  pids="$(pgrep -f -- "$pat" || true)"
  [[ -z "$pids" ]] || kill -9 $pids 2>/dev/null || true
  rm -f "$STATE_ROOT/k8s.env"
}

# Only the API server, for the server-fault e2e (tests/testbed/test_server_faults_e2e.py): etcd keeps the
# state, so a restart is what a control-plane upgrade or crash looks like to its clients.
apiserver_stop() {
  local pat="kube-apiserver --etcd-servers=http://127.0.0.1:$ETCD_PORT" _
  pkill -f -- "$pat" || true
  for _ in $(seq 50); do running "$pat" || return 0; sleep 0.2; done
  pkill -9 -f -- "$pat" || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  apiserver-stop) apiserver_stop ;;
  apiserver-start) start_apiserver ;;
  status)
    echo "== Kubernetes $K8S_VERSION"
    if running "kube-apiserver --etcd-servers=http://127.0.0.1:$ETCD_PORT"; then kubectl get nodes -o wide || true; else echo "not running"; fi
    ;;
  *) die "usage: k8s.sh up|down|status|apiserver-stop|apiserver-start" ;;
esac
