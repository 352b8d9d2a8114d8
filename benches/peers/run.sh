#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2015  # "A && B || die" is meant: die unless both hold
# Tollgate against nginx, Varnish and HAProxy, side by side, on this machine (issue 7).
#
#   benches/peers/run.sh [ROUNDS] [SECONDS]      (defaults: 6 rounds of 10 s per run, the issue's method)
#
# Environment: TOLLGATE_BIN (skip `cargo build --release` and use this binary), PEERS (subset of
# "tollgate haproxy nginx varnish"), FRESH_RATE (never-seen tokens minted per second of a run,
# default 40000), RESULTS_DIR (default /tmp/tollgate-peers).
#
# Method (benches/peers/README.md): one shared origin; every peer runs one worker pinned to
# CPU 0; wrk -t1 -c50 --latency pinned to CPU 1. Correctness is checked for every peer and
# scenario before anything is timed (bodies per variant, forged/expired tokens get the teaser,
# warm hits never reach the origin, the token never reaches the origin, and a short wrk run of
# each scenario whose every body is inspected). Scenarios x peers are interleaved round by
# round; the table shows medians of req/s and p99 with Tollgate/peer ratios.
set -euo pipefail
ROUNDS=${1:-6}
SECS=${2:-10}
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $SECS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS] [SECONDS]" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
read -ra PEERS <<<"${PEERS:-tollgate haproxy nginx varnish}"
FRESH_RATE=${FRESH_RATE:-40000}
RESULTS=${RESULTS_DIR:-/tmp/tollgate-peers}/$(date -u +%Y%m%dT%H%M%SZ)
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=../wrk/common.sh
. "$ROOT/benches/wrk/common.sh"       # free_port

die() { echo "run.sh: FAILED: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
mkdir -p "$RESULTS/wrk"

# --- tools: Debian packages, installed only when missing ------------------------------------
missing=()
for t in nginx:nginx varnishd:varnish haproxy:haproxy wrk:wrk openssl:openssl curl:curl taskset:util-linux; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run as root or apt-get install -y ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }; } \
    >"$RESULTS/apt.log" 2>&1 || die "apt-get install ${missing[*]} (see $RESULTS/apt.log)"
fi
if [ -n "${TOLLGATE_BIN:-}" ]; then BIN=$TOLLGATE_BIN; else
  say "cargo build --release"; (cd "$ROOT" && cargo build --release --quiet); BIN=$ROOT/target/release/tollgate
fi
[ -x "$BIN" ] || die "no tollgate binary at $BIN"

# --- processes: each in its own process group, all stopped on exit -------------------------
WORK=$(mktemp -d /tmp/tollgate-peers-work.XXXXXX)
chmod 755 "$WORK"
declare -a GROUPS_STARTED=()
declare -A STOP_SIGNAL=()
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'; }
cleanup() {
  local rc=$? g
  set +e
  for g in "${GROUPS_STARTED[@]}"; do kill -"${STOP_SIGNAL[$g]:-TERM}" -- "-$g" 2>/dev/null; done
  for _ in $(seq 50); do                      # up to 5 s, then SIGKILL
    local alive=0
    for g in "${GROUPS_STARTED[@]}"; do group_alive "$g" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for g in "${GROUPS_STARTED[@]}"; do group_alive "$g" && kill -KILL -- "-$g" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# start SIGNAL LOG CMD...: CMD in a new process group (setsid execs in place: pid = pgid)
start() {
  local sig=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  GROUPS_STARTED+=("$!"); STOP_SIGNAL[$!]=$sig
}
wait_http() { # URL NAME LOG
  for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "$1" && return; sleep 0.1; done
  die "$2 did not come up on $1; its log:"$'\n'"$(tail -20 "$3")"
}
render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv; shift 2
  local expr=()
  for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${expr[@]}" "$tpl" >"$out"
}

