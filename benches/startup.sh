#!/usr/bin/env bash
# Start-up of a Tollgate node on a full disk tier: time to the first disk hit, and the index scan.
#
#   benches/startup.sh [N]        (default 100000 objects of 1 KiB)
#
# Method (see benches/README.md, "Cache tiers"): `examples/fill_disk.rs` writes N objects
# straight into a disk-tier directory with the library API, keyed exactly as the edge keys
# `GET http://127.0.0.1:PORT/obj/<i>` on a public route (fresh for a day). The node (release
# build, one worker thread, pinned to CPU 0) is then started on that directory with
# RUST_LOG=info, and curl (pinned to CPU 1) asks for `/obj/<random i>` every ~10 ms from the
# moment the process is spawned. Printed:
#   - time from spawn to the first 200 that is a disk hit (`Cache-Status: tollgate; hit;
#     detail=disk`) with the body of object i;
#   - the background index scan's own duration, from its log line
#     `disk cache: indexed N objects (... bytes) in ...`, and whether it had finished by then.
# The origin is a closed port: anything but a disk hit is an error answer, never a fill.
# The files were just written, so the page cache is warm (a restart, not a reboot).
set -euo pipefail
N=${1:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
FILL=${FILL_DISK_BIN:-$ROOT/target/release/examples/fill_disk}
if [ ! -x "$BIN" ] || [ ! -x "$FILL" ]; then
  (cd "$ROOT" && cargo build --release --bin tollgate --example fill_disk)
fi

WORK=$(mktemp -d)
NODE=
# SIGINT is Pingora's fast shutdown (SIGTERM would wait out the graceful-shutdown period)
cleanup() { [ -n "$NODE" ] && kill -INT "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EDGE=$(free_port); ADMIN=$(free_port); ORIGIN=$(free_port) # nothing listens on ORIGIN

"$FILL" "$WORK/disk" "$N" "127.0.0.1:$EDGE" 1024
cat > "$WORK/tollgate.yaml" <<YAML
pingora: { threads: 1, pid_file: $WORK/tollgate.pid, upgrade_sock: $WORK/upgrade.sock,
           grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }
listeners: [ { addr: "127.0.0.1:$EDGE" } ]
admin: { addr: "127.0.0.1:$ADMIN" }
origins: { www: { url: "http://127.0.0.1:$ORIGIN" } }
routes:
  - { match: /*, origin: www, access: public, cache: { default_ttl: 1h } }
cache: { memory: { max_size: 64MiB }, disk: { path: $WORK/disk, max_size: 10GiB }, max_object_size: 64MiB }
YAML
"$BIN" check -c "$WORK/tollgate.yaml" >/dev/null

now_ns() { date +%s%N; }
scan_line() { grep -m1 'disk cache: indexed' "$WORK/edge.log" || true; }

T0=$(now_ns)
RUST_LOG=info taskset -c 0 "$BIN" -c "$WORK/tollgate.yaml" 2>"$WORK/edge.log" &
NODE=$!
TRIES=0; FIRST=; SCANNED_BY_THEN=no; LAST=
while :; do
  i=$(( (RANDOM * 32768 + RANDOM) % N ))
  TRIES=$((TRIES + 1))
  if taskset -c 1 curl -s --max-time 2 -D "$WORK/h" -o "$WORK/b" "http://127.0.0.1:$EDGE/obj/$i"; then
    T=$(now_ns)
    STATUS=$(tr -d '\r' < "$WORK/h" | awk 'NR==1 {print $2}')
    CS=$(tr -d '\r' < "$WORK/h" | awk -F': ' 'tolower($1)=="cache-status" {print $2}')
    LAST="status $STATUS, Cache-Status '$CS'"
    if [ "$STATUS" = 200 ] && [ "$CS" = "tollgate; hit; detail=disk" ]; then
      [ "$(head -n1 "$WORK/b")" = "object $i" ] && [ "$(wc -c < "$WORK/b")" -eq 1024 ] \
        || { echo "/obj/$i: a disk hit with the wrong body" >&2; exit 1; }
      FIRST=$(( (T - T0) / 1000000 ))
      [ -n "$(scan_line)" ] && SCANNED_BY_THEN=yes
      break
    fi
    echo "/obj/$i answered: $LAST (expected a disk hit)" >&2; tail -5 "$WORK/edge.log" >&2; exit 1
  fi
  kill -0 "$NODE" 2>/dev/null || { echo "the node exited:" >&2; cat "$WORK/edge.log" >&2; exit 1; }
  [ $(( ($(now_ns) - T0) / 1000000000 )) -lt 60 ] || { echo "no answer within 60 s" >&2; exit 1; }
  sleep 0.01
done

# the scan runs on in the background; wait for its log line
for _ in $(seq 600); do [ -n "$(scan_line)" ] && break; sleep 0.1; done
SCAN=$(scan_line)
[ -n "$SCAN" ] || { echo "no index scan line within 60 s" >&2; tail -5 "$WORK/edge.log" >&2; exit 1; }
INDEXED=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tollgate_cache_objects/ && /tier="disk"/ {print $2}')

echo
echo "objects on disk:                  $N x 1 KiB (index after the scan: ${INDEXED:-?} objects)"
echo "spawn -> first disk hit:          ${FIRST} ms  (curl attempts: $TRIES, every ~10 ms; index scan finished by then: $SCANNED_BY_THEN)"
echo "background index scan:            ${SCAN##* in }  (log: ${SCAN#*] })"
echo "target: first request served in under 2 s with 100,000 entries"
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F); binary built $(date -u -r "$BIN" '+%F %T UTC')"
