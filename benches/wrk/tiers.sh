#!/usr/bin/env bash
# Memory-tier hits vs disk-tier hits of Tollgate, measured with wrk on this machine.
#
#   benches/wrk/tiers.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s per scenario)
#
# Method (see benches/README.md, "Cache tiers"): two nodes, each with one worker thread pinned
# to CPU 0 (`taskset -c 0`) and a disk tier in a temp dir; wrk runs 1 thread / 50 connections
# pinned to CPU 1 and loads one node at a time.
#   - memory node: `memory: { max_size: 64MiB }`: every hit is a memory hit;
#   - disk node:   `memory: { max_size: 4KiB }` (memory object limit 512 B): 1 KiB and 100 KiB
#     objects are never promoted, every hit is read from the disk tier (hot in the page cache).
# The origin is python3's http.server serving 1 KiB and 100 KiB random files. Before timing the
# script checks each node answers with the expected Cache-Status and the exact bytes of the
# file. Scenarios are interleaved round by round; medians and the disk/memory ratio per size
# come from the same invocation. Afterwards the nodes' lookup counters must show that the disk
# node answered only from disk and the memory node only from memory.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
# shellcheck source=common.sh
. "$ROOT/benches/wrk/common.sh"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
# SIGINT is Pingora's fast shutdown (SIGTERM would wait out the graceful-shutdown period)
cleanup() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

ORIGIN=$(free_port)

# origin: 1 KiB and 100 KiB random bodies
mkdir -p "$WORK/www/obj"
head -c 1024 /dev/urandom > "$WORK/www/obj/1k"
head -c 102400 /dev/urandom > "$WORK/www/obj/100k"
(cd "$WORK/www" && exec python3 -m http.server "$ORIGIN" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)

