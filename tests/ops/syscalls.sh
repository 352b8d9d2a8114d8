#!/usr/bin/env bash
# Every system call the node makes is allowed by the unit's SystemCallFilter= (and every socket
# family by RestrictAddressFamilies=, and no mapping is writable and executable, for
# MemoryDenyWriteExecute=): a full run under strace, checked against the unit.
#
#   tests/ops/syscalls.sh [UNIT]     (default: systemd/tollgate.service; or SYSCALL_UNIT=path)
#
# A unit that refuses what the node needs fails, naming each call, e.g.:
#   sed 's/^SystemCallFilter=~@privileged @resources$/&\nSystemCallFilter=~memfd_create sendfile/' \
#     systemd/tollgate.service > /tmp/narrow.service && tests/ops/syscalls.sh /tmp/narrow.service
#   -> NOT ALLOWED by SystemCallFilter: memfd_create (17 calls), e.g. ... memfd_create("tollgate"...
#
# TOLLGATE_TEST_FAST_HITS=off (the test suite's second pass) runs the node with
# cache.memory.fast_hits: false, so the proxy answers every hit (and no body goes out with
# sendfile); otherwise the default, the connection-level hit path, runs.
#
# TOLLGATE_BIN picks the binary (default: `cargo build`, the debug binary; `cargo test --test
# ops` passes the debug binary it built). The release binary runs the same code and makes the
# same calls; TOLLGATE_BIN=target/release/tollgate checks exactly what you deploy.
#
# 1. Everything the unit runs, each under `strace -f` (forks followed, one trace per command):
#    `tollgate check` (ExecStartPre=), `tollgate -d` (ExecStart=, daemon mode) with a plain and
#    a TLS listener, both cache tiers, the access log, a state_dir, a paywall, a Basic-auth and
#    public routes; `tollgate check`, `tollgate -d -u` and `kill -QUIT $MAINPID` (ExecReload=).
# 2. Traffic: wrk over small objects, 200 KB objects (memory tier: sealed memory files, mmap,
#    sendfile on hits), the paywall (anonymous and subscriber) for a few seconds; 6 MB objects
#    that fill and overflow the disk tier (eviction), ranges and conditional requests, HTTP/2
#    over TLS, Basic auth (bcrypt); an admin purge and a revocation (state_dir), a key file
#    replaced (reload), the access log rotated (SIGUSR1); then the graceful upgrade, wrk again
#    on the new process (disk hits refill memory, 6 MB disk reads), and SIGTERM.
# 3. tests/ops/syscall_check.py reads the traces and evaluates the unit's SystemCallFilter=
#    lines with the groups of `systemd-analyze syscall-filter` (nested groups expanded), as
#    systemd does: it lists every call seen and fails on any the unit would refuse.
#
# Needs strace, wrk, systemd-analyze (Debian's `systemd`), curl, openssl, python3: `.ci/deps`
# installs them. Bounded: every wait has a timeout; a run takes about 25 s (debug binary; 20 s
# release).
# KEEP_WORK=1 keeps the temp dir (config, traces, error.log) for a look.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UNIT=${1:-${SYSCALL_UNIT:-$ROOT/systemd/tollgate.service}}
for tool in strace wrk systemd-analyze curl openssl python3; do
  command -v "$tool" >/dev/null 2>&1 ||
    { echo "FAIL: $tool is needed (install it with .ci/deps; Debian: strace, wrk, systemd, curl, openssl)" >&2; exit 1; }
done
[ -f "$UNIT" ] || { echo "FAIL: no unit file $UNIT" >&2; exit 1; }
if [ -z "${TOLLGATE_BIN:-}" ]; then (cd "$ROOT" && cargo build -q); fi
BIN=${TOLLGATE_BIN:-$ROOT/target/debug/tollgate}
[ -x "$BIN" ] || { echo "FAIL: no binary $BIN" >&2; exit 1; }
# The unit does not set RUST_LOG: the config's logging.level applies.
unset RUST_LOG

case "${TOLLGATE_TEST_FAST_HITS:-}" in
  off) FAST_HITS=false; NEEDED="memfd_create mmap pread64" ;;
  ""|on) FAST_HITS=true; NEEDED="memfd_create mmap sendfile pread64" ;;
  *) echo "FAIL: TOLLGATE_TEST_FAST_HITS=$TOLLGATE_TEST_FAST_HITS: expected off or on" >&2; exit 1 ;;
esac

WORK=$(mktemp -d)
PIDS=()      # every process this script started or that the node became, killed on exit
cleanup() {
  local p
  # the daemon the pid file names (a killed strace leaves its tracees running)
  [ -s "$WORK/run/tollgate.pid" ] && PIDS+=("$(cat "$WORK/run/tollgate.pid")")
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$WORK/error.log" ] && tail -20 "$WORK/error.log" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds, or fail
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $*"
    sleep 0.1
  done
}
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
main_pid() { cat "$WORK/run/tollgate.pid"; }
# trace NAME CMD...: run CMD under strace, following forks, into $WORK/trace.NAME
trace() { local name=$1; shift; strace -f -qq -s 8 -o "$WORK/trace.$name" -- "$@"; }
TRACES=()