# --- keys and tokens -------------------------------------------------------------------------
mkdir -p "$WORK/keys" "$WORK/other" "$WORK/tok"
"$BIN" keygen --alg ES256 --kid es --out "$WORK/keys" >/dev/null
"$BIN" keygen --alg RS256 --kid rs --out "$WORK/keys" >/dev/null
"$BIN" keygen --alg ES256 --kid es --out "$WORK/other" >/dev/null     # same kid, unknown key
openssl pkey -in "$WORK/keys/es.pem" -pubout -out "$WORK/keys/es.pub.pem" 2>/dev/null
openssl pkey -in "$WORK/keys/rs.pem" -pubout -out "$WORK/keys/rs.pub.pem" 2>/dev/null
mint() { "$BIN" token --kid "$1" --key "$2" --sub u1 --ttl "${TTL:-1d}" "${@:3}"; }
ONE=$(mint es "$WORK/keys/es.pem" --subs premium)
RS1=$(mint rs "$WORK/keys/rs.pem" --subs premium)
NOT_ENTITLED=$(mint es "$WORK/keys/es.pem" --subs basic)
OTHER_KEY=$(mint es "$WORK/other/es.pem" --subs premium)
EXPIRED=$(TTL=1s mint es "$WORK/keys/es.pem" --subs premium); EXPIRED_AT=$(($(date +%s) + 1))
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
sig=${ONE##*.}; flip=$([ "${sig:20:1}" = A ] && echo B || echo A)
FORGED_SIG="${ONE%.*}.${sig:0:20}${flip}${sig:21}"
FORGED_PAYLOAD="${ONE%%.*}.$(printf '{"sub":"u2","subs":["premium"],"exp":%d}' $(($(date +%s) + 86400)) | b64url).$sig"
ALG_NONE="$(printf '{"alg":"none","kid":"es"}' | b64url).$(cut -d. -f2 <<<"$ONE")."
echo "$ONE" >"$WORK/tok/one.txt"
echo "$RS1" >"$WORK/tok/rs1.txt"
say "minting tokens: 10,000 rotating, and $ROUNDS x $((SECS * FRESH_RATE)) never-seen (FRESH_RATE=$FRESH_RATE/s)"
t0=$(date +%s)
mint es "$WORK/keys/es.pem" --subs premium --count 10000 >"$WORK/tok/rot10k.txt"
mint es "$WORK/keys/es.pem" --subs premium --count 20 >"$WORK/tok/check.txt"
mint es "$WORK/keys/es.pem" --subs premium --count "$FRESH_RATE" >"$WORK/tok/freshcheck.txt"
pids=()
for r in $(seq "$ROUNDS"); do        # one file per round, shared by the peers (each sees it once)
  mint es "$WORK/keys/es.pem" --subs premium --count $((SECS * FRESH_RATE)) >"$WORK/tok/fresh$r.txt" &
  pids+=($!)
  if ((${#pids[@]} >= $(nproc))); then wait "${pids[0]}" || die "minting"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || die "minting"; done
say "minted in $(($(date +%s) - t0)) s, $(du -sh "$WORK/tok" | cut -f1)"

# --- origin and peers -----------------------------------------------------------------------
ORIGIN_PORT=$(free_port)
start TERM "$WORK/origin.log" python3 "$HERE/origin.py" "$ORIGIN_PORT"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
wait_http "$ORIGIN/__hits" origin "$WORK/origin.log"
declare -A URL
AUTH_PEERS=" tollgate haproxy "     # nginx and Varnish have no token check: public rows only
for peer in "${PEERS[@]}"; do
  port=$(free_port); dir=$WORK/$peer; mkdir -p "$dir"; URL[$peer]="http://127.0.0.1:$port"
  case $peer in
    tollgate)
      head -c 24 /dev/urandom | base64 >"$dir/admin.token"
      render "$HERE/tollgate.yaml.in" "$dir/tollgate.yaml" DIR="$dir" PORT="$port" \
        ADMIN_PORT="$(free_port)" ORIGIN_PORT="$ORIGIN_PORT"
      "$BIN" check -c "$dir/tollgate.yaml" >"$dir/check.log" 2>&1 || die "tollgate check: $(cat "$dir/check.log")"
      # SIGINT: Pingora's fast shutdown
      start INT "$dir/log" env RUST_LOG=error taskset -c 0 "$BIN" -c "$dir/tollgate.yaml" ;;
    haproxy)
      render "$HERE/haproxy.cfg.in" "$dir/haproxy.cfg" PORT="$port" ORIGIN_PORT="$ORIGIN_PORT" \
        ES_PEM="$WORK/keys/es.pub.pem" RS_PEM="$WORK/keys/rs.pub.pem"
      haproxy -c -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 \
        || die "haproxy rejected its config (jwt_verify needs HAProxy >= 2.5): $(cat "$dir/check.log")"
      start TERM "$dir/log" taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" ;;
    nginx)
      user=""; [ "$(id -u)" = 0 ] && user="user root;"
      render "$HERE/nginx.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$port" ORIGIN_PORT="$ORIGIN_PORT" USER="$user"
      nginx -t -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/check.log" 2>&1 || die "nginx -t: $(cat "$dir/check.log")"
      start TERM "$dir/log" taskset -c 0 nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ;;
    varnish)
      render "$HERE/varnish.vcl.in" "$dir/default.vcl" ORIGIN_PORT="$ORIGIN_PORT"
      # Varnish serves each connection from a worker thread: one pool, 100..500 threads
      start TERM "$dir/log" taskset -c 0 varnishd -F -j none -n "$dir/n" -a "127.0.0.1:$port" -T none \
        -f "$dir/default.vcl" -s malloc,256m -p thread_pools=1 -p thread_pool_min=100 -p thread_pool_max=500 ;;
    *) die "unknown peer $peer (PEERS may hold tollgate haproxy nginx varnish)" ;;
  esac
  wait_http "${URL[$peer]}/__none" "$peer" "$dir/log"
