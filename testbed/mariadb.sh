#!/usr/bin/env bash
# One MariaDB server (Debian's, on the host) on loopback for every cluster's slurmdbd.
#   mariadb.sh up              install if needed, initialise, start, wait until it answers
#   mariadb.sh database NAME   make database NAME and grant it to the slurmdbd user (idempotent)
#   mariadb.sh password        print the slurmdbd user's password
#   mariadb.sh down            stop the server
# The data lives in $TESTBED_DIR/mariadb; the chroot clusters reach it through 127.0.0.1:$PORT
# (the host's loopback is shared with the chroots).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}"
STATE_ROOT="${TESTBED_DIR:-$REPO/.testbed}"
PORT=17330
DATA="$STATE_ROOT/mariadb/data"
SOCK="$STATE_ROOT/mariadb/mysqld.sock"
PASSFILE="$STATE_ROOT/mariadb/slurm.pass"
DB_USER=slurm
log() { echo "[mariadb] $*" >&2; }
die() { echo "[mariadb] FATAL: $*" >&2; exit 1; }

install() {
  command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null && return 0
  log "installing Debian's mariadb-server on the host"
  if [[ ! -f "$CACHE/.apt-updated" ]] || (($(date +%s) - $(stat -c %Y "$CACHE/.apt-updated") > 86400)); then
    apt-get update -qq && mkdir -p "$CACHE" && touch "$CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null ||
    die "apt-get install mariadb-server failed"
}

# The slurmdbd user's password: made once per testbed (slurm.sh writes slurmdbd.conf before mariadb is up).
ensure_password() {
  mkdir -p "$STATE_ROOT/mariadb"
  [[ -f "$PASSFILE" ]] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$PASSFILE"; chmod 0600 "$PASSFILE"; }
}

running() { [[ -f "$STATE_ROOT/mariadb/mariadbd.pid" ]] && kill -0 "$(cat "$STATE_ROOT/mariadb/mariadbd.pid")" 2>/dev/null; }

sql() { mariadb --socket="$SOCK" -u root -N -B -e "$1"; }

up() {
  install
  mkdir -p "$STATE_ROOT/mariadb"
  chown mysql:mysql "$STATE_ROOT/mariadb" && chmod 755 "$STATE_ROOT/mariadb" # mariadbd writes its socket, pid and log here
  # mariadbd runs as the mysql user, who must reach that directory: a checkout in a 0700 dir (mktemp -d,
  # a 0700 home) failed mariadb-install-db with "Permission denied". Make the path traversable (not
  # readable), as testbed/slurm.sh does for slurmstepd.
  local d="$STATE_ROOT"
  while [[ "$d" != / ]]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
  if [[ ! -d "$DATA/mysql" ]]; then
    log "initialising $DATA"
    rm -rf "$DATA" && mkdir -p "$DATA" && chown mysql:mysql "$DATA"
    mariadb-install-db --user=mysql --datadir="$DATA" --auth-root-authentication-method=socket \
      --skip-test-db >"$STATE_ROOT/mariadb/install.log" 2>&1 || die "mariadb-install-db failed; see $STATE_ROOT/mariadb/install.log"
  fi
  ensure_password
  if ! running; then
    log "starting mariadbd on 127.0.0.1:$PORT"
    # slurmdbd's documented minimums: a bigger lock wait and log file than the defaults
    nohup /usr/sbin/mariadbd --user=mysql --datadir="$DATA" --port="$PORT" --bind-address=127.0.0.1 \
      --socket="$SOCK" --pid-file="$STATE_ROOT/mariadb/mariadbd.pid" --log-error="$STATE_ROOT/mariadb/error.log" \
      --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
      --max-connections=100 >/dev/null 2>&1 </dev/null 8>&- &
  fi
  local deadline=$((SECONDS + 60))
  until mariadb-admin --socket="$SOCK" -u root ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "mariadbd not answering; see $STATE_ROOT/mariadb/error.log"
    sleep 0.5
  done
  # mariadbd writes its pid file a moment after it answers
  for _ in $(seq 20); do [[ -f "$STATE_ROOT/mariadb/mariadbd.pid" ]] && break; sleep 0.1; done
}

database() {
  local name="${1:?database NAME}" pass
  pass="$(cat "$PASSFILE")"
  sql "CREATE DATABASE IF NOT EXISTS \`$name\`;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON \`$name\`.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON \`$name\`.* TO '$DB_USER'@'localhost';" || die "could not create database $name"
}

down() {
  running || return 0
  local pid
  pid="$(cat "$STATE_ROOT/mariadb/mariadbd.pid")"
  log "stopping mariadbd"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  database) database "${2:-}" ;;
  password) ensure_password; cat "$PASSFILE" ;;
  down) down ;;
  *) die "usage: mariadb.sh up|database NAME|password|down" ;;
esac