EDGE=$(free_port); TLS=$(free_port); ADMIN=$(free_port); ORIGIN=$(free_port)
python3 "$ROOT/tests/ops/origin.py" "$ORIGIN" &
PIDS+=($!)
wait_for 10 curl -sf "http://127.0.0.1:$ORIGIN/__stats"

mkdir -p "$WORK/run" "$WORK/keys" "$WORK/secrets"
"$BIN" keygen --kid k1 --out "$WORK/keys" >/dev/null
TOKEN=$("$BIN" token --key "$WORK/keys/k1.pem" --kid k1 --sub alice --subs premium --sid s-1 --ttl 1h)
ADMIN_TOKEN=admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "$ADMIN_TOKEN" > "$WORK/secrets/admin.token"
echo "origin-secret-$RANDOM$RANDOM" > "$WORK/secrets/origin.secret"
cp "$ROOT/conf/secrets/editors.htpasswd" "$WORK/secrets/editors.htpasswd"   # editor / change-me-now
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/keys/tls.key" -out "$WORK/keys/tls.pem" 2>/dev/null || fail "openssl req"

cat > "$WORK/tollgate.yaml" <<YAML
pingora:
  threads: 2
  pid_file: $WORK/run/tollgate.pid
  upgrade_sock: $WORK/run/upgrade.sock
  error_log: $WORK/error.log
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners:
  - { addr: "127.0.0.1:$EDGE" }
  - { addr: "127.0.0.1:$TLS", tls: { cert: keys/tls.pem, key: keys/tls.key } }
admin: { addr: "127.0.0.1:$ADMIN", token_file: secrets/admin.token }
origins:
  o: { url: "http://127.0.0.1:$ORIGIN", secret_header: x-origin-secret, secret_file: secrets/origin.secret }
