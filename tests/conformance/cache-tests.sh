#!/usr/bin/env bash
# Run the HTTP caching test suite behind cache-tests.fyi (github.com/http-tests/cache-tests)
# against Tollgate as a reverse-proxy cache, print the score, and fail below a threshold.
#
#   npm install --prefix DIR http-cache-tests@0.4.5     # the suite as published on npm (CI)
#   #  or: git clone https://github.com/http-tests/cache-tests.git && (cd cache-tests && npm i)
#   cargo build            # or --release; TOLLGATE_BIN overrides the binary
#   tests/conformance/cache-tests.sh SUITE_DIR [--min-required=N] [--min-cdn=N] [--id=TEST_ID] [--disk]
#
# SUITE_DIR is the suite's directory (DIR/node_modules/http-cache-tests for the npm package,
# which keeps its engine at the top; the git checkout keeps it under test-engine/).
# Starts the suite's origin server and Tollgate (one public catch-all route, caching on, no
# invented freshness) on free loopback ports, runs the suite's CLI client through Tollgate, and
# prints "required passed / required total" plus the CDN-Cache-Control subset and each failing
# required test. Exits 1 when fewer required tests pass than --min-required, or fewer
# CDN-Cache-Control ones than --min-cdn. With --id, runs one test verbosely. With --disk, the
# disk tier is on too. Results JSON is kept in $OUT_DIR (default: a temp dir) as results.json.
set -euo pipefail

SUITE_DIR=${1:?usage: cache-tests.sh SUITE_DIR [--min-required=N] [--min-cdn=N] [--id=TEST_ID] [--disk]}
SUITE_DIR=$(cd "$SUITE_DIR" && pwd)
shift
TEST_ID=""
DISK=0
MIN_REQUIRED=0
MIN_CDN=0
for arg in "$@"; do
  case "$arg" in
    --id=*) TEST_ID=${arg#--id=} ;;
    --disk) DISK=1 ;;
    --min-required=*) MIN_REQUIRED=${arg#--min-required=} ;;
    --min-cdn=*) MIN_CDN=${arg#--min-cdn=} ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${TOLLGATE_BIN:-$ROOT/target/debug/tollgate}
[ -x "$BIN" ] || { echo "no tollgate binary at $BIN (cargo build first)" >&2; exit 2; }
if [ -f "$SUITE_DIR/test-engine/cli.mjs" ]; then
  ENGINE="$SUITE_DIR/test-engine"              # git checkout
  [ -d "$SUITE_DIR/node_modules" ] || { echo "run 'npm i' in $SUITE_DIR first" >&2; exit 2; }
elif [ -f "$SUITE_DIR/cli.mjs" ] && [ -f "$SUITE_DIR/server/server.mjs" ]; then
  ENGINE="$SUITE_DIR"                          # npm package
else
  echo "$SUITE_DIR is neither a cache-tests checkout nor the http-cache-tests npm package" >&2
  exit 2
fi

WORK=$(mktemp -d)
OUT_DIR=${OUT_DIR:-$WORK}
mkdir -p "$OUT_DIR"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # PORT PATH
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  echo "nothing answered on port $1" >&2
  return 1
}

ORIGIN_PORT=$(free_port)
EDGE_PORT=$(free_port)
ADMIN_PORT=$(free_port)

(cd "$SUITE_DIR" && exec env npm_config_port="$ORIGIN_PORT" npm_config_protocol=http \
  npm_config_pidfile="$WORK/origin.pid" node "$ENGINE/server/server.mjs") \
  >"$WORK/origin.log" 2>&1 &
PIDS+=($!)

# TOLLGATE_TEST_FAST_HITS=off: the hit path off, as for the Rust tests (tests/support).
FAST_HITS_YAML=""
case "${TOLLGATE_TEST_FAST_HITS:-}" in
  off) FAST_HITS_YAML=", fast_hits: false" ;;
  ""|on) ;;
  *) echo "TOLLGATE_TEST_FAST_HITS=$TOLLGATE_TEST_FAST_HITS: expected off or on" >&2; exit 2 ;;
esac
DISK_YAML=""
if [ "$DISK" = 1 ]; then
  DISK_YAML="  disk: { path: $WORK/disk, max_size: 256MiB }"
fi
cat >"$WORK/tollgate.yaml" <<YAML
listeners:
  - addr: 127.0.0.1:$EDGE_PORT
admin:
  addr: 127.0.0.1:$ADMIN_PORT
origins:
  suite:
    url: http://127.0.0.1:$ORIGIN_PORT
routes:
  # No default_ttl: a response without freshness information is not invented any.
  - match: /*
    origin: suite
    access: public
    cache: { default_ttl: 0s, min_ttl: 0s, max_ttl: 365d }
cache:
  memory: { max_size: 256MiB$FAST_HITS_YAML }
$DISK_YAML
pingora:
  threads: 2
logging:
  level: warn
  access_log: false
YAML

"$BIN" -c "$WORK/tollgate.yaml" >"$WORK/tollgate.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT" /
wait_port "$ADMIN_PORT" /healthz

BASE="http://127.0.0.1:$EDGE_PORT"
cd "$SUITE_DIR"
if [ -n "$TEST_ID" ]; then
  env npm_config_base="$BASE" npm_config_id="$TEST_ID" node --no-warnings "$ENGINE/cli.mjs"
  exit 0
fi
env npm_config_base="$BASE" npm_config_id="" npm_package_config_id="" node --no-warnings "$ENGINE/cli.mjs" \
  >"$OUT_DIR/results.json"
node "$HERE/cache-tests-score.mjs" "$SUITE_DIR" "$OUT_DIR/results.json" "$MIN_REQUIRED" "$MIN_CDN"
