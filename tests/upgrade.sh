#!/usr/bin/env bash
# Zero-downtime reload, the way systemd/tollgate.service does it, under wrk load; then a SIGTERM
# drain of slow in-flight requests.
#
#   tests/upgrade.sh            (TOLLGATE_BIN=path to use a given binary; default: cargo build, debug)
#
# 1. A small origin (tests/ops/origin.py, counts what it receives) and the node in daemon mode
#    (`tollgate -d`) with both cache tiers (memory + disk) and the access log. 20 objects are
#    fetched once to warm the cache.
# 2. wrk runs 20 s over those objects (tests/ops/status.lua tallies status codes and
#    Cache-Status values). During it, two reloads exactly as ExecReload runs them:
#    `tollgate check`, `tollgate -d -u` (new process takes the listening sockets over), then
#    SIGQUIT to the old main PID. The first reload brings a new config (an extra route), the
#    second a new binary (a copy at another path).
# 3. Checks: only 2xx and no socket errors in wrk's tally; the origin received no request for
#    the objects during the run (the disk tier outlives each process, and each new process
#    loads the old one's hot set into memory before it serves: at least 99 % memory hits); afterwards
#    every object is a memory hit; the new route is live; old processes are gone; the pid file
#    names the newest process; the access log has a line for every answered request; the
#    error log (every process's diagnostics, RUST_LOG=warn) has no WARN or ERROR line: a
#    routine reload must not page anyone.
# 4. SIGTERM drain: 8 requests that take the origin 2 s are in flight when the node gets
#    SIGTERM; each must complete with 200, and the node must exit within its grace period.
#
# Bounded: every wait has a timeout; the whole script takes about 40 s. KEEP_WORK=1 keeps the
# temp dir (config, error.log, access.log, wrk output) for a look.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
if [ -z "${TOLLGATE_BIN:-}" ]; then (cd "$ROOT" && cargo build -q); fi
BIN=${TOLLGATE_BIN:-$ROOT/target/debug/tollgate}

WORK=$(mktemp -d)
ORIGIN_PID=""
SEEN_PIDS=()
cleanup() {
  # and the daemon the pid file names, in case a failed reload left one unrecorded
  [ -s "$WORK/tollgate.pid" ] && SEEN_PIDS+=("$(cat "$WORK/tollgate.pid")")
  for p in "${SEEN_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "$ORIGIN_PID" ]; then kill "$ORIGIN_PID" 2>/dev/null || true; wait "$ORIGIN_PID" 2>/dev/null || true; fi
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$WORK/error.log" ] && tail -20 "$WORK/error.log" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds, or fail.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $*"
    sleep 0.1
  done
}
origin_count() { curl -sf "http://127.0.0.1:$ORIGIN/__stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['total'])"; }
obj_count() {
  curl -sf "http://127.0.0.1:$ORIGIN/__stats" |
    python3 -c "import json,sys; print(sum(v for k,v in json.load(sys.stdin)['paths'].items() if k.startswith('/obj/')))"
}
main_pid() { cat "$WORK/tollgate.pid"; }
# A running process (a daemon that exited stays a zombie until PID 1 reaps it: not running).
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
export -f alive

EDGE=$(free_port); ADMIN=$(free_port); ORIGIN=$(free_port)
python3 "$ROOT/tests/ops/origin.py" "$ORIGIN" &
ORIGIN_PID=$!
wait_for 10 curl -sf "http://127.0.0.1:$ORIGIN/__stats"

