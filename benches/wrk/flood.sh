#!/usr/bin/env bash
# Subscriber hits during a flood of forged tokens from another address (issue 18: the
# failed-credential budget, limits.failed_auth).
#
#   benches/wrk/flood.sh [RUNS] [SECONDS] [FLOOD_CONNECTIONS] [FLOOD_DELAY_MS]
#                                          (defaults: 5 rounds of 10 s, 40 connections, 3 ms)
#
# Method (see benches/README.md): two nodes from one release build, each with one worker
# thread pinned to CPU 0, trusting 127.0.0.1 as their load balancer so that X-Forwarded-For
# names the client address: node B with the default budget (20 failures/s, burst 100), node O
# with the budget off (limits.failed_auth.enabled: false). Subscribers (client address
# 198.51.100.2, one valid ES256 token, a warm token cache) are measured with wrk -t1 -c50 on
# CPU 1. The flood (client address 198.51.100.1, 1,000 distinct forged ES256 tokens: valid
# header and claims, a signature that fails the P-256 check) is a second wrk on CPU 1 whose
# connections each wait FLOOD_DELAY_MS between requests, so it costs its own core little and
# offers a bounded rate: at most ~40 x 1000 / 3 = 13,000 requests/s, about what the node's one
# core can verify P-256 signatures at, so that unthrottled the flood would take the core.
# Per round, interleaved: subscribers alone, then subscribers + flood, on B and then on O.
# Printed: median subscriber req/s per cell, the flood's answers by status, the node's CPU time
# (user+system from /proc) per subscriber request, and the ratios with/without the flood.
set -euo pipefail
RUNS=${1:-5}
SECS=${2:-10}
FLOOD_C=${3:-40}
FLOOD_DELAY=${4:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
# shellcheck source=common.sh
. "$ROOT/benches/wrk/common.sh"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

ORIGIN=$(free_port)
mkdir -p "$WORK/www/premium"
head -c 1024 /dev/zero | tr '\0' 's' > "$WORK/www/premium/article"
(cd "$WORK/www" && exec python3 -m http.server "$ORIGIN" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)
"$BIN" keygen --alg ES256 --kid bench --out "$WORK/keys" >/dev/null
head -c 24 /dev/urandom | base64 > "$WORK/admin.token"

# node NAME BUDGET_YAML: writes the config, starts it pinned to CPU 0; sets PORT_<NAME>,
# ADMIN_<NAME>, PID_<NAME>
node() {
  local name=$1 budget=$2 port admin
  port=$(free_port); admin=$(free_port)
  cat > "$WORK/$name.yaml" <<YAML
pingora: { threads: 1, pid_file: $WORK/$name.pid, upgrade_sock: $WORK/$name.sock }
listeners: [ { addr: "127.0.0.1:$port" } ]
admin: { addr: "127.0.0.1:$admin", token_file: admin.token }
origins: { www: { url: "http://127.0.0.1:$ORIGIN" } }
keys: { jwks_file: keys/jwks.json }
auth: { token_sources: [bearer] }
trusted_proxies: [127.0.0.1/32]
limits: { failed_auth: $budget }
routes:
  - { match: /premium/*, origin: www, access: paywall, require: [premium], cache: { default_ttl: 1h } }
cache: { memory: { max_size: 64MiB } }
YAML
  "$BIN" check -c "$WORK/$name.yaml" >/dev/null
  RUST_LOG=error taskset -c 0 "$BIN" -c "$WORK/$name.yaml" 2>"$WORK/$name.log" &
  PIDS+=($!)
  eval "PORT_$name=$port ADMIN_$name=$admin PID_$name=$!"
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null && return; sleep 0.2; done
  echo "node $name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}
node B "{ per_address_per_second: 20, burst: 100 }"
node O "{ enabled: false }"

ONE=$("$BIN" token --key "$WORK/keys/bench.pem" --kid bench --sub u1 --subs premium --ttl 2h)
echo "$ONE" > "$WORK/one.txt"
# forged: valid tokens whose signature has ten characters replaced (still canonical base64url,
# so each one costs a full P-256 verification before it is refused)
"$BIN" token --key "$WORK/keys/bench.pem" --kid bench --sub f --subs premium --ttl 2h --count 1000 |
  awk '{ n = length($0); print substr($0, 1, n - 30) "AAAAAAAAAA" substr($0, n - 19) }' > "$WORK/forged.txt"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

for n in B O; do
  port=$(eval echo "\$PORT_$n")
  base="http://127.0.0.1:$port"
  # correctness before timing: subscriber body, a hit, and a forged token is not a subscriber
  for _ in 1 2; do curl -s -o /dev/null -H "Authorization: Bearer $ONE" -H "X-Forwarded-For: 198.51.100.2" "$base/premium/article"; done
  curl -si -H "Authorization: Bearer $ONE" -H "X-Forwarded-For: 198.51.100.2" "$base/premium/article" | grep -qi '^cache-status: tollgate; hit' || { echo "$n: subscriber is not a hit" >&2; exit 1; }
  curl -s -H "Authorization: Bearer $ONE" -H "X-Forwarded-For: 198.51.100.2" "$base/premium/article" | grep -q sss || { echo "$n: no subscriber body" >&2; exit 1; }
  # (the origin serves one file to both variants: the decision is read from the metrics)
  curl -s -o /dev/null -H "Authorization: Bearer $(head -1 "$WORK/forged.txt")" -H "X-Forwarded-For: 198.51.100.1" "$base/premium/article"
  admin=$(eval echo "\$ADMIN_$n")
  # (counters are bumped just after an answer is written: poll briefly)
  seen=no
  for _ in $(seq 20); do
    curl -s "http://127.0.0.1:$admin/metrics" | grep -q '^tollgate_auth_decisions_total{result="bad_signature"} 1$' && { seen=yes; break; }
    sleep 0.1
  done
  [ "$seen" = yes ] || { echo "$n: a forged token was not refused as bad_signature" >&2; exit 1; }
done

LUA="$ROOT/benches/wrk/flood.lua"
declare -A RATE CPU
# cell NODE FLOOD(0/1): one timed subscriber run; prints "req/s cpu_us_per_request"
cell() {
  local n=$1 flood=$2 port pid base before after r flood_pid
  port=$(eval echo "\$PORT_$n"); pid=$(eval echo "\$PID_$n"); base="http://127.0.0.1:$port"
  if [ "$flood" = 1 ]; then
    COUNT_STATUS=1 TOKENS_FILE="$WORK/forged.txt" XFF=198.51.100.1 DELAY_MS=$FLOOD_DELAY \
      taskset -c 1 wrk -t1 -c"$FLOOD_C" -d"$((SECS + 2))s" -s "$LUA" "$base" > "$WORK/flood.out" 2>&1 &
    flood_pid=$!
    sleep 1
  fi
  before=$(cpu_ticks "$pid")
  r=$(TOKENS_FILE="$WORK/one.txt" XFF=198.51.100.2 wrk_once -s "$LUA" "$base" | awk '{print $1}')
  after=$(cpu_ticks "$pid")
  if [ "$flood" = 1 ]; then
    wait "$flood_pid"
    # (cell runs in a subshell: the flood's answers are kept in a file)
    echo "$n: $(grep -h '^STATUS' "$WORK/flood.out" | tr '\n' ' ')" >> "$WORK/floods.txt"
  fi
  echo "$r $(echo "($after - $before) / $TICK / ($r * $SECS) * 1000000" | bc -l)"
}

for _ in $(seq "$RUNS"); do
  for n in B O; do
    for f in 0 1; do
      read -r r c <<<"$(cell "$n" "$f")"
      RATE[$n$f]="${RATE[$n$f]:-} $r"
      CPU[$n$f]="${CPU[$n$f]:-} $c"
    done
  done
done

med() { printf '%s\n' $1 | median; }
printf '\n%-58s %12s %14s   %s\n' "subscriber hits (one ES256 token, warm)" "req/s (med)" "node us/req" "runs"
for key in B0 B1 O0 O1; do
  case $key in
    B0) name="budget on, alone";; B1) name="budget on, during the flood";;
    O0) name="budget off, alone";; O1) name="budget off, during the flood";;
  esac
  printf '%-58s %12s %14.1f   %s\n' "$name" "$(med "${RATE[$key]}")" "$(med "${CPU[$key]}")" "${RATE[$key]}"
done
B_RATIO=$(echo "$(med "${RATE[B1]}") / $(med "${RATE[B0]}")" | bc -l)
O_RATIO=$(echo "$(med "${RATE[O1]}") / $(med "${RATE[O0]}")" | bc -l)
printf '\nduring the flood / alone: budget on %.2fx (target >= 0.80), budget off %.2fx\n' "$B_RATIO" "$O_RATIO"
echo "flood answers per run (status=count):"
cat "$WORK/floods.txt"
echo "flood: $FLOOD_C connections, ${FLOOD_DELAY} ms between requests per connection; $RUNS rounds of ${SECS} s"
echo "tollgate $("$BIN" --version 2>/dev/null | head -1); machine: $(nproc) cores, $(uname -r); $(date -u '+%F %H:%M UTC')"
