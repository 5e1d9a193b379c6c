#!/usr/bin/env bash
# One real Slurm cluster per version on loopback: slurmctld + 4 slurmd + slurmrestd (JWT).
#   slurm.sh install VERSION   install packages (22.05: host; 24.11/26.05: cached chroots)
#   slurm.sh up VERSION        install if needed, configure, start, wait until ready, write env
#   slurm.sh down VERSION      stop every daemon of that cluster
#   slurm.sh status VERSION    print daemon and node status
#   slurm.sh slurmd-start|slurmd-stop VERSION NODE, slurmd-list VERSION
#                              one slurmd of a declared NodeSet node (used by testbed/nodeset_kubelet.py)
# Versions: 22.05 (Debian bookworm host packages, REST v0.0.38), 24.11 (trixie chroot, v0.0.40-42),
# 26.05 (sid packages on a trixie chroot, v0.0.42-45). Clusters of different versions coexist:
# each has its own ports, state directory and ClusterName.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
log() { echo "[slurm $VERSION] $*" >&2; }
die() { echo "[slurm $VERSION] FATAL: $*" >&2; exit 1; }

ACTION="${1:?usage: slurm.sh install|up|down|status|slurmd-start|slurmd-stop|slurmd-list VERSION [NODE]}"
VERSION="${2:?usage: slurm.sh install|up|down|status VERSION}"

# Node layout shared by every version (the Kubernetes nodes of the testbed carry the same names).
NODES=(slurm-bridge-0 slurm-bridge-1 slurm-bridge-2 slurm-bridge-3)
FUTURE_NODES=8 # ns-0 .. ns-7: NodeSet-style nodes declared ahead (State=FUTURE)
PARTITION=slurm-bridge
TOKEN_USER=slurm
TENANT_USERS=(alice bob) # Unix users of two tenants (accounts physics and biology)

case "$VERSION" in
  22.05) BASE_PORT=17000; ROOT=""; API_PLUGINS="openapi/v0.0.38" ;;
  24.11) BASE_PORT=17100; ROOT="$CACHE/roots/trixie-slurm-24.11"; API_PLUGINS="openapi/slurmctld" ;;
  26.05) BASE_PORT=17200; ROOT="$CACHE/roots/sid-slurm-26.05"; API_PLUGINS="openapi/slurmctld" ;;
  *) die "unsupported SLURM version '$VERSION' (choose 22.05, 24.11 or 26.05)" ;;
esac
CTLD_PORT=$BASE_PORT
RESTD_PORT=$((BASE_PORT + 50))
DBD_PORT=$((BASE_PORT + 60))
CLUSTER="tb${VERSION/./}"
# Path of the cluster's state as seen by its daemons (inside the chroot for chroot versions).
if [[ -z "$ROOT" ]]; then IN="$STATE_ROOT/slurm/$VERSION"; else IN="/srv/bridge-testbed-$VERSION"; fi
HOST_STATE="$ROOT$IN"
CONF="$IN/slurm.conf"
DB_NAME="${CLUSTER}_acct"

# Slurm's commands authenticate with $SLURM_JWT when it is set; .testbed/env sets it for slurmrestd
# clients, and another cluster's token would be refused: commands here always run without it.
# They also run with a PATH of the system's own directories only: a shell that sourced .testbed/env has
# .testbed/bin/<default version> first in PATH, whose wrappers set THAT cluster's SLURM_CONF, so a bare
# `scontrol token` for 22.05 used to reach the 26.05 slurmctld and write a token signed with its key.
SYSTEM_PATH=/usr/sbin:/usr/bin:/sbin:/bin
in_root() { # run a command with this cluster's root file system and config
  if [[ -z "$ROOT" ]]; then
    env -u SLURM_JWT PATH="$SYSTEM_PATH" SLURM_CONF="$CONF" "$@"
  else
    chroot "$ROOT" env -u SLURM_JWT PATH="$SYSTEM_PATH" SLURM_CONF="$CONF" "$@"
  fi
}

debian_mirror() {
  local m
  m="$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
  [[ -n "$m" ]] || m="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
  echo "${m:-http://deb.debian.org/debian}"
}