done
mkdir -p "$RESULTS/conf"        # the configs as run (ports included), for the record
for f in tollgate/tollgate.yaml haproxy/haproxy.cfg nginx/nginx.conf varnish/default.vcl; do
  if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$RESULTS/conf/"; fi
done

# --- correctness, before timing ---------------------------------------------------------------
hits() { curl -s --max-time 5 "$ORIGIN/__hits"; }
mkdir -p "$WORK/expect"
curl -sf -o "$WORK/expect/pub1k" "$ORIGIN/public/article"
curl -sf -o "$WORK/expect/pub100k" "$ORIGIN/public/big"
curl -sf -o "$WORK/expect/full" -H 'x-tollgate-variant: subscriber' "$ORIGIN/premium/article"
curl -sf -o "$WORK/expect/teaser" "$ORIGIN/premium/article"
cmp -s "$WORK/expect/full" "$WORK/expect/teaser" && die "origin: the full article equals the teaser"
while (($(date +%s) <= EXPIRED_AT)); do sleep 0.2; done
# expect PEER WHAT BODY PATH [TOKEN [curl args...]]
expect() {
  local got=$WORK/got st
  st=$(curl -s -o "$got" -w '%{http_code}' --max-time 5 ${5:+-H "Authorization: Bearer $5"} "${@:6}" "${URL[$1]}$4") || st="curl failed"
  [ "$st" = 200 ] && cmp -s "$got" "$WORK/expect/$3" \
    || die "$1: $2: expected the $3 body with 200, got $st: $(head -c 60 "$got" | tr '\n' ' ')"
}
# wrk_check PEER SCENARIO MARKER: a short wrk run of the scenario whose every body must carry MARKER
wrk_check() {
  local out
  out=$(scenario_env "$2" "$WORK/tok/freshcheck.txt" CHECK_BODY="$3" taskset -c 1 wrk -t1 -c50 -d1s \
    -s "$HERE/tokens.lua" "${URL[$1]}") || die "$1/$2: wrk failed"
  [[ $out =~ BODY\ seen=([0-9]+)\ bad=([0-9]+) ]] || die "$1/$2: no body check in wrk output: $out"
  ((BASH_REMATCH[1] > 0 && BASH_REMATCH[2] == 0)) \
    || die "$1/$2 under load: ${BASH_REMATCH[2]} of ${BASH_REMATCH[1]} bodies lack \"$3\""
}
# scenario_env SCENARIO FRESH_FILE CMD...: CMD with the tokens.lua environment of the scenario
scenario_env() {
  local s=$1 fresh=$2; shift 2
  case $s in
    pub1k) env WRK_PATH=/public/article "$@" ;;
    pub100k) env WRK_PATH=/public/big "$@" ;;
    sub1) env WRK_PATH=/premium/article TOKENS_FILE="$WORK/tok/one.txt" "$@" ;;
    rs1) env WRK_PATH=/premium/article TOKENS_FILE="$WORK/tok/rs1.txt" "$@" ;;
    rot10k) env WRK_PATH=/premium/article TOKENS_FILE="$WORK/tok/rot10k.txt" "$@" ;;
    fresh) env WRK_PATH=/premium/article TOKENS_FILE="$fresh" "$@" ;;
  esac
}
SCENARIOS=(pub1k sub1 rot10k fresh rs1 pub100k)
declare -A TITLE=([pub1k]="public 1 KiB hit, no token" [sub1]="subscriber hit, one ES256 token"
  [rot10k]="subscriber hit, 10,000 rotating ES256 tokens" [fresh]="subscriber hit, never-seen ES256 token per request"
  [rs1]="subscriber hit, one RS256 token" [pub100k]="100 KiB public object hit")
