#!/usr/bin/env bash
# One role of the docker-compose dev stack per container (docker-compose.yml at the top of the repo):
#   devstack.sh slurmctld | slurmd NODE | slurmrestd          Slurm 22.05 (munge + JWT), config from
#                                                          testbed/slurm-conf.sh, the testbed's generator
#   devstack.sh etcd | kube-apiserver | kube-controller-manager | kwok | k8s-setup
#                                                          a Kubernetes control plane from the testbed's
#                                                          binaries, with Node objects named like the Slurm nodes
#   devstack.sh prometheus-config                          the shipped scrape config, ports of this stack
# Shared state lives in two volumes: /srv/slurm (keys, Slurm's state, logs) and /srv/k8s (certificates,
# kubeconfigs). The first container to need a key makes it (under a lock); the others wait for it.
# Files for the bridge (uid 10001 in its image) are copied readable to it: bridge-jwt.key, bridge.kubeconfig.
set -euo pipefail
ROLE="${1:?usage: devstack.sh ROLE [NODE]}"
S=/srv/slurm K=/srv/k8s
SLURM_BASE_PORT="${SLURM_BASE_PORT:-18100}" RESTD_PORT="${RESTD_PORT:-18150}" CLUSTER="${CLUSTER:-devstack}"
ETCD_PORT="${ETCD_PORT:-18140}" API_PORT="${API_PORT:-18143}" KCM_PORT="${KCM_PORT:-18157}" KWOK_PORT="${KWOK_PORT:-18130}"
BRIDGE_UID=10001
log() { echo "[devstack $ROLE] $*" >&2; }
wait_file() { # path seconds
  local deadline=$((SECONDS + ${2:-120}))
  until [[ -e "$1" ]]; do
    ((SECONDS < deadline)) || { log "FATAL: $1 did not appear"; exit 1; }
    sleep 0.5
  done
}
wait_http() { # url seconds [curl args]
  local url="$1" deadline=$((SECONDS + $2)); shift 2
  until curl -sf "$@" "$url" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "FATAL: $url not ready"; exit 1; }
    sleep 0.5
  done
}

# --- Slurm ----------------------------------------------------------------------------------------------
slurm_prepare() {
  mkdir -p "$S"/{ctld,spool,run,log,gpu}
  (
    flock 9
    [[ -f "$S/munge.key" ]] || { head -c 1024 /dev/urandom >"$S/munge.key"; chmod 0400 "$S/munge.key"; }
    [[ -f "$S/jwt.key" ]] || { head -c 32 /dev/urandom >"$S/jwt.key"; chmod 0600 "$S/jwt.key"; }
    install -m 0400 -o "$BRIDGE_UID" -g "$BRIDGE_UID" "$S/jwt.key" "$S/bridge-jwt.key"
    for g in 0 1; do [[ -e "$S/gpu/fake$g" ]] || mknod "$S/gpu/fake$g" c 1 3; done
  ) 9>"$S/.lock"
  for f in slurm.conf gres.conf cgroup.conf; do
    bash /opt/devstack/slurm-conf.sh "$f" 22.05 "$CLUSTER" "$SLURM_BASE_PORT" "$S" >"/etc/slurm/$f"
  done
  [[ -s /etc/slurm/cgroup.conf ]] || rm -f /etc/slurm/cgroup.conf
  install -m 0400 -o munge -g munge "$S/munge.key" /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/local/sbin/munged-devstack
}