keys: { jwks_file: keys/jwks.json, reload_interval_seconds: 1 }
auth: { token_sources: ["query:token", bearer, "cookie:token"] }
routes:
  - { match: /premium/*, origin: o, access: paywall, require: [premium] }
  - { match: /drafts/*, origin: o, access: basic, realm: editors }
  - { match: /*, origin: o, access: public }
basic_auth: { editors: secrets/editors.htpasswd }
cache:
  memory: { max_size: 64MiB, fast_hits: $FAST_HITS }
  disk: { path: $WORK/cache, max_size: 24MiB }
  max_object_size: 8MiB
state_dir: $WORK/state
logging: { level: info, access_log: $WORK/access.log }
YAML
CONF=$WORK/tollgate.yaml

E=http://127.0.0.1:$EDGE
A=http://127.0.0.1:$ADMIN
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
expect() { # expect CODE CURL-ARGS...
  local want=$1 got; shift
  got=$(code "$@") || true
  [ "$got" = "$want" ] || fail "curl $* answered $got, expected $want"
}
admin_post() { curl -sf -H "Authorization: Bearer $ADMIN_TOKEN" -d "$2" "$A$1" >/dev/null || fail "POST $1 $2"; }
run_wrk() { # run_wrk SECONDS NAME PATHS
  WRK_PATHS=$3 timeout $(($1 + 10)) wrk -t2 -c8 -d"$1"s -s "$ROOT/tests/ops/status.lua" "$E" \
    > "$WORK/wrk.$2" 2>&1 || fail "wrk failed: $(cat "$WORK/wrk.$2")"
  local total bad
  total=$(sed -n 's/^requests \([0-9]*\)$/\1/p' "$WORK/wrk.$2")
  bad=$(awk '$1=="status" && $2 !~ /^2/ {s+=$3} END {print s+0}' "$WORK/wrk.$2")
  [ -n "$total" ] && [ "$total" -gt 0 ] && [ "$bad" = 0 ] || fail "wrk $2: $(cat "$WORK/wrk.$2")"
  echo "wrk $2: $total requests in $1 s, all 2xx"
}

t0=$SECONDS
echo "== ExecStartPre= and ExecStart= under strace"
trace check1 "$BIN" check -c "$CONF" >/dev/null || fail "tollgate check"
TRACES+=("$WORK/trace.check1")
trace start "$BIN" -d -c "$CONF" 2>>"$WORK/launcher.log" &
START_STRACE=$!
PIDS+=("$START_STRACE")
TRACES+=("$WORK/trace.start")
wait_for 30 test -s "$WORK/run/tollgate.pid"
FIRST=$(main_pid)
PIDS+=("$FIRST")
wait_for 30 curl -sf "$A/healthz"
echo "node up: main PID $FIRST (daemon, traced)"

SMALL="" BIG=""
for i in 1 2 3 4 5 6 7 8; do SMALL="$SMALL /obj/$i"; done
for i in 1 2 3 4; do BIG="$BIG /big/200000?n=$i"; done
PAYWALL="/premium/a /premium/a?token=$TOKEN /premium/b?token=$TOKEN"
for p in $SMALL $BIG $PAYWALL; do expect 200 "$E$p"; done
for i in 1 2 3 4 5 6; do expect 200 "$E/big/6000000?n=$i"; done   # 36 MB into a 24 MiB disk tier
expect 206 -r 1000-2999 "$E/big/6000000?n=6"
expect 206 -r 0-99 "$E/big/200000?n=1"
expect 200 -I "$E/obj/1"
etag=$(curl -s -o /dev/null -D - "$E/obj/1" | tr -d '\r' | sed -n 's/^etag: //Ip')
[ -z "$etag" ] || expect 304 -H "If-None-Match: $etag" "$E/obj/1"
expect 200 --http2 -k "https://127.0.0.1:$TLS/obj/1"
expect 200 --http2 -k "https://127.0.0.1:$TLS/big/200000?n=1"
expect 200 --http1.1 -k "https://127.0.0.1:$TLS/big/200000?n=2"
expect 200 -u editor:change-me-now "$E/drafts/d"
expect 401 -u editor:wrong-password "$E/drafts/d"
expect 200 -H "Authorization: Bearer $TOKEN" "$E/premium/c"
run_wrk 3 before "$SMALL $BIG $PAYWALL"
sendfile=$(curl -sf "$A/metrics" | awk '$1=="tollgate_fast_path_sendfile_bytes_total" {print $2}')
if [ "$FAST_HITS" = true ]; then
  python3 -c "import sys; sys.exit(0 if float('${sendfile:-0}') > 0 else 1)" ||
    fail "no body was sent with sendfile (tollgate_fast_path_sendfile_bytes_total=${sendfile:-none})"
fi
echo "fast_hits: $FAST_HITS; bytes sent with sendfile: ${sendfile:-0}"

echo "== admin, keys, log rotation"
admin_post /admin/purge '{"prefixes": ["/obj/"]}'
admin_post /admin/revoke '{"sid": "s-1", "ttl_seconds": 600}'
curl -sf -H "Authorization: Bearer $ADMIN_TOKEN" "$A/admin/revocations" >/dev/null || fail "revocations"
cp "$WORK/keys/jwks.json" "$WORK/keys/jwks.json.new" && mv "$WORK/keys/jwks.json.new" "$WORK/keys/jwks.json"
mv "$WORK/access.log" "$WORK/access.log.1"
kill -USR1 "$FIRST"
sleep 1.2   # a key reload check (reload_interval_seconds: 1)
for p in $SMALL; do expect 200 "$E$p"; done   # purged: refilled from the origin
wait_for 10 test -s "$WORK/access.log"        # reopened on SIGUSR1

echo "== ExecReload=: check, -d -u, kill -QUIT \$MAINPID, all under strace"
trace check2 "$BIN" check -c "$CONF" >/dev/null || fail "tollgate check (reload)"
TRACES+=("$WORK/trace.check2")
trace upgrade "$BIN" -d -u -c "$CONF" 2>>"$WORK/launcher.log" &
PIDS+=($!)
TRACES+=("$WORK/trace.upgrade")
# the new process is ready when it waits on the upgrade socket for the old one's listeners
wait_for 30 test -S "$WORK/run/upgrade.sock"
wait_for 10 bash -c "[ \"\$(cat '$WORK/run/tollgate.pid')\" != $FIRST ]"
SECOND=$(main_pid)
PIDS+=("$SECOND")
trace kill kill -QUIT "$FIRST" || fail "kill -QUIT $FIRST"
TRACES+=("$WORK/trace.kill")
wait_for 20 bash -c "! [ -r /proc/$FIRST/stat ] || [ \"\$(awk '{print \$3}' /proc/$FIRST/stat)\" = Z ]"
wait_for 10 curl -sf "$A/healthz"
echo "upgrade: main PID $FIRST -> $SECOND; the old process is gone"
expect 200 "$E/big/6000000?n=6"                 # a disk hit, read in blocks
expect 206 -r 5000000-5000999 "$E/big/6000000?n=6"
run_wrk 2 after "$SMALL $BIG $PAYWALL"

echo "== stop (SIGTERM)"
kill -TERM "$SECOND"
wait_for 20 bash -c "! [ -r /proc/$SECOND/stat ] || [ \"\$(awk '{print \$3}' /proc/$SECOND/stat)\" = Z ]"
# strace exits once every process it follows is gone
for p in $(jobs -p); do
  [ "$p" = "${PIDS[0]}" ] && continue   # the origin
  deadline=$((SECONDS + 20))
  while kill -0 "$p" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "strace (pid $p) did not exit"
    sleep 0.1
  done
done
echo "run: $((SECONDS - t0)) s"

echo "== the unit's filter: $UNIT"
python3 "$ROOT/tests/ops/syscall_check.py" "$UNIT" "${TRACES[@]}" > "$WORK/check.out" && rc=0 || rc=$?
cat "$WORK/check.out"
for s in $NEEDED; do
  grep -qw "$s([0-9]*)" "$WORK/check.out" || fail "the run never called $s: the traffic missed a path it is meant to cover"
done
[ $rc = 0 ] || { echo "FAIL: the unit refuses system calls the node makes" >&2; exit 1; }
echo "PASS"