declare -A EDGE ADMIN
start_node() { # NAME MEMORY_MAX_SIZE
  local name=$1 mem=$2
  EDGE[$name]=$(free_port); ADMIN[$name]=$(free_port)
  mkdir -p "$WORK/$name"
  cat > "$WORK/$name/tollgate.yaml" <<YAML
pingora: { threads: 1, pid_file: $WORK/$name/tollgate.pid, upgrade_sock: $WORK/$name/upgrade.sock,
           grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }
listeners: [ { addr: "127.0.0.1:${EDGE[$name]}" } ]
admin: { addr: "127.0.0.1:${ADMIN[$name]}" }
origins: { www: { url: "http://127.0.0.1:$ORIGIN" } }
routes:
  - { match: /*, origin: www, access: public, cache: { default_ttl: 1h } }
cache: { memory: { max_size: $mem }, disk: { path: $WORK/$name/disk, max_size: 1GiB }, max_object_size: 64MiB }
YAML
  "$BIN" check -c "$WORK/$name/tollgate.yaml" >/dev/null
  RUST_LOG=error taskset -c 0 "$BIN" -c "$WORK/$name/tollgate.yaml" 2>"$WORK/$name/edge.log" &
  PIDS+=($!)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:${ADMIN[$name]}/healthz" >/dev/null && return; sleep 0.2; done
  echo "node $name did not start:" >&2; cat "$WORK/$name/edge.log" >&2; exit 1
}
start_node memory 64MiB
start_node disk 4KiB

status_of() { # URL -> Cache-Status value
  curl -s -D - -o /dev/null "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status" {print $2}'
}
expect() { # NODE FILE WANT_STATUS
  local url="http://127.0.0.1:${EDGE[$1]}/obj/$2" got
  # the first request fills both tiers; the fill is committed as its response ends
  for _ in $(seq 20); do
    got=$(status_of "$url")
    [ "$got" = "$3" ] && break
    sleep 0.05
  done
  [ "$got" = "$3" ] || { echo "$1 node, /obj/$2: Cache-Status '$got', expected '$3'" >&2; exit 1; }
  for _ in 1 2; do # stays so (no promotion on the disk node), with the exact bytes
    got=$(status_of "$url")
    [ "$got" = "$3" ] || { echo "$1 node, /obj/$2: Cache-Status '$got' on a repeat, expected '$3'" >&2; exit 1; }
    curl -sf "$url" -o "$WORK/body"
    cmp -s "$WORK/body" "$WORK/www/obj/$2" || { echo "$1 node, /obj/$2: body differs from the origin file" >&2; exit 1; }
  done
}
for f in 1k 100k; do
  expect memory "$f" "tollgate; hit"
  expect disk "$f" "tollgate; hit; detail=disk"
done

lookups() { # NODE -> "memory_hits disk_hits"
  curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk '
    /^tollgate_cache_lookups_total/ && /result="hit"/ { if ($0 ~ /tier="memory"/) m+=$2; else if ($0 ~ /tier="disk"/) d+=$2 }
    END { printf "%d %d\n", m, d }'
}
read -r M_MEM0 M_DISK0 <<<"$(lookups memory)"
read -r D_MEM0 D_DISK0 <<<"$(lookups disk)"

once() { # URL -> "req/s p99 requests"
  local out; out=$(taskset -c 1 wrk -t1 -c50 -d"${SECS}s" --latency "$1")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "errors during a run:" >&2; echo "$out" >&2; exit 1; fi
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}') $(echo "$out" | awk '/requests in/ {print $1}')"
}

# Interleaved round by round (memory 1k, disk 1k, memory 100k, disk 100k, ...) so that drift in
# the machine's background load hits every scenario alike.
declare -A R P
M_REQS=0; D_REQS=0
for _ in $(seq "$ROUNDS"); do
  for f in 1k 100k; do
    for node in memory disk; do
      read -r r p n <<<"$(once "http://127.0.0.1:${EDGE[$node]}/obj/$f")"
      R[$node.$f]+="$r "; P[$node.$f]+="$p "
      if [ "$node" = memory ]; then M_REQS=$((M_REQS + n)); else D_REQS=$((D_REQS + n)); fi
    done
  done
done

# every timed request came from the intended tier (wrk's count excludes requests still in
# flight when it stops, so allow a few more lookups than it reports)
read -r M_MEM1 M_DISK1 <<<"$(lookups memory)"
read -r D_MEM1 D_DISK1 <<<"$(lookups disk)"
CHECK="memory node: $((M_MEM1 - M_MEM0)) memory hits, $((M_DISK1 - M_DISK0)) disk hits for $M_REQS requests; disk node: $((D_MEM1 - D_MEM0)) memory hits, $((D_DISK1 - D_DISK0)) disk hits for $D_REQS requests"
if [ $((M_DISK1 - M_DISK0)) -ne 0 ] || [ $((D_MEM1 - D_MEM0)) -ne 0 ] || [ $((D_DISK1 - D_DISK0)) -lt "$D_REQS" ]; then
  echo "a timed request was not served by the intended tier: $CHECK" >&2; exit 1
fi

printf '\n%-8s %14s %10s %14s %10s %12s   %s\n' size "memory req/s" "p99" "disk req/s" "p99" "disk/memory" "runs (memory | disk)"
for f in 1k 100k; do
  mr=$(echo "${R[memory.$f]}" | tr ' ' '\n' | grep . | median)
  dr=$(echo "${R[disk.$f]}" | tr ' ' '\n' | grep . | median)
  mp=$(echo "${P[memory.$f]}" | tr ' ' '\n' | grep . | median_v)
  dp=$(echo "${P[disk.$f]}" | tr ' ' '\n' | grep . | median_v)
  label=$([ "$f" = 1k ] && echo "1 KiB" || echo "100 KiB")
  printf '%-8s %14s %10s %14s %10s %11.2fx   %s| %s\n' "$label" "$mr" "$mp" "$dr" "$dp" \
    "$(echo "$dr / $mr" | bc -l)" "${R[memory.$f]}" "${R[disk.$f]}"
done
echo "tiers: $CHECK"
echo "target: disk-tier hit of a 100 KiB object >= 0.50x a memory-tier hit"
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F); binary built $(date -u -r "$BIN" '+%F %T UTC')"
