#!/usr/bin/env bash
# Cache-hit throughput of one Tollgate node, measured with wrk on this machine.
#
#   benches/wrk/run.sh [RUNS] [SECONDS]      (defaults: 5 rounds of 10 s per scenario)
#
# Method (see benches/README.md): the node runs one worker thread pinned to CPU 0
# (`taskset -c 0`), wrk runs 1 thread / 50 connections pinned to CPU 1. The origin is python3's
# http.server serving 1 KiB files; every scenario is warmed first, then checked for
# correctness (subscriber body vs teaser, Cache-Status: hit), then timed. Each scenario's median
# req/s and p99 are printed, with the ratio to the public-hit rate of the same run.
set -euo pipefail
RUNS=${1:-5}
SECS=${2:-10}
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

EDGE=$(free_port); ADMIN=$(free_port); ORIGIN=$(free_port)

# origin: 1 KiB bodies
mkdir -p "$WORK/www/public" "$WORK/www/premium"
head -c 1024 /dev/zero | tr '\0' 'p' > "$WORK/www/public/article"
head -c 1024 /dev/zero | tr '\0' 's' > "$WORK/www/premium/article"
(cd "$WORK/www" && exec python3 -m http.server "$ORIGIN" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)

"$BIN" keygen --alg ES256 --kid bench --out "$WORK/keys" >/dev/null
head -c 24 /dev/urandom | base64 > "$WORK/admin.token"
cat > "$WORK/tollgate.yaml" <<YAML
pingora: { threads: 1 }
listeners: [ { addr: "127.0.0.1:$EDGE" } ]
admin: { addr: "127.0.0.1:$ADMIN", token_file: admin.token }
origins: { www: { url: "http://127.0.0.1:$ORIGIN" } }
keys: { jwks_file: keys/jwks.json }
auth: { token_sources: [bearer] }
routes:
  - { match: /premium/*, origin: www, access: paywall, require: [premium], cache: { default_ttl: 1h } }
  - { match: /*, origin: www, access: public, cache: { default_ttl: 1h } }
cache: { memory: { max_size: 64MiB } }
YAML
"$BIN" check -c "$WORK/tollgate.yaml" >/dev/null
RUST_LOG=error taskset -c 0 "$BIN" -c "$WORK/tollgate.yaml" 2>"$WORK/edge.log" &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done

ONE=$("$BIN" token --key "$WORK/keys/bench.pem" --kid bench --sub u1 --subs premium --ttl 2h)
"$BIN" token --key "$WORK/keys/bench.pem" --kid bench --sub u --subs premium --ttl 2h --count 10000 > "$WORK/tokens.txt"
BASE="http://127.0.0.1:$EDGE"

# correctness before timing
for _ in 1 2; do
  curl -s -o /dev/null "$BASE/public/article"
  curl -s -o /dev/null -H "Authorization: Bearer $ONE" "$BASE/premium/article"
done
curl -si "$BASE/public/article" | grep -qi '^cache-status: tollgate; hit' || { echo "public is not a hit" >&2; exit 1; }
curl -si -H "Authorization: Bearer $ONE" "$BASE/premium/article" | grep -qi '^cache-status: tollgate; hit' || { echo "subscriber is not a hit" >&2; exit 1; }
curl -s -H "Authorization: Bearer $ONE" "$BASE/premium/article" | grep -q sss || { echo "subscriber did not get the subscriber body" >&2; exit 1; }
# warm the token cache with every rotating token (and prove they verify)
TOKENS_FILE="$WORK/tokens.txt" WRK_PATH=/premium/article taskset -c 1 wrk -t1 -c50 -d3s -s "$ROOT/benches/peers/tokens.lua" "$BASE" >/dev/null


# Scenarios are interleaved round by round (A B C, A B C, ...) so that drift in the machine's
# background load hits every scenario alike. Every scenario's requests are built the same way
# (request() of benches/peers/tokens.lua, with no token, one token, or 10,000): a static `-H` request for one
# scenario and Lua for another would measure wrk's own Lua cost as a difference between them.
LUA="$ROOT/benches/peers/tokens.lua"
echo "$ONE" > "$WORK/one.txt"
declare -a A_R B_R C_R A_P B_P C_P
for _ in $(seq "$RUNS"); do
  read -r r p <<<"$(WRK_PATH=/public/article wrk_once -s "$LUA" "$BASE")"; A_R+=("$r"); A_P+=("$p")
  read -r r p <<<"$(TOKENS_FILE="$WORK/one.txt" WRK_PATH=/premium/article wrk_once -s "$LUA" "$BASE")"; B_R+=("$r"); B_P+=("$p")
  read -r r p <<<"$(TOKENS_FILE="$WORK/tokens.txt" WRK_PATH=/premium/article wrk_once -s "$LUA" "$BASE")"; C_R+=("$r"); C_P+=("$p")
done
row() { echo "$1|$(printf '%s\n' "${@:2:$RUNS}" | median)|$(printf '%s\n' "${@:$((RUNS+2))}" | median_v)|$(echo "${@:2:$RUNS}")"; }
R1=$(row "public hit" "${A_R[@]}" "${A_P[@]}")
R2=$(row "subscriber hit, one ES256 token" "${B_R[@]}" "${B_P[@]}")
R3=$(row "subscriber hit, 10,000 rotating ES256 tokens" "${C_R[@]}" "${C_P[@]}")
ORIGIN_HITS=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tollgate_requests_total/ && /cache_status="miss"/ {s+=$2} END {print s+0}')

PUB=$(echo "$R1" | cut -d'|' -f2)
printf '\n%-48s %12s %10s %10s   %s\n' scenario "req/s (med)" p99 "vs public" "runs"
for r in "$R1" "$R2" "$R3"; do
  IFS='|' read -r name rate p99 all <<<"$r"
  printf '%-48s %12s %10s %9.2fx   %s\n' "$name" "$rate" "$p99" "$(echo "$rate / $PUB" | bc -l)" "$all"
done
echo "origin fills during the whole run: $ORIGIN_HITS (misses)"
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