serves() { [[ $1 == pub* || $AUTH_PEERS == *" $2 "* ]]; }   # serves SCENARIO PEER

for peer in "${PEERS[@]}"; do
  say "checking $peer"
  for _ in 1 2; do expect "$peer" "public 1 KiB" pub1k /public/article; expect "$peer" "public 100 KiB" pub100k /public/big; done
  if serves sub1 "$peer"; then
    for _ in 1 2; do
      expect "$peer" "no token" teaser /premium/article
      expect "$peer" "valid ES256 token" full /premium/article "$ONE"
    done
    expect "$peer" "valid RS256 token" full /premium/article "$RS1"
    expect "$peer" "a rotating token" full /premium/article "$(head -1 "$WORK/tok/rot10k.txt")"
    expect "$peer" "token without the premium subscription" teaser /premium/article "$NOT_ENTITLED"
    expect "$peer" "expired token" teaser /premium/article "$EXPIRED"
    expect "$peer" "token signed by an unknown key with a known kid" teaser /premium/article "$OTHER_KEY"
    expect "$peer" "token with a forged signature" teaser /premium/article "$FORGED_SIG"
    expect "$peer" "token with a forged payload" teaser /premium/article "$FORGED_PAYLOAD"
    expect "$peer" "alg=none token" teaser /premium/article "$ALG_NONE"
    expect "$peer" "client-sent x-tollgate-variant" teaser /premium/article "" -H 'x-tollgate-variant: subscriber'
    expect "$peer" "not entitled + client-sent variant" teaser /premium/article "$NOT_ENTITLED" -H 'x-tollgate-variant: subscriber'
  fi
  # warm hits never reach the origin
  before=$(hits)
  for _ in 1 2 3; do expect "$peer" "public 1 KiB (warm)" pub1k /public/article; expect "$peer" "public 100 KiB (warm)" pub100k /public/big; done
  if serves sub1 "$peer"; then
    expect "$peer" "no token (warm)" teaser /premium/article
    expect "$peer" "ES256 (warm)" full /premium/article "$ONE"
    expect "$peer" "RS256 (warm)" full /premium/article "$RS1"
    while read -r t; do expect "$peer" "a never-seen token (warm object)" full /premium/article "$t"; done <"$WORK/tok/check.txt"
  fi
  after=$(hits)
  [ "${before%% *}" = "${after%% *}" ] || die "$peer: warm hits reached the origin (origin count ${before%% *} -> ${after%% *})"
  # the same scenarios through wrk, every body inspected
  for s in "${SCENARIOS[@]}"; do
    serves "$s" "$peer" || continue
    case $s in pub1k) m=PUBLIC-1K ;; pub100k) m=PUBLIC-100K ;; *) m=SUBSCRIBER-ONLY ;; esac
    wrk_check "$peer" "$s" "$m"
  done
  if serves rot10k "$peer"; then      # every rotating token verified once: a warm token cache
    out=$(scenario_env rot10k - taskset -c 1 wrk -t1 -c50 -d5s -s "$HERE/tokens.lua" "${URL[$peer]}")
    [[ $out =~ TOKENS\ sent=([0-9]+)\ distinct=([0-9]+) ]] && ((BASH_REMATCH[1] >= BASH_REMATCH[2])) \
      || die "$peer: the 5 s warm-up did not send all 10,000 rotating tokens: $out"
  fi
done
H_START=$(hits)
[ "${H_START#* }" = 0 ] || die "the origin received ${H_START#* } requests carrying Authorization"
say "all checks passed; origin count ${H_START%% *}"