write_config() { # $1: extra route lines
  cat > "$WORK/tollgate.yaml" <<YAML
pingora:
  threads: 2
  pid_file: $WORK/tollgate.pid
  upgrade_sock: $WORK/upgrade.sock
  error_log: $WORK/error.log
  grace_period_seconds: 3
  graceful_shutdown_timeout_seconds: 2
listeners: [ { addr: "127.0.0.1:$EDGE" } ]
admin: { addr: "127.0.0.1:$ADMIN" }
origins: { o: { url: "http://127.0.0.1:$ORIGIN" } }
routes:
$1
  - { match: /slow/*, origin: o, access: public, cache: { enabled: false } }
  - { match: /obj/*, origin: o, access: public }
cache: { memory: { max_size: 64MiB }, disk: { path: $WORK/cache, max_size: 256MiB } }
logging: { access_log: $WORK/access.log }
YAML
}
write_config ""

# Exactly the unit's ExecStart=/ExecReload= lines; $MAINPID is read from PIDFile=.
export RUST_LOG=${RUST_LOG:-warn}
start() { "$1" check -c "$WORK/tollgate.yaml" >/dev/null && "$1" -d -c "$WORK/tollgate.yaml"; }
reload() {
  local bin=$1 old; old=$(main_pid)
  "$bin" check -c "$WORK/tollgate.yaml" >/dev/null || fail "tollgate check refused the new config"
  "$bin" -d -u -c "$WORK/tollgate.yaml" || fail "the new process did not come up"
  kill -QUIT "$old"
  local new; new=$(main_pid)
  [ "$new" != "$old" ] && alive "$new" || fail "pid file does not name a new live process ($old -> $new)"
  SEEN_PIDS+=("$new")
  echo "reload: main PID $old -> $new"
}

start "$BIN" || fail "start"
SEEN_PIDS+=("$(main_pid)")
wait_for 20 curl -sf "http://127.0.0.1:$ADMIN/healthz"
FIRST=$(main_pid)

PATHS=""
for i in $(seq 0 19); do PATHS="$PATHS /obj/$i"; done
for p in $PATHS; do curl -sf -o /dev/null "http://127.0.0.1:$EDGE$p" || fail "warm-up $p"; done
for p in $PATHS; do
  cs=$(curl -sf -o /dev/null -D - "http://127.0.0.1:$EDGE$p" | tr -d '\r' | sed -n 's/^cache-status: //Ip')
  [ "$cs" = "tollgate; hit" ] || fail "warm-up: $p is not a hit: $cs"
done
WARM=$(obj_count)
[ "$WARM" = 20 ] || fail "the origin saw $WARM object requests while warming, expected 20"
echo "warm: 20 objects cached, origin requests for them: $WARM"

echo "wrk: 20 s, 2 threads, 16 connections; reloads at ~5 s (new config) and ~12 s (new binary)"
WRK_PATHS=$PATHS timeout 40 wrk -t2 -c16 -d20s -s "$ROOT/tests/ops/status.lua" \
  "http://127.0.0.1:$EDGE" > "$WORK/wrk.out" 2>&1 &
WRK_PID=$!
sleep 5
write_config '  - { match: /v2/*, origin: o, access: public }'
reload "$BIN"
sleep 7
cp "$BIN" "$WORK/tollgate-new"
reload "$WORK/tollgate-new"
wait $WRK_PID || fail "wrk failed: $(cat "$WORK/wrk.out")"

echo "--- wrk"
cat "$WORK/wrk.out"
echo "---"
total=$(sed -n 's/^requests \([0-9]*\)$/\1/p' "$WORK/wrk.out")
ok=$(awk '$1=="status" && $2 ~ /^2/ {s+=$3} END {print s+0}' "$WORK/wrk.out")
bad=$(awk '$1=="status" && $2 !~ /^2/ {s+=$3} END {print s+0}' "$WORK/wrk.out")
errors=$(sed -n 's/^errors //p' "$WORK/wrk.out")
disk_hits=$(awk '/^cache tollgate; hit; detail=disk / {print $NF}' "$WORK/wrk.out")
[ -n "$total" ] && [ "$total" -gt 0 ] || fail "wrk printed no tally"
[ "$bad" = 0 ] || fail "$bad non-2xx answers"
[ "$errors" = "connect=0 read=0 write=0 timeout=0 status=0" ] || fail "socket errors: $errors"
grep -q "Socket errors\|Non-2xx" "$WORK/wrk.out" && fail "wrk reports errors"
[ "$ok" = "$total" ] || fail "tallied $ok 2xx of $total requests"
# Each new process loads the old one's hot set from the disk tier before its listeners open:
# the memory tier is warm from the first request (without it, each object was a disk hit once
# per new process: >= 40 disk hits). Memory hits must be at least 0.99 of all answers.
memory_hits=$(awk '/^cache tollgate; hit [0-9]+$/ {print $NF}' "$WORK/wrk.out")
awk -v m="${memory_hits:-0}" -v t="$total" 'BEGIN {exit !(m >= 0.99 * t)}' \
  || fail "memory hits ${memory_hits:-0} of $total answers: the memory tier was cold after a reload"
AFTER=$(obj_count)
[ "$AFTER" = "$WARM" ] || fail "the origin was asked for objects during the run: $WARM -> $AFTER"
echo "wrk: $total requests, all 2xx, no socket errors; ${memory_hits:-0} memory hits, ${disk_hits:-0} disk hits; origin object requests: $WARM before, $AFTER after"

# Warm afterwards: every object a memory hit, still no origin request.
for p in $PATHS; do
  cs=$(curl -sf -o /dev/null -D - "http://127.0.0.1:$EDGE$p" | tr -d '\r' | sed -n 's/^cache-status: //Ip')
  [ "$cs" = "tollgate; hit" ] || fail "after the reloads $p is not a memory hit: $cs"
done
[ "$(obj_count)" = "$WARM" ] || fail "origin asked for objects after the run"
echo "after: all 20 objects are memory hits; origin object requests still $WARM"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EDGE/v2/new")
[ "$code" = 200 ] || fail "the route added by the first reload answers $code"
echo "config reload took effect: /v2/* (added in the new config) answers 200"

MAIN=$(main_pid)
wait_for 20 bash -c "for p in ${SEEN_PIDS[*]}; do [ \$p = $MAIN ] || ! alive \$p || exit 1; done"
echo "processes: ${#SEEN_PIDS[@]} started, only the newest ($MAIN) still runs"
alive "$FIRST" && fail "the first process ($FIRST) still runs"

# Every answered request has its log line (three processes appended to one file).
sleep 0.5
lines=$(wc -l < "$WORK/access.log")
expected=$((total + 20 + 20 + 20 + 1))
[ "$lines" -ge "$expected" ] || fail "access log has $lines lines, expected at least $expected"
python3 -c "
import json,sys
for n,l in enumerate(open('$WORK/access.log')):
    json.loads(l)
" || fail "a torn or invalid access log line"
echo "access log: $lines JSON lines for >= $expected answered requests, none torn"

# Nothing above INFO in the diagnostics of three processes and two reloads.
above_info=$(grep -E '^\[[^ ]+ (WARN|ERROR) ' "$WORK/error.log" || true)
[ -z "$above_info" ] || fail "the reloads logged above INFO:
$above_info"
echo "error log: no WARN or ERROR line across both reloads"

# SIGTERM drain: slow requests in flight complete.
echo "drain: 8 requests of 2 s in flight, then SIGTERM"
before=$(origin_count)
CURLS=()
for i in $(seq 1 8); do
  curl -s -o "$WORK/slow.$i" -w '%{http_code}' --max-time 20 "http://127.0.0.1:$EDGE/slow/2000?i=$i" > "$WORK/slow.$i.code" &
  CURLS+=($!)
done
wait_for 10 bash -c "[ \$(curl -sf http://127.0.0.1:$ORIGIN/__stats | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"total\"])') -ge $((before + 8)) ]"
t0=$(date +%s.%N)
kill -TERM "$MAIN"
for c in "${CURLS[@]}"; do wait "$c" || true; done
for i in $(seq 1 8); do
  [ "$(cat "$WORK/slow.$i.code")" = 200 ] || fail "in-flight request $i: HTTP $(cat "$WORK/slow.$i.code")"
  grep -q "^slow:2000$" "$WORK/slow.$i" || fail "in-flight request $i: body $(cat "$WORK/slow.$i")"
done
wait_for 15 bash -c "! alive $MAIN"
took=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
echo "drain: 8/8 in-flight requests answered 200; the node exited ${took} s after SIGTERM (grace 3 s + runtime shutdown <= 2 s)"
echo "PASS"