apt_host() {
  if [[ ! -f "$CACHE/.apt-updated" ]] || (($(date +%s) - $(stat -c %Y "$CACHE/.apt-updated") > 86400)); then
    apt-get update -qq && mkdir -p "$CACHE" && touch "$CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

mount_root() {
  [[ -n "$ROOT" ]] || return 0
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  cp /etc/hosts "$ROOT/etc/hosts" # without it every daemon loops on getaddrinfo()
}

make_trixie_base() { # a minimal trixie root, cached; copied for each chroot version
  local base="$CACHE/roots/trixie-base"
  [[ -f "$base/.complete" ]] && return 0
  command -v debootstrap >/dev/null || apt_host debootstrap
  rm -rf "$base" && mkdir -p "$base"
  log "debootstrap trixie (about a minute)"
  debootstrap --variant=minbase trixie "$base" "$(debian_mirror)" >"$CACHE/roots/debootstrap.log" 2>&1 ||
    die "debootstrap trixie failed; see $CACHE/roots/debootstrap.log"
  printf '#!/bin/sh\nexit 101\n' >"$base/usr/sbin/policy-rc.d" && chmod +x "$base/usr/sbin/policy-rc.d"
  touch "$base/.complete"
}

install_slurm() {
  if [[ -z "$ROOT" ]]; then
    command -v slurmctld >/dev/null && command -v slurmrestd >/dev/null && [[ -f /usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so ]] && return 0
    log "installing Debian bookworm Slurm packages on the host"
    apt_host slurmctld slurmd slurmrestd slurmdbd slurm-client slurm-wlm-jwt-plugin munge || die "apt-get install of Slurm 22.05 failed"
    return 0
  fi
  [[ -f "$ROOT/.complete" ]] && return 0
  make_trixie_base
  rm -rf "$ROOT" && mkdir -p "$(dirname "$ROOT")"
  cp -a "$CACHE/roots/trixie-base" "$ROOT" && rm -f "$ROOT/.complete"
  mount_root
  local pkgs="slurmctld slurmd slurmrestd slurmdbd slurm-client slurm-wlm-jwt-plugin" mirror
  mirror="$(debian_mirror)"
  if [[ "$VERSION" == 26.05 ]]; then
    log "installing Slurm from sid in $ROOT"
    echo "deb $mirror sid main" >"$ROOT/etc/apt/sources.list.d/sid.list"
    chroot "$ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update || die "apt-get update (sid) failed in chroot"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t sid $pkgs >/dev/null ||
      die "apt-get install of Slurm from sid failed in chroot"
    chroot "$ROOT" sh -c 'id slurmrestd >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin slurmrestd'
  else
    log "installing Slurm from trixie in $ROOT"
    chroot "$ROOT" apt-get -qq update || die "apt-get update failed in chroot"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null ||
      die "apt-get install of Slurm 24.11 failed in chroot"
  fi
  local got
  got="$(chroot "$ROOT" slurmctld -V)"
  [[ "$got" == "slurm ${VERSION}"* || "$got" == "slurm-wlm ${VERSION}"* ]] || die "expected Slurm $VERSION in $ROOT, found '$got'"
  touch "$ROOT/.complete"
}

install_accounting() { # slurmdbd (added to roots cached before accounting existed) and the tenants' Unix users
  if [[ -z "$ROOT" ]]; then
    command -v slurmdbd >/dev/null || { log "installing slurmdbd on the host"; apt_host slurmdbd || die "apt-get install slurmdbd failed"; }
  elif [[ ! -x "$ROOT/usr/sbin/slurmdbd" ]]; then
    log "installing slurmdbd in $ROOT"
    local -a target=()
    [[ "$VERSION" != 26.05 ]] || target=(-t sid)
    mount_root
    if ! chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${target[@]}" slurmdbd >/dev/null 2>&1; then
      chroot "$ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update || die "apt-get update failed in chroot"
      chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${target[@]}" slurmdbd >/dev/null ||
        die "apt-get install slurmdbd failed in chroot"
    fi
  fi
  local u
  for u in "${TENANT_USERS[@]}"; do
    in_root sh -c "id $u >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin $u" || die "could not create user $u"
  done
}

write_config() {
  mkdir -p "$HOST_STATE"/{ctld,spool,run,log}
  for n in "${NODES[@]}"; do mkdir -p "$HOST_STATE/spool/$n"; done
  for ((i = 0; i < FUTURE_NODES; i++)); do mkdir -p "$HOST_STATE/spool/ns-$i"; done
  chmod 755 "$HOST_STATE"
  [[ -f "$HOST_STATE/jwt.key" ]] || { head -c 32 /dev/urandom >"$HOST_STATE/jwt.key"; chmod 0600 "$HOST_STATE/jwt.key"; }
  local auth="auth/slurm" cred="cred/slurm"
  if [[ "$VERSION" == 22.05 ]]; then auth="auth/munge"; cred="cred/munge"; fi
  if [[ "$auth" == auth/slurm && ! -f "$HOST_STATE/slurm.key" ]]; then
    head -c 1024 /dev/urandom >"$HOST_STATE/slurm.key"; chmod 0600 "$HOST_STATE/slurm.key"
  fi
  # One generator for the testbed and the docker-compose stack (testbed/slurm-conf.sh): they cannot drift.
  local conf
  for conf in gres.conf cgroup.conf; do
    bash "$HERE/slurm-conf.sh" "$conf" "$VERSION" "$CLUSTER" "$CTLD_PORT" "$IN" >"$HOST_STATE/$conf" ||
      die "slurm-conf.sh $conf failed"
  done
  bash "$HERE/slurm-conf.sh" slurm.conf "$VERSION" "$CLUSTER" "$CTLD_PORT" "$IN" "$DBD_PORT" \
    >"$HOST_STATE/slurm.conf.new" || die "slurm-conf.sh slurm.conf failed"
  [[ -s "$HOST_STATE/cgroup.conf" ]] || rm -f "$HOST_STATE/cgroup.conf" # 22.05 needs none
  # Fake GPUs (gres.conf): character devices aliasing /dev/null (major 1, minor 3). Nothing ever opens them.
  mkdir -p "$HOST_STATE/gpu"
  for g in 0 1; do [[ -e "$HOST_STATE/gpu/fake$g" ]] || mknod "$HOST_STATE/gpu/fake$g" c 1 3; done
  chmod 0644 "$HOST_STATE/slurm.conf.new" "$HOST_STATE/gres.conf"
  [[ ! -f "$HOST_STATE/cgroup.conf" ]] || chmod 0644 "$HOST_STATE/cgroup.conf"
  local dbpass
  dbpass="$(bash "$HERE/mariadb.sh" password)"
  # slurmdbd: one per cluster, its own database on the shared MariaDB (testbed/mariadb.sh)
  cat >"$HOST_STATE/slurmdbd.conf.new" <<DBD
# Written by testbed/slurm.sh
AuthType=$auth
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$IN/jwt.key
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=17330
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=$DB_NAME
LogFile=$IN/log/slurmdbd.log
PidFile=$IN/run/slurmdbd.pid
DBD
  chmod 0600 "$HOST_STATE/slurmdbd.conf.new"
  CONFIG_CHANGED=""
  local f
  for f in slurm.conf slurmdbd.conf; do
    if cmp -s "$HOST_STATE/$f.new" "$HOST_STATE/$f"; then
      rm -f "$HOST_STATE/$f.new"
    else
      mv "$HOST_STATE/$f.new" "$HOST_STATE/$f"
      CONFIG_CHANGED+=" $f"
    fi
  done
}

dbd_running() { [[ -f "$HOST_STATE/run/slurmdbd.pid" ]] && kill -0 "$(cat "$HOST_STATE/run/slurmdbd.pid")" 2>/dev/null; }

stop_dbd() {
  dbd_running || return 0
  local pid
  pid="$(cat "$HOST_STATE/run/slurmdbd.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

start_dbd() {
  bash "$HERE/mariadb.sh" up
  bash "$HERE/mariadb.sh" database "$DB_NAME"
  mount_root
  mkdir -p "$HOST_STATE/run"
  if ! dbd_running; then
    log "starting slurmdbd on port $DBD_PORT"
    in_root /usr/sbin/slurmdbd || die "slurmdbd failed to start; see $HOST_STATE/log/slurmdbd.log"
  fi
  local deadline=$((SECONDS + 60))
  until in_root sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "slurmdbd not answering on port $DBD_PORT; see $HOST_STATE/log/slurmdbd.log"
    sleep 0.5
  done
}

# Accounts, users and QOS of the testbed (idempotent: each is added only when missing).
#   bridge    default account of the bridge's user (work that names no account)
#   physics / biology  two tenants (fair-share 60 / 40), users alice and bob, and the bridge's user
#   scavenge  preemptible work (QOS scavenger, spot)
# QOS: normal, high (preempts scavenger and spot), scavenger (preempted: cancelled, the cluster's
# PreemptMode), spot (preempted: requeued, its own PreemptMode), limited (one running job per user).
setup_associations() {
  local -a sam=(in_root sacctmgr -i -n)
  local have
  have="$("${sam[@]}" -P show cluster format=cluster)"
  grep -qx "$CLUSTER" <<<"$have" || "${sam[@]}" add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
  have="$("${sam[@]}" -P show qos format=name)"
  grep -qx scavenger <<<"$have" || "${sam[@]}" add qos scavenger Priority=0 >/dev/null
  grep -qx spot <<<"$have" || "${sam[@]}" add qos spot Priority=0 PreemptMode=requeue >/dev/null
  grep -qx high <<<"$have" || "${sam[@]}" add qos high Priority=1000 Preempt=scavenger,spot >/dev/null
  grep -qx limited <<<"$have" || "${sam[@]}" add qos limited Priority=0 MaxJobsPerUser=1 >/dev/null
  # testbeds made before `spot` existed: high preempts it too, scavenge's associations may use it
  "${sam[@]}" -P show qos high format=preempt | grep -q spot ||
    "${sam[@]}" modify qos high set Preempt=scavenger,spot >/dev/null
  if "${sam[@]}" -P show assoc account=scavenge cluster="$CLUSTER" format=qos | grep -qv spot; then
    "${sam[@]}" modify account scavenge cluster="$CLUSTER" set QOS+=spot >/dev/null
  fi
  local qos=normal,high,scavenger,spot,limited a
  have="$("${sam[@]}" -P show account format=account)"
  for a in bridge:10 physics:60 biology:40 scavenge:1; do
    grep -qx "${a%%:*}" <<<"$have" ||
      "${sam[@]}" add account "${a%%:*}" Cluster="$CLUSTER" Fairshare="${a##*:}" QOS="$qos" DefaultQOS=normal >/dev/null ||
      die "sacctmgr add account ${a%%:*} failed"
  done
  have="$("${sam[@]}" -P show assoc cluster="$CLUSTER" format=account,user)"
  local pair
  for pair in "$TOKEN_USER:bridge" "$TOKEN_USER:physics" "$TOKEN_USER:biology" "$TOKEN_USER:scavenge" \
    alice:physics bob:biology root:physics root:biology root:scavenge; do
    grep -qx "${pair##*:}|${pair%%:*}" <<<"$have" && continue
    # a user's first account becomes its default: slurm -> bridge, alice -> physics, bob -> biology
    "${sam[@]}" add user "${pair%%:*}" Account="${pair##*:}" Cluster="$CLUSTER" >/dev/null ||
      die "sacctmgr add user ${pair%%:*} to ${pair##*:} failed"
  done
}

start_munge() {
  [[ "$VERSION" == 22.05 ]] || return 0
  if [[ ! -f /etc/munge/munge.key ]]; then
    head -c 1024 /dev/urandom >/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  fi
}

unmount_root() {
  [[ -n "$ROOT" ]] || return 0
  if mountpoint -q "$ROOT/dev"; then umount -l "$ROOT/dev" || true; fi
  if mountpoint -q "$ROOT/proc"; then umount -l "$ROOT/proc" || true; fi
}

pids_of() { pgrep -f -- "$1" || true; }

start_daemons() {
  mount_root
  # Host-installed Slurm keeps its state under the checkout. Jobs run as the submitting user (the bridge's,
  # e.g. slurm), and slurmstepd must reach the spool dir: a checkout in a 0700 dir (mktemp -d) would
  # fail every job with EACCES. Make the path traversable (not readable).
  if [[ -z "$ROOT" ]]; then
    local d="$HOST_STATE"
    while [[ "$d" != / ]]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
  fi
  [[ -z "$ROOT" ]] || mkdir -p "$ROOT/run/slurmctld" "$ROOT/run/slurm"
  if [[ -z "$(pids_of "slurmctld -f $CONF")" ]]; then
    log "starting slurmctld on port $CTLD_PORT"
    # -c: a (re)started testbed begins with an empty queue; -i: never refuse to start over old state.
    # The cluster id the state remembers may predate this cluster's database (slurmctld then refuses
    # with CLUSTER ID MISMATCH): the database's id wins.
    rm -f "$HOST_STATE/ctld/clustername"
    # Job ids start again at 1: an earlier run's slurm-<id>.out, maybe another user's, would make a
    # job of that id die at launch ("could not open stdout file", signal 53).
    rm -f "$ROOT"/tmp/slurm-[0-9]*.out
    in_root /usr/sbin/slurmctld -f "$CONF" -c -i || die "slurmctld failed to start; see $HOST_STATE/log/slurmctld.log"
  fi
  for n in "${NODES[@]}"; do
    if [[ -z "$(pids_of "slurmd -f $CONF -N $n\$")" ]]; then
      in_root /usr/sbin/slurmd -f "$CONF" -N "$n" || die "slurmd $n failed to start; see $HOST_STATE/log/slurmd-$n.log"
    fi
  done
  if [[ -z "$(pids_of "slurmrestd -f $CONF")" ]]; then
    log "starting slurmrestd on 127.0.0.1:$RESTD_PORT"
    local -a cmd=(env SLURM_JWT=daemon)
    if [[ "$VERSION" == 26.05 ]]; then
      # 26.05 refuses disable_user_check: run as an unprivileged user of its own.
      cmd+=(setpriv --reuid=slurmrestd --regid=slurmrestd --init-groups)
    else
      cmd+=(SLURMRESTD_SECURITY=disable_user_check)
    fi
    cmd+=(/usr/sbin/slurmrestd -f "$CONF" -a rest_auth/jwt -s "$API_PLUGINS" "127.0.0.1:$RESTD_PORT")
    if [[ -z "$ROOT" ]]; then
      nohup "${cmd[@]}" >"$HOST_STATE/log/slurmrestd.log" 2>&1 </dev/null &
    else
      nohup chroot "$ROOT" "${cmd[@]}" >"$HOST_STATE/log/slurmrestd.log" 2>&1 </dev/null &
    fi
  fi
}

mint_token() { # prints a JWT for TOKEN_USER, valid 7 days, minted by slurmctld itself
  in_root /usr/bin/scontrol token username="$TOKEN_USER" lifespan=604800 | sed -n 's/^SLURM_JWT=//p'
}

b64url_decode() { # stdin: base64url without padding -> raw bytes
  local s
  s="$(tr -- '-_' '+/')"
  while ((${#s} % 4)); do s+="="; done
  printf '%s' "$s" | base64 -d 2>/dev/null
}

token_signed_by() { # TOKEN KEYFILE: succeeds only if TOKEN is an HS256 JWT signed with KEYFILE's key
  local token="$1" keyfile="$2" header payload signature hexkey expected
  IFS=. read -r header payload signature <<<"$token"
  [[ -n "$header" && -n "$payload" && -n "$signature" ]] || return 1
  [[ "$(printf '%s' "$header" | b64url_decode)" == *'"HS256"'* ]] || return 1
  hexkey="$(od -An -v -tx1 "$keyfile" | tr -d ' \n')"
  expected="$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0 | tr -- '+/' '-_' | tr -d '=')"
  [[ -n "$expected" && "$expected" == "$signature" ]]
}

wait_ready() {
  local deadline=$((SECONDS + 90)) idle=0 out=""
  while ((SECONDS < deadline)); do
    out="$(in_root /usr/bin/sinfo -h -p "$PARTITION" -o '%t %D' 2>/dev/null || true)"
    # registered and responding: any state but down/unknown/future/failed, and no "*" (not responding);
    # "plnd" (held for a backfill plan) and "mix"/"alloc" are busy, not absent
    idle="$(awk '$1 !~ /^(down|unk|futr|fail|boot|pow|inval)/ && $1 !~ /\*$/ {s += $2} END {print s + 0}' <<<"$out")"
    ((idle >= ${#NODES[@]})) && break
    sleep 1
  done
  ((idle >= ${#NODES[@]})) || die "only $idle of ${#NODES[@]} nodes came up ('$out'); see $HOST_STATE/log/"
  local token code=""
  token="$(mint_token)"
  [[ -n "$token" ]] || die "scontrol token gave no token (is the JWT plugin installed?)"
  # A token another cluster's key signed would be refused by this slurmrestd: never write one.
  token_signed_by "$token" "$HOST_STATE/jwt.key" ||
    die "the token minted for Slurm $VERSION does not verify with its own key $HOST_STATE/jwt.key (another cluster's slurmctld answered?)"
  while ((SECONDS < deadline)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "X-SLURM-USER-NAME: $TOKEN_USER" \
      -H "X-SLURM-USER-TOKEN: $token" "http://127.0.0.1:$RESTD_PORT/openapi/v3" || true)"
    [[ "$code" == 200 ]] && break
    sleep 1
  done
  [[ "$code" == 200 ]] || die "slurmrestd not answering on 127.0.0.1:$RESTD_PORT (HTTP '$code'); see $HOST_STATE/log/slurmrestd.log"
  echo "$token" >"$HOST_STATE/token"
  chmod 0600 "$HOST_STATE/token"
}

write_env() {
  local v="${VERSION/./_}" bin="$STATE_ROOT/bin/$VERSION"
  mkdir -p "$bin"
  for c in squeue sinfo scontrol scancel sbatch srun salloc sacct sacctmgr sprio sshare; do
    if [[ -z "$ROOT" ]]; then
      printf '#!/bin/sh\nexec env -u SLURM_JWT SLURM_CONF=%s /usr/bin/%s "$@"\n' "$CONF" "$c" >"$bin/$c"
    else
      printf '#!/bin/sh\nexec chroot %s env -u SLURM_JWT SLURM_CONF=%s /usr/bin/%s "$@"\n' "$ROOT" "$CONF" "$c" >"$bin/$c"
    fi
    chmod +x "$bin/$c"
  done
  cat >"$STATE_ROOT/slurm-$VERSION.env" <<ENV
SLURMRESTD_URL_$v=http://127.0.0.1:$RESTD_PORT
SLURM_JWT_$v=$(cat "$HOST_STATE/token")
SLURM_JWT_FILE_$v=$HOST_STATE/token
SLURM_JWT_KEY_$v=$HOST_STATE/jwt.key
SLURM_USER_$v=$TOKEN_USER
SLURM_BIN_$v=$bin
SLURM_CONF_$v=$HOST_STATE/slurm.conf
SLURM_LOGS_$v=$HOST_STATE/log
ENV
}

stop_daemons() {
  local pids
  pids="$(pgrep -f -- "(slurmctld|slurmd|slurmrestd) -f $CONF" || true)"
  if [[ -n "$pids" ]]; then
    log "stopping $(wc -w <<<"$pids") daemons"
    kill $pids 2>/dev/null || true
    for _ in $(seq 50); do
      pids="$(pgrep -f -- "(slurmctld|slurmd|slurmrestd) -f $CONF" || true)"
      [[ -z "$pids" ]] && break
      sleep 0.2
    done
    [[ -z "$pids" ]] || kill -9 $pids 2>/dev/null || true
  fi
  unmount_root
  rm -f "$STATE_ROOT/slurm-$VERSION.env"
}

case "$ACTION" in
  install)
    install_slurm
    [[ -n "$(pids_of "slurmctld -f $CONF")" ]] || unmount_root
    ;;
  up)
    install_slurm
    start_munge
    install_accounting
    write_config
    if [[ -n "$CONFIG_CHANGED" ]]; then
      # A running cluster on an older config is restarted (a reconfigure cannot switch accounting on)
      running="$(pids_of "(slurmctld|slurmd|slurmrestd) -f $CONF")"
      if [[ -n "$running" ]]; then log "config changed ($CONFIG_CHANGED ): restarting"; stop_daemons; fi
      [[ "$CONFIG_CHANGED" != *slurmdbd.conf* ]] || stop_dbd
    fi
    start_dbd
    setup_associations
    start_daemons
    wait_ready
    write_env
    log "ready: slurmrestd http://127.0.0.1:$RESTD_PORT, partition $PARTITION, nodes ${NODES[*]}"
    ;;
  down) stop_daemons; stop_dbd ;;
  slurmd-start) # VERSION NODE: a slurmd for one declared (FUTURE) node, as a NodeSet pod's container would
    node="${3:?usage: slurm.sh slurmd-start VERSION NODE}"
    [[ -n "$(pids_of "slurmctld -f $CONF")" ]] || die "cluster not running"
    mkdir -p "$HOST_STATE/spool/$node"
    [[ -n "$(pids_of "slurmd -f $CONF -N $node\$")" ]] || in_root /usr/sbin/slurmd -f "$CONF" -N "$node" ||
      die "slurmd $node failed to start; see $HOST_STATE/log/slurmd-$node.log"
    ;;
  slurmd-stop) # VERSION NODE
    node="${3:?usage: slurm.sh slurmd-stop VERSION NODE}"
    pids="$(pids_of "slurmd -f $CONF -N $node\$")"
    [[ -z "$pids" ]] || kill $pids 2>/dev/null || true
    ;;
  slurmd-list) # VERSION: the nodes whose slurmd runs
    pgrep -af -- "slurmd -f $CONF -N " | sed -n 's/.* -N \([^ ]*\)$/\1/p' || true
    ;;
  status)
    echo "== Slurm $VERSION ($CLUSTER): $(pids_of "(slurmctld|slurmd|slurmrestd) -f $CONF" | wc -l) daemons"
    if [[ -n "$(pids_of "slurmctld -f $CONF")" ]]; then in_root /usr/bin/sinfo || true; fi
    ;;
  *) die "unknown action $ACTION" ;;
esac
