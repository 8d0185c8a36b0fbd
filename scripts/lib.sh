# Shared set-up for scripts/run and scripts/test: a .venv with the project installed, made once and
# refreshed only when pyproject.toml changes. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_venv() {  # ensure_venv EXTRAS   e.g. ensure_venv server  |  ensure_venv server,mcp  |  ensure_venv dev
  # The package alone is the offline SDK; `server` adds the HTTP service, `mcp` the guard and gateway, and `dev`
  # both plus the test tools. An install whose extras cover the ones asked for is kept as it is.
  local extras="$1" version stamp
  if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV" || { as_root apt-get install -y -q python3-venv && python3 -m venv "$VENV"; }
  fi
  version="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  for stamp in "$VENV"/.installed-"$version"-*; do
    [[ -e $stamp ]] && _covers "${stamp##*-}" "$extras" && return 0
  done
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
  rm -f "$VENV"/.installed-* && touch "$VENV/.installed-$version-$extras"
}

_covers() {  # _covers INSTALLED WANTED: every extra in WANTED (comma-separated) is in INSTALLED, or INSTALLED is dev
  local installed=",$1," extra
  [[ $installed == *,dev,* ]] && return 0
  for extra in ${2//,/ }; do [[ $installed == *,"$extra",* ]] || return 1; done
}

redis_answers() {  # redis_answers PORT
  "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

ensure_redis_server_binary() {
  if ! command -v redis-server >/dev/null; then
    echo "installing Debian's redis-server ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
      || { as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }
  fi
}

ensure_chromium() {  # Debian's Chromium and its driver, for the console's browser tests (tests/console/)
  if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "installing Debian's chromium and chromium-driver ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
      || { as_root apt-get update -q >/dev/null \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
  fi
}

ensure_redis() {  # a Redis on 127.0.0.1:6379, started here (AOF on, noeviction) if none answers
  redis_answers 6379 && return 0
  ensure_redis_server_binary
  mkdir -p "$ROOT/.agentcaps/redis"
  redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --dir "$ROOT/.agentcaps/redis" \
    --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
    --logfile "$ROOT/.agentcaps/redis/redis.log"
  for _ in $(seq 50); do
    if redis_answers 6379; then
      # Left running for the next run (the suite starts faster); say so, and how to stop it.
      echo "started redis-server on 127.0.0.1:6379 (data in $ROOT/.agentcaps/redis); it keeps running:" \
        "stop it with: redis-cli -p 6379 shutdown"
      return 0
    fi
    sleep 0.1
  done
  echo "redis-server did not start; see $ROOT/.agentcaps/redis/redis.log" >&2
  return 1
}