case "$ROLE" in
  slurmctld)
    slurm_prepare
    exec /usr/sbin/slurmctld -D -i
    ;;
  slurmd)
    node="${2:?usage: devstack.sh slurmd NODE}"
    slurm_prepare
    mkdir -p "$S/spool/$node"
    exec /usr/sbin/slurmd -D -N "$node"
    ;;
  slurmrestd)
    slurm_prepare
    # 22.05: slurmrestd uses auth/munge for its own calls with SLURM_JWT=daemon; clients send JWTs
    # (in a container without CAP_SYS_ADMIN it cannot unshare its namespaces: leave them shared)
    export SLURM_JWT=daemon SLURMRESTD_SECURITY=disable_user_check,disable_unshare_sysv,disable_unshare_files
    exec /usr/sbin/slurmrestd -a rest_auth/jwt -s openapi/v0.0.38 "127.0.0.1:$RESTD_PORT"
    ;;

  # --- Kubernetes -------------------------------------------------------------------------------------
  etcd)
    mkdir -p "$K/etcd"
    exec /opt/etcd/etcd --name devstack-etcd --data-dir "$K/etcd" \
      --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
      --initial-cluster "devstack-etcd=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level=warn
    ;;
  kube-apiserver)
    p="$K/pki"
    (
      flock 9
      if [[ ! -f "$p/.complete" ]]; then
        mkdir -p "$p" && cd "$p"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=devstack-ca" -keyout ca.key -out ca.crt 2>/dev/null
        sign() { # name subject extensions
          openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
          openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile <(printf '%s\n' "$3") -out "$1.crt" 2>/dev/null
          rm -f "$1.csr"
        }
        sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1"
        for u in admin controller-manager kwok; do
          subject="/O=system:masters/CN=$u"
          [[ "$u" == controller-manager ]] && subject="/CN=system:kube-controller-manager"
          sign "$u" "$subject" "extendedKeyUsage=clientAuth"
          cat >"$K/$u.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: devstack
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: $(base64 -w0 ca.crt)}
users:
- name: $u
  user: {client-certificate-data: $(base64 -w0 "$u.crt"), client-key-data: $(base64 -w0 "$u.key")}
contexts:
- name: devstack
  context: {cluster: devstack, user: $u}
current-context: devstack
KC
        done
        openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        # the dev stack's bridge is an admin (the Helm chart gives a real install least privilege)
        install -m 0400 -o "$BRIDGE_UID" -g "$BRIDGE_UID" "$K/admin.kubeconfig" "$K/bridge.kubeconfig"
        chmod 0644 "$K"/*.kubeconfig && chmod 0400 "$K/bridge.kubeconfig"
        touch .complete
      fi
    ) 9>"$K/.lock"
    wait_http "http://127.0.0.1:$ETCD_PORT/health" 60
    exec /opt/k8s/bin/kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
      --secure-port="$API_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
      --endpoint-reconciler-type=none \
      --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
      --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$p/sa.pub" \
      --service-account-signing-key-file="$p/sa.key" --service-cluster-ip-range=10.96.0.0/16 \
      --authorization-mode=Node,RBAC --feature-gates=GenericWorkload=true \
      --runtime-config=scheduling.k8s.io/v1beta1=true
    ;;
  kube-controller-manager)
    wait_file "$K/pki/.complete"
    exec /opt/k8s/bin/kube-controller-manager --kubeconfig="$K/controller-manager.kubeconfig" \
      --authentication-kubeconfig="$K/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$K/controller-manager.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
      --service-account-private-key-file="$K/pki/sa.key" --root-ca-file="$K/pki/ca.crt" \
      --use-service-account-credentials=true --controllers='*' --feature-gates=GenericWorkload=true
    ;;
  kwok)
    wait_file "$K/pki/.complete"
    # the testbed's stage set (testbed/kwok-stages.sh): stock stages from kwok's module plus the testbed's own
    stages=/tmp/kwok-stages.yaml
    bash /opt/devstack/testbed/kwok-stages.sh /opt/kwok-stage >"$stages"
    exec /opt/kwok/kwok --kubeconfig "$K/kwok.kubeconfig" --config "$stages" --manage-all-nodes=true \
      --cidr=10.0.0.1/24 --node-ip=127.0.0.1 --server-address="127.0.0.1:$KWOK_PORT"
    ;;
  k8s-setup) # one shot: Node objects like the testbed's, the bridge's namespaces, the project's CRDs
    wait_file "$K/pki/.complete"
    kubectl() { /opt/k8s/bin/kubectl --kubeconfig "$K/admin.kubeconfig" "$@"; }
    wait_http "https://127.0.0.1:$API_PORT/readyz" 120 -k
    bash /opt/devstack/testbed/k8s-nodes.sh | kubectl apply -f - >/dev/null
    for ns in slurm-bridge slurm-bridge-system; do
      kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
    done
    kubectl apply -f /opt/devstack/crds/ >/dev/null
    log "nodes, namespaces and CRDs in place"
    ;;

  # --- Prometheus -------------------------------------------------------------------------------------
  prometheus-config) # stdin: deploy/monitoring/prometheus-scrape.yaml; stdout: it with this stack's ports.
    # Slurm 22.05 serves no metrics of its own (>= 25.11 does): its `slurmctld` job is left out.
    sed -e "s/127\.0\.0\.1:17480/127.0.0.1:${BRIDGE_METRICS_PORT:-18180}/g" -e '/^  - job_name: slurmctld/,$d'
    ;;
  *) log "unknown role"; exit 2 ;;
esac