# --- timed runs: ROUNDS x (scenarios x peers), interleaved --------------------------------------
RAW=$RESULTS/raw.tsv
RETRIED=()
printf 'round\tscenario\tpeer\treq_per_s\tp99\n' >"$RAW"
for r in $(seq "$ROUNDS"); do
  say "round $r/$ROUNDS"
  for s in "${SCENARIOS[@]}"; do
    for ((k = 0; k < ${#PEERS[@]}; k++)); do      # the peer order rotates from round to round
      peer=${PEERS[(k + r - 1) % ${#PEERS[@]}]}
      serves "$s" "$peer" || continue
      log=$RESULTS/wrk/r$r-$s-$peer.txt
      case $s in                      # static requests: wrk without a Lua request() is fastest
        pub1k) args=("${URL[$peer]}/public/article") ;;
        pub100k) args=("${URL[$peer]}/public/big") ;;
        sub1) args=(-H "Authorization: Bearer $ONE" "${URL[$peer]}/premium/article") ;;
        rs1) args=(-H "Authorization: Bearer $RS1" "${URL[$peer]}/premium/article") ;;
        *) args=(-s "$HERE/tokens.lua" "${URL[$peer]}") ;;
      esac
      for attempt in 1 2 3; do
        scenario_env "$s" "$WORK/tok/fresh$r.txt" taskset -c 1 wrk -t1 -c50 -d"${SECS}s" --latency "${args[@]}" >"$log" \
          || die "$peer/$s round $r: wrk failed (see $log)"
        out=$(<"$log")
        # Timeouts alone (no error answer, no connect/read/write error) mean the machine stalled
        # (seen here: every peer's rate fell below 1,000/s for ~40 s at once): the cell is run
        # again, at most twice, and the retry is counted under the table. Never for the
        # never-seen run: its tokens were spent. Anything else aborts the run.
        if [[ $s != fresh && $attempt -lt 3 && $out != *Non-2xx* \
          && $out =~ Socket\ errors:\ connect\ 0,\ read\ 0,\ write\ 0,\ timeout\ [1-9] ]]; then
          mv "$log" "${log%.txt}.stalled$attempt.txt"; RETRIED+=("r$r $s $peer")
          say "$peer/$s round $r: timeouts only (machine stall?): running the cell again"
          continue
        fi
        break
      done
      [[ $out == *Non-2xx* || $out == *"Socket errors"* ]] && die "$peer/$s round $r: errors during the run (see $log)"
      if [ "$s" = fresh ]; then
        [[ $out =~ TOKENS\ sent=([0-9]+)\ distinct=([0-9]+) ]] || die "$peer/fresh round $r: no token count (see $log)"
        ((BASH_REMATCH[1] <= BASH_REMATCH[2])) || die "$peer/fresh round $r: sent ${BASH_REMATCH[1]} requests with" \
          "${BASH_REMATCH[2]} never-seen tokens, so some were reused: raise FRESH_RATE (now $FRESH_RATE/s)"
      fi
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      [ -n "$rps" ] && [ -n "$p99" ] || die "$peer/$s round $r: no req/s or p99 in the wrk output (see $log)"
      printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$peer" "$rps" "$p99" >>"$RAW"
    done
  done
done
H_END=$(hits)

# --- the table -------------------------------------------------------------------------------
{
  echo "benches/peers/run.sh $ROUNDS $SECS — $(date -u '+%F %H:%M UTC'), $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tollgate $("$BIN" --version | awk '{print $2}') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && echo ', dirty')),"\
    "$(haproxy -v | head -1 | awk '{print "HAProxy", $3}'), $(nginx -v 2>&1 | sed 's/.*nginx\//nginx /'),"\
    "$(varnishd -V 2>&1 | head -1 | sed 's/varnishd (\(varnish-[^ ]*\).*/\1/'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}')"
  echo "cells: median req/s (median p99) of $ROUNDS x ${SECS}s runs; ratios: Tollgate req/s / peer req/s"
  for s in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "$s" "${TITLE[$s]}"; done | awk -F'\t' -v peers="${PEERS[*]}" -v raw="$RAW" -f "$HERE/table.awk"
  echo "origin requests during the timed runs: $((${H_END%% *} - ${H_START%% *})) (must be 0)"
  echo "cells run again after a stall (timeouts only): ${#RETRIED[@]}${RETRIED[*]:+ (${RETRIED[*]})}"
} | tee "$RESULTS/table.txt"
echo "raw results: $RESULTS" >&2
[ "${H_END%% *}" = "${H_START%% *}" ] || die "the origin received $((${H_END%% *} - ${H_START%% *})) requests during the timed runs: some runs were not all cache hits"
