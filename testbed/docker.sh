#!/usr/bin/env bash
# A Docker engine for the testbed (the container image, its e2e test and the docker-compose dev stack).
#   docker.sh up | down | status
# Debian's docker.io + docker-compose (v1), started with the flags that leave the host's networking alone
# (no docker0 bridge, no iptables rules, no ip_forward): builds and containers use host networking.
# No image registry is reachable: the base image debian:<suite>-slim is imported from a debootstrapped root
# (cached under $CACHE/roots/<suite>-docker-base, keyed by suite), so plain `FROM debian:bookworm-slim` works.
# The engine listens on its own socket ($DOCKER_SOCK); .testbed/env exports DOCKER_HOST for it. Its data
# (image layers: the build cache) lives under $CACHE/docker so a fresh checkout builds warm.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
SUITE="${DOCKER_BASE_SUITE:-bookworm}"
DATA="$CACHE/docker/data"
EXEC_ROOT=/run/slurm-k8s-bridge-docker
DOCKER_SOCK="$EXEC_ROOT/docker.sock"
PIDFILE="$EXEC_ROOT/dockerd.pid"
LOG="$STATE_ROOT/docker.log"
BASE_ROOT="$CACHE/roots/$SUITE-docker-base"
BASE_TAG="debian:$SUITE-slim"
export DOCKER_HOST="unix://$DOCKER_SOCK"
log() { echo "[docker] $*" >&2; }
die() { echo "[docker] FATAL: $*" >&2; exit 1; }

debian_mirror() {
  local m
  m="$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
  [[ -n "$m" ]] || m="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
  echo "${m:-http://deb.debian.org/debian}"
}

install_engine() {
  command -v dockerd >/dev/null && command -v docker-compose >/dev/null && return 0
  log "installing Debian docker.io + docker-compose"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends docker.io docker-compose >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io docker-compose >/dev/null ||
      die "apt-get install docker.io docker-compose failed"
  fi
  log "installed in $((SECONDS - t0)) s"
}

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
  engine_up && return 0
  mkdir -p "$DATA" "$EXEC_ROOT" "$STATE_ROOT"
  log "starting dockerd (socket $DOCKER_SOCK, data $DATA)"
  # --iptables=false --bridge=none --ip-forward=false: the host's networking stays as it is.
  nohup dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false \
    --data-root "$DATA" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" -H "$DOCKER_HOST" \
    >>"$LOG" 2>&1 </dev/null &
  local deadline=$((SECONDS + 60))
  until engine_up; do
    ((SECONDS < deadline)) || die "dockerd did not answer within 60 s; see $LOG"
    sleep 0.3
  done
}

make_base_root() {
  [[ -f "$BASE_ROOT/.complete" ]] && return 0
  command -v debootstrap >/dev/null || { apt-get install -y -qq debootstrap >/dev/null || die "no debootstrap"; }
  log "debootstrap $SUITE for the base image (about a minute)"
  rm -rf "$BASE_ROOT" && mkdir -p "$BASE_ROOT"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$BASE_ROOT" "$(debian_mirror)" \
    >"$CACHE/roots/debootstrap-$SUITE-docker.log" 2>&1 ||
    die "debootstrap $SUITE failed; see $CACHE/roots/debootstrap-$SUITE-docker.log"
  # As a slim image: no package caches, and apt in containers keeps none.
  chroot "$BASE_ROOT" apt-get clean
  rm -rf "$BASE_ROOT"/var/lib/apt/lists/* "$BASE_ROOT"/var/cache/apt/*.bin
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$BASE_ROOT/etc/apt/apt.conf.d/90slim"
  touch "$BASE_ROOT/.complete"
}

import_base() {
  # The host's extra CAs (an egress proxy's, if any) go into the image so pip/apt inside builds trust
  # what the host trusts; re-imported when they change.
  local cas="" sum
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then cas="$(cat /usr/local/share/ca-certificates/*.crt)"; fi
  sum="$(printf 'slim1 %s' "$cas" | sha256sum | cut -c1-12)" # bump slimN when the trimming changes
  if [[ "$(docker image inspect -f '{{index .Config.Labels "slurm-k8s-bridge.ca"}}' "$BASE_TAG" 2>/dev/null)" == "$sum" ]]; then
    return 0
  fi
  make_base_root
  log "importing $BASE_TAG from $BASE_ROOT"
  # Slim like Debian's own -slim images: no docs, man pages or translations, now or from later installs.
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    'path-include /usr/share/locale/locale.alias' >"$BASE_ROOT/etc/dpkg/dpkg.cfg.d/slim"
  find "$BASE_ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$BASE_ROOT"/usr/share/man/* "$BASE_ROOT"/usr/share/info/*
  find "$BASE_ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  mkdir -p "$BASE_ROOT/usr/local/share/ca-certificates"
  rm -f "$BASE_ROOT"/usr/local/share/ca-certificates/*.crt
  if [[ -n "$cas" ]]; then cp /usr/local/share/ca-certificates/*.crt "$BASE_ROOT/usr/local/share/ca-certificates/"; fi
  chroot "$BASE_ROOT" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in $BASE_ROOT"
  tar -C "$BASE_ROOT" --exclude=./.complete --exclude='./proc/*' --exclude='./dev/*' --exclude='./sys/*' -c . |
    docker import -c 'CMD ["bash"]' -c "LABEL slurm-k8s-bridge.ca=$sum" - "$BASE_TAG" >/dev/null ||
    die "docker import of $BASE_TAG failed"
}

stop_engine() {
  engine_up || [[ -f "$PIDFILE" ]] || return 0
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || return 0
  # images rebuilds left untagged (the tagged images keep their layer cache); only here, where no build runs
  docker image prune -f >/dev/null 2>&1 || true
  log "stopping dockerd ($pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  # containerd's shims hold the exec root mounts until they go
  rm -f "$PIDFILE"
}

case "${1:-up}" in
  up)
    t0=$SECONDS
    install_engine
    start_engine
    import_base
    mkdir -p "$STATE_ROOT" && echo "DOCKER_HOST=$DOCKER_HOST" >"$STATE_ROOT/docker.env"
    log "ready: $(docker version --format 'engine {{.Server.Version}}') at $DOCKER_HOST, base $BASE_TAG ($((SECONDS - t0)) s)"
    ;;
  down)
    stop_engine
    rm -f "$STATE_ROOT/docker.env"
    ;;
  status)
    if engine_up; then
      echo "== Docker $(docker version --format '{{.Server.Version}}') at $DOCKER_HOST"
      docker ps --format '{{.Names}}\t{{.Image}}\t{{.Status}}'
    else
      echo "== Docker: not running"
    fi
    ;;
  *) die "usage: docker.sh up|down|status" ;;
esac
