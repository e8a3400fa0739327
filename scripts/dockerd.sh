#!/usr/bin/env bash
# Start (or stop) a Docker engine of arrl's own, for the Docker sandbox on a machine where no
# engine runs: installs Debian's docker.io when root and missing, then starts dockerd in the
# background with its own socket, data root and exec root (no bridge, no iptables: sandbox
# containers run with network "none" anyway; overlay2 so a container starts in ~0.2 s).
#
#   bash scripts/dockerd.sh start    prints DOCKER_HOST=unix://... once the engine answers
#   bash scripts/dockerd.sh stop
#
# Where an engine already answers on $DOCKER_HOST or /var/run/docker.sock, `start` uses it.
set -euo pipefail

ROOT=${ARRL_DOCKER_ROOT:-/var/lib/arrl-docker}
SOCK=${ARRL_DOCKER_SOCK:-/run/arrl-docker.sock}  # short: unix socket paths are limited to 107 bytes
EXEC=/run/arrl-docker-exec
PID=/run/arrl-docker.pid
LOG=$ROOT/dockerd.log

answers() { DOCKER_HOST="$1" timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-start}" in
start)
  if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then echo "DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
  if [ -S /var/run/docker.sock ] && answers unix:///var/run/docker.sock; then
    echo "DOCKER_HOST=unix:///var/run/docker.sock"; exit 0
  fi
  if [ -S "$SOCK" ] && answers "unix://$SOCK"; then echo "DOCKER_HOST=unix://$SOCK"; exit 0; fi
  if ! command -v dockerd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "dockerd: installing docker.io" >&2
      (export DEBIAN_FRONTEND=noninteractive
       apt-get install -y -qq docker.io >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq docker.io >/dev/null; })
    else
      echo "dockerd: no Docker engine and no way to install one (needs root and apt-get)" >&2; exit 1
    fi
  fi
  [ "$(id -u)" = 0 ] || { echo "dockerd: starting an engine needs root" >&2; exit 1; }
  mkdir -p "$ROOT" "$EXEC"
  nohup dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --storage-driver=overlay2 --default-ulimit nofile=1024:1024 --default-ulimit nproc=4096:4096 \
    -H "unix://$SOCK" --data-root "$ROOT/data" --exec-root "$EXEC" --pidfile "$PID" >>"$LOG" 2>&1 &
  for _ in $(seq 1 120); do
    if answers "unix://$SOCK"; then echo "DOCKER_HOST=unix://$SOCK"; exit 0; fi
    sleep 0.5
  done
  echo "dockerd: the engine did not answer within 60 s; see $LOG:" >&2
  tail -5 "$LOG" >&2
  exit 1
  ;;
stop)
  if [ -f "$PID" ]; then
    kill "$(cat "$PID")" 2>/dev/null || true
    for _ in $(seq 1 40); do [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null || break; sleep 0.25; done
  fi
  umount "$EXEC/netns/default" 2>/dev/null || true
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
