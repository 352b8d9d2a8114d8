#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2015  # "A && B || die" is meant: die unless both hold
# Tollgate against nginx, Varnish and HAProxy, side by side, on this machine (issue 7), over
# plaintext HTTP/1.1, TLS 1.3 keep-alive (HTTP/1.1) and HTTP/2 over TLS.
#
#   benches/peers/run.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 8 s per run;
#                                                 `run.sh 6 10` is issue 7's method)
#
# Environment: TOLLGATE_BIN (skip `cargo build --release` and use this binary), PEERS (subset of
# "tollgate haproxy nginx varnish"), PROTOS (subset of "h1 tls h2", the row groups),
# SCENARIOS (subset of "pub1k sub1 cookie rot10k fresh rs1 pub100k media signed"; fresh, rs1
# and pub100k are h1 rows only, cookie an HTTP/2 row only), FRESH_RATE (never-seen tokens
# minted per second of a run, default 40000), RESULTS_DIR (default /tmp/tollgate-peers).
#
# Method (benches/peers/README.md): one shared origin; every peer runs one worker pinned to
# CPU 0; the client pinned to CPU 1: wrk -t1 -c50 --latency (plaintext and TLS rows),
# h2load -c50 -m10 -t1 (HTTP/2 rows). Correctness is checked for every peer, protocol and
# scenario before anything is timed (bodies per variant, forged/expired tokens get the teaser
# or a 403, warm hits never reach the origin, no credential reaches the origin, the negotiated
# TLS version, cipher and ALPN protocol, and a short run of each row whose every body is
# inspected). Rows x peers are interleaved round by round; the table shows medians of req/s,
# p99 and the server's CPU time per request, with Tollgate/peer ratios.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-8}
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $SECS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS] [SECONDS]" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
read -ra PEERS <<<"${PEERS:-tollgate haproxy nginx varnish}"
read -ra PROTOS <<<"${PROTOS:-h1 tls h2}"
read -ra SCEN_SEL <<<"${SCENARIOS:-pub1k sub1 cookie rot10k fresh rs1 pub100k media signed}"
for p in "${PROTOS[@]}"; do [[ $p =~ ^(h1|tls|h2)$ ]] || { echo "PROTOS may hold h1 tls h2, not $p" >&2; exit 2; }; done
for s in "${SCEN_SEL[@]}"; do
  [[ $s =~ ^(pub1k|sub1|cookie|rot10k|fresh|rs1|pub100k|media|signed)$ ]] \
    || { echo "SCENARIOS may hold pub1k sub1 cookie rot10k fresh rs1 pub100k media signed, not $s" >&2; exit 2; }
done
FRESH_RATE=${FRESH_RATE:-40000}
RESULTS=${RESULTS_DIR:-/tmp/tollgate-peers}/$(date -u +%Y%m%dT%H%M%SZ)
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=../wrk/common.sh
. "$ROOT/benches/wrk/common.sh"       # free_port

die() { echo "run.sh: FAILED: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
mkdir -p "$RESULTS/wrk"

has() { local x=$1; shift; [[ " $* " == *" $x "* ]]; }     # has WORD LIST...

# --- tools: Debian packages, installed only when missing ------------------------------------
missing=()
tools=(wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl taskset:util-linux)
for t in nginx:nginx varnishd:varnish haproxy:haproxy; do    # only the peers being measured
  if has "${t#*:}" "${PEERS[@]}"; then tools+=("$t"); fi
done
for t in "${tools[@]}"; do
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

# --- rows: PROTOS x SCENARIOS ----------------------------------------------------------------
# A row is "<scenario>" (plaintext HTTP/1.1), "tls-<scenario>" (HTTP/1.1 over TLS 1.3) or
# "h2-<scenario>" (HTTP/2 over TLS 1.3, ALPN h2).
H1_SCENARIOS=(pub1k sub1 rot10k fresh rs1 pub100k media signed)
TLS_SCENARIOS=(pub1k sub1 rot10k media signed)    # the TLS rows
# HTTP/2 adds the one token sent as a cookie, as a browser sends it: h2load's HPACK encoder (as
# Firefox's) never indexes `authorization`, so a bearer token costs the client a Huffman
# encoding of ~250 bytes on every request, and the client's core saturates before the node's
# (issue 20 closing notes); a cookie of 20 bytes or more is indexed, and costs it one byte.
H2_SCENARIOS=(pub1k sub1 cookie rot10k media signed)
ROWS=()
for p in h1 tls h2; do
  has "$p" "${PROTOS[@]}" || continue
  case $p in h1) list=("${H1_SCENARIOS[@]}") ;; tls) list=("${TLS_SCENARIOS[@]}") ;; h2) list=("${H2_SCENARIOS[@]}") ;; esac
  for s in "${list[@]}"; do
    if has "$s" "${SCEN_SEL[@]}"; then if [ "$p" = h1 ]; then ROWS+=("$s"); else ROWS+=("$p-$s"); fi; fi
  done
done
((${#ROWS[@]})) || die "PROTOS=\"${PROTOS[*]}\" x SCENARIOS=\"${SCEN_SEL[*]}\" selects no row"
proto_of() { if [[ $1 == *-* ]]; then echo "${1%%-*}"; else echo h1; fi; }
base_of() { echo "${1#*-}"; }
any_row() { local r; for r in "${ROWS[@]}"; do [ "$(base_of "$r")" = "$1" ] && return 0; done; return 1; }
any_proto() { local r; for r in "${ROWS[@]}"; do [ "$(proto_of "$r")" = "$1" ] && return 0; done; return 1; }
say "rows: ${ROWS[*]}"

# --- keys, tokens and certificates ---------------------------------------------------------
mkdir -p "$WORK/keys" "$WORK/other" "$WORK/tok" "$WORK/tls"
"$BIN" keygen --alg ES256 --kid es --out "$WORK/keys" >/dev/null
"$BIN" keygen --alg RS256 --kid rs --out "$WORK/keys" >/dev/null
"$BIN" keygen --alg ES256 --kid es --out "$WORK/other" >/dev/null     # same kid, unknown key
openssl pkey -in "$WORK/keys/es.pem" -pubout -out "$WORK/keys/es.pub.pem" 2>/dev/null
openssl pkey -in "$WORK/keys/rs.pem" -pubout -out "$WORK/keys/rs.pub.pem" 2>/dev/null
# CloudFront key pair (P-256) for the signed-URL rows: the private half signs, Tollgate holds the public one
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/keys/cf.pem" 2>/dev/null
openssl pkey -in "$WORK/keys/cf.pem" -pubout -out "$WORK/keys/cf.pub.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/other/cf.pem" 2>/dev/null
# One self-signed CA and one P-256 leaf for 127.0.0.1 and localhost, the same for every peer
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=tollgate-bench-ca \
  -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.pem" >/dev/null 2>&1 || die "openssl: the CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$WORK/tls/leaf.key" -out "$WORK/tls/leaf.csr" >/dev/null 2>&1 || die "openssl: the leaf key"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$WORK/tls/leaf.ext"
openssl x509 -req -in "$WORK/tls/leaf.csr" -CA "$WORK/tls/ca.pem" -CAkey "$WORK/tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/tls/leaf.ext" -out "$WORK/tls/leaf.pem" >/dev/null 2>&1 || die "openssl: the leaf certificate"
cat "$WORK/tls/leaf.pem" "$WORK/tls/leaf.key" >"$WORK/tls/leaf+key.pem"    # HAProxy's crt
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
# signed_url ORIGIN PATH [KEY [EXPIRES]]: PATH plus a CloudFront canned-policy signature for
# ORIGIN PATH (ECDSA P-256, Hash-Algorithm=SHA256), as botocore's CloudFrontSigner makes it
signed_url() {
  local exp=${4:-$(($(date +%s) + 86400))} policy sig
  policy='{"Statement":[{"Resource":"'"$1$2"'","Condition":{"DateLessThan":{"AWS:EpochTime":'"$exp"'}}}]}'
  sig=$(printf '%s' "$policy" | openssl dgst -sha256 -sign "${3:-$WORK/keys/cf.pem}" | base64 -w0 | tr '+=/' '-_~')
  printf '%s?Expires=%s&Signature=%s&Key-Pair-Id=KBENCH&Hash-Algorithm=SHA256\n' "$2" "$exp" "$sig"
}
say "minting tokens: 10,000 rotating$(any_row fresh && echo ", and $ROUNDS x $((SECS * FRESH_RATE)) never-seen (FRESH_RATE=$FRESH_RATE/s)")"
t0=$(date +%s)
mint es "$WORK/keys/es.pem" --subs premium --count 10000 >"$WORK/tok/rot10k.txt"
mint es "$WORK/keys/es.pem" --subs premium --count 20 >"$WORK/tok/check.txt"
sed 's|^|/premium/article?token=|' "$WORK/tok/rot10k.txt" >"$WORK/tok/rot10k.paths"    # h2load -i
if any_row fresh; then
  mint es "$WORK/keys/es.pem" --subs premium --count "$FRESH_RATE" >"$WORK/tok/freshcheck.txt"
  pids=()
  for r in $(seq "$ROUNDS"); do        # one file per round, shared by the peers (each sees it once)
    mint es "$WORK/keys/es.pem" --subs premium --count $((SECS * FRESH_RATE)) >"$WORK/tok/fresh$r.txt" &
    pids+=($!)
    if ((${#pids[@]} >= $(nproc))); then wait "${pids[0]}" || die "minting"; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p" || die "minting"; done
fi
say "minted in $(($(date +%s) - t0)) s, $(du -sh "$WORK/tok" | cut -f1)"

# warm_rotating PEER SECS: every rotating token sent at least once (untimed), so that a token
# cache holds them all. Before the timed runs, and again before every timed rotating-token cell:
# the never-seen row floods a 100,000-entry cache with 400,000 new tokens, which evicts the
# rotating ones, and without the pass the first rotating row after it (TLS) re-verified all
# 10,000 (~0.7 s of server CPU in a 10 s cell) while the others found them cached.
warm_rotating() {
  local out
  out=$(scenario_env rot10k - taskset -c 1 wrk -t1 -c50 -d"$2s" -s "$HERE/tokens.lua" "${URL[$1]}")
  [[ $out =~ TOKENS\ sent=([0-9]+)\ distinct=([0-9]+) ]] && ((BASH_REMATCH[1] >= BASH_REMATCH[2])) \
    || die "$1: the $2 s warm-up did not send all 10,000 rotating tokens: $out"
}

# --- origin and peers -----------------------------------------------------------------------
ORIGIN_PORT=$(free_port)
start TERM "$WORK/origin.log" python3 "$HERE/origin.py" "$ORIGIN_PORT"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
wait_http "$ORIGIN/__hits" origin "$WORK/origin.log"
declare -A URL TURL PGID
AUTH_PEERS=" tollgate haproxy "     # nginx and Varnish have no token check: public rows only
TLS_PEERS=" tollgate haproxy nginx " # Varnish has no TLS: no TLS or HTTP/2 rows
TLS_ARGS=(TLS_CERT="$WORK/tls/leaf.pem" TLS_KEY="$WORK/tls/leaf.key")
for peer in "${PEERS[@]}"; do
  port=$(free_port); tport=$(free_port); dir=$WORK/$peer; mkdir -p "$dir"
  URL[$peer]="http://127.0.0.1:$port"; TURL[$peer]="https://127.0.0.1:$tport"
  case $peer in
    tollgate)
      head -c 24 /dev/urandom | base64 >"$dir/admin.token"
      render "$HERE/tollgate.yaml.in" "$dir/tollgate.yaml" DIR="$dir" PORT="$port" TLS_PORT="$tport" \
        ADMIN_PORT="${ADMIN_PORT:=$(free_port)}" ORIGIN_PORT="$ORIGIN_PORT" KEYS="$WORK/keys" "${TLS_ARGS[@]}"
      "$BIN" check -c "$dir/tollgate.yaml" >"$dir/check.log" 2>&1 || die "tollgate check: $(cat "$dir/check.log")"
      # SIGINT: Pingora's fast shutdown
      start INT "$dir/log" env RUST_LOG=error taskset -c 0 "$BIN" -c "$dir/tollgate.yaml" ;;
    haproxy)
      render "$HERE/haproxy.cfg.in" "$dir/haproxy.cfg" PORT="$port" TLS_PORT="$tport" ORIGIN_PORT="$ORIGIN_PORT" \
        ES_PEM="$WORK/keys/es.pub.pem" RS_PEM="$WORK/keys/rs.pub.pem" TLS_PEM="$WORK/tls/leaf+key.pem"
      haproxy -c -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 \
        || die "haproxy rejected its config (jwt_verify needs HAProxy >= 2.5): $(cat "$dir/check.log")"
      start TERM "$dir/log" taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" ;;
    nginx)
      user=""; [ "$(id -u)" = 0 ] && user="user root;"
      render "$HERE/nginx.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$port" TLS_PORT="$tport" \
        ORIGIN_PORT="$ORIGIN_PORT" USER="$user" "${TLS_ARGS[@]}"
      nginx -t -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/check.log" 2>&1 || die "nginx -t: $(cat "$dir/check.log")"
      start TERM "$dir/log" taskset -c 0 nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ;;
    varnish)
      render "$HERE/varnish.vcl.in" "$dir/default.vcl" ORIGIN_PORT="$ORIGIN_PORT"
      unset "TURL[$peer]"
      # Varnish serves each connection from a worker thread: one pool, 100..500 threads
      start TERM "$dir/log" taskset -c 0 varnishd -F -j none -n "$dir/n" -a "127.0.0.1:$port" -T none \
        -f "$dir/default.vcl" -s malloc,256m -p thread_pools=1 -p thread_pool_min=100 -p thread_pool_max=500 ;;
    *) die "unknown peer $peer (PEERS may hold tollgate haproxy nginx varnish)" ;;
  esac
  PGID[$peer]=${GROUPS_STARTED[-1]}
  wait_http "${URL[$peer]}/__none" "$peer" "$dir/log"
done
mkdir -p "$RESULTS/conf"        # the configs as run (ports included), for the record
for f in tollgate/tollgate.yaml haproxy/haproxy.cfg nginx/nginx.conf varnish/default.vcl; do
  if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$RESULTS/conf/"; fi
done
# Signed URLs name scheme, host and port (the canned policy's Resource), so one per listener.
# Only Tollgate serves them; minted for any peer, they would be as valid.
declare -A SIGNED
for peer in "${PEERS[@]}"; do
  SIGNED[$peer]=$(signed_url "${URL[$peer]}" /signed/file)
  [ -n "${TURL[$peer]:-}" ] && SIGNED[tls-$peer]=$(signed_url "${TURL[$peer]}" /signed/file)
done

# CPU time of a peer (every process of its process group: Tollgate and HAProxy are one process,
# nginx a master and the worker, Varnish a manager and the child), in clock ticks
cpu_ticks() {
  local t=0 pid stat f
  for pid in $(ps -eo pid=,pgid= | awk -v g="$1" '$2 == g {print $1}'); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -ra f <<<"${stat##*) }"           # from field 3 (state): utime is field 14, stime 15
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)
# CHILD_US := CPU time (user + system, µs, to the millisecond bash prints) of this shell's
# children reaped so far. Read in this shell, never in a $(...) subshell: a subshell counts only
# its own children. The client is the only child between the two readings around a cell.
children_us() {
  local user sys t re='^([0-9]+)m([0-9]+)\.([0-9]+)s$'
  times >"$WORK/times"
  { read -r _; read -r user sys; } <"$WORK/times"
  CHILD_US=0
  for t in "$user" "$sys"; do
    [[ $t =~ $re ]] || die "unexpected output of times: $user $sys"
    CHILD_US=$((CHILD_US + (BASH_REMATCH[1] * 60000 + BASH_REMATCH[2] * 1000 + 10#${BASH_REMATCH[3]:0:3}) * 1000))
  done
}

# --- correctness, before timing ---------------------------------------------------------------
hits() { curl -s --max-time 5 "$ORIGIN/__hits"; }
mkdir -p "$WORK/expect"
curl -sf -o "$WORK/expect/pub1k" "$ORIGIN/public/article"
curl -sf -o "$WORK/expect/pub100k" "$ORIGIN/public/big"
curl -sf -o "$WORK/expect/full" -H 'x-tollgate-variant: subscriber' "$ORIGIN/premium/article"
curl -sf -o "$WORK/expect/teaser" "$ORIGIN/premium/article"
curl -sf -o "$WORK/expect/media" "$ORIGIN/media/segment"
curl -sf -o "$WORK/expect/signed" "$ORIGIN/signed/file"
cmp -s "$WORK/expect/full" "$WORK/expect/teaser" && die "origin: the full article equals the teaser"
while (($(date +%s) <= EXPIRED_AT)); do sleep 0.2; done
# VIA selects the protocol of expect/deny: h1 (plaintext), tls (HTTP/1.1 over TLS), h2
VIA=h1
base_url() { if [ "$VIA" = h1 ]; then echo "${URL[$1]}"; else echo "${TURL[$1]}"; fi; }
via_args() {
  case $VIA in
    h1) echo --http1.1 ;;
    tls) printf '%s\n' --http1.1 --cacert "$WORK/tls/ca.pem" ;;
    h2) printf '%s\n' --http2 --cacert "$WORK/tls/ca.pem" ;;
  esac
}
VIA_VERSION() { if [ "$VIA" = h2 ]; then echo 2; else echo 1.1; fi; }
# fetch PEER PATH TOKEN [curl args...]: "<status> <HTTP version>", the body in $WORK/got
fetch() {
  local va
  mapfile -t va < <(via_args)
  curl -s -o "$WORK/got" -w '%{http_code} %{http_version}' --max-time 5 "${va[@]}" \
    ${3:+-H "Authorization: Bearer $3"} "${@:4}" "$(base_url "$1")$2" || echo "curl-failed -"
}
# expect PEER WHAT BODY PATH [TOKEN [curl args...]]
expect() {
  local st
  st=$(fetch "$1" "$4" "${5:-}" "${@:6}")
  [ "$st" = "200 $(VIA_VERSION)" ] && cmp -s "$WORK/got" "$WORK/expect/$3" \
    || die "$1 ($VIA): $2: expected the $3 body with 200 over HTTP/$(VIA_VERSION), got \"$st\": $(head -c 60 "$WORK/got" | tr '\n' ' ')"
}
# deny PEER WHAT PATH [TOKEN [curl args...]]: a 403 at the edge, without the protected body
deny() {
  local st
  st=$(fetch "$1" "$3" "${4:-}" "${@:5}")
  [ "$st" = "403 $(VIA_VERSION)" ] && ! grep -qE 'MEDIA-SEGMENT|SIGNED-FILE|SUBSCRIBER-ONLY' "$WORK/got" \
    || die "$1 ($VIA): $2: expected a 403 over HTTP/$(VIA_VERSION), got \"$st\": $(head -c 60 "$WORK/got" | tr '\n' ' ')"
}
# scenario_env SCENARIO FRESH_FILE CMD...: CMD with the tokens.lua environment of the scenario
scenario_env() {
  local s=$1 fresh=$2 peer=${CHECK_PEER:-}; shift 2
  case $s in
    pub1k) env WRK_PATH=/public/article "$@" ;;
    pub100k) env WRK_PATH=/public/big "$@" ;;
    sub1) env WRK_PATH=/premium/article TOKENS_FILE="$WORK/tok/one.txt" "$@" ;;
    rs1) env WRK_PATH=/premium/article TOKENS_FILE="$WORK/tok/rs1.txt" "$@" ;;
    rot10k) env WRK_PATH=/premium/article TOKENS_FILE="$WORK/tok/rot10k.txt" "$@" ;;
    fresh) env WRK_PATH=/premium/article TOKENS_FILE="$fresh" "$@" ;;
    media) env WRK_PATH=/media/segment TOKENS_FILE="$WORK/tok/one.txt" "$@" ;;
    signed) env WRK_PATH="${SIGNED[${peer:-none}]:-/signed/file}" "$@" ;;  # (timed runs pass the URL)
  esac
}
marker() {
  case $(base_of "$1") in
    pub1k) echo PUBLIC-1K ;; pub100k) echo PUBLIC-100K ;; media) echo MEDIA-SEGMENT ;;
    signed) echo SIGNED-FILE ;; *) echo SUBSCRIBER-ONLY ;;
  esac
}
# wrk_check PEER ROW: a short wrk run of the row whose every body must carry its marker
wrk_check() {
  local out base url m
  m=$(marker "$2"); base=$(base_of "$2")
  if [ "$(proto_of "$2")" = tls ]; then url=${TURL[$1]}; else url=${URL[$1]}; fi
  out=$(CHECK_PEER=$([ "$(proto_of "$2")" = tls ] && echo "tls-$1" || echo "$1") \
    scenario_env "$base" "${WORK}/tok/freshcheck.txt" CHECK_BODY="$m" taskset -c 1 wrk -t1 -c50 -d1s \
    -s "$HERE/tokens.lua" "$url") || die "$1/$2: wrk failed"
  [[ $out =~ BODY\ seen=([0-9]+)\ bad=([0-9]+) ]] || die "$1/$2: no body check in wrk output: $out"
  ((BASH_REMATCH[1] > 0 && BASH_REMATCH[2] == 0)) \
    || die "$1/$2 under load: ${BASH_REMATCH[2]} of ${BASH_REMATCH[1]} bodies lack \"$m\""
  [[ $out != *Non-2xx* && $out != *"Socket errors"* ]] || die "$1/$2 under load: errors: $out"
}
# h2_args PEER ROW: the h2load arguments of an HTTP/2 row (after the common ones)
h2_args() {
  local u=${TURL[$1]}
  case $(base_of "$2") in
    pub1k) echo "$u/public/article" ;;
    sub1) printf '%s\n' -H "authorization: Bearer $ONE" "$u/premium/article" ;;
    cookie) printf '%s\n' -H "cookie: token=$ONE" "$u/premium/article" ;;
    media) printf '%s\n' -H "authorization: Bearer $ONE" "$u/media/segment" ;;
    signed) echo "$u${SIGNED[tls-$1]}" ;;
    rot10k)   # one URI per request, a query token each: the first names the peer, the rest are paths
      { echo "$u$(head -1 "$WORK/tok/rot10k.paths")"; tail -n +2 "$WORK/tok/rot10k.paths"; } >"$WORK/tok/rot10k-$1.uris"
      printf '%s\n' -i "$WORK/tok/rot10k-$1.uris" ;;
  esac
}
# h2_parse OUTPUT: die unless an h2load run ended without a failure, over TLS 1.3 and h2; prints
# "<req/s> <requests> <cipher>"
h2_parse() {
  local out=$1 rps n
  [[ $out =~ requests:\ ([0-9]+)\ total,\ [0-9]+\ started,\ ([0-9]+)\ done,\ ([0-9]+)\ succeeded,\ ([0-9]+)\ failed,\ ([0-9]+)\ errored,\ ([0-9]+)\ timeout ]] \
    || return 1
  ((BASH_REMATCH[4] == 0 && BASH_REMATCH[5] == 0 && BASH_REMATCH[6] == 0 && BASH_REMATCH[3] > 0)) || return 1
  n=${BASH_REMATCH[3]}
  # (the 2xx count may exceed "done": it also counts answers that arrived after the deadline)
  [[ $out =~ status\ codes:\ ([0-9]+)\ 2xx,\ 0\ 3xx,\ 0\ 4xx,\ 0\ 5xx ]] && ((BASH_REMATCH[1] >= n)) || return 1
  [[ $out == *"TLS Protocol: TLSv1.3"* && $out == *"Application protocol: h2"* ]] || return 1
  [[ $out =~ finished\ in\ [0-9.]+s,\ ([0-9.]+)\ req/s ]] || return 1
  rps=${BASH_REMATCH[1]}
  [[ $out =~ Cipher:\ ([A-Z0-9_-]+) ]] || return 1
  echo "$rps $n ${BASH_REMATCH[1]}"
}
H2_CIPHER=""
# h2_check PEER ROW: 200 concurrent requests over one HTTP/2 connection (curl --parallel), every
# body compared with the expected one; then a 1 s h2load run of the row without any failure
h2_check() {
  local peer=$1 row=$2 cfg=$WORK/h2check.cfg d=$WORK/h2check i exp out res auth=()
  rm -rf "$d"; mkdir -p "$d"; : >"$cfg"
  case $(base_of "$row") in pub1k) exp=pub1k ;; media) exp=media ;; signed) exp=signed ;; *) exp=full ;; esac
  case $(base_of "$row") in   # (a header in -K is global)
    sub1 | media) auth=(-H "Authorization: Bearer $ONE") ;;
    cookie) auth=(-H "Cookie: token=$ONE") ;;
  esac
  for i in $(seq 200); do
    case $(base_of "$row") in
      pub1k) echo "url = \"${TURL[$peer]}/public/article\"" ;;
      sub1 | cookie) echo "url = \"${TURL[$peer]}/premium/article\"" ;;
      media) echo "url = \"${TURL[$peer]}/media/segment\"" ;;
      signed) echo "url = \"${TURL[$peer]}${SIGNED[tls-$peer]}\"" ;;
      rot10k) echo "url = \"${TURL[$peer]}$(sed -n "$((i * 47))p" "$WORK/tok/rot10k.paths")\"" ;;
    esac >>"$cfg"
    echo "output = \"$d/$i\"" >>"$cfg"
  done
  res=$(curl -s --http2 --cacert "$WORK/tls/ca.pem" --parallel --parallel-max 50 "${auth[@]}" \
    -w '%{http_code} %{http_version}\n' -K "$cfg" 2>/dev/null | sort | uniq -c | awk '{$1=$1; print}') || true
  [ "$res" = "200 200 2" ] || die "$peer/$row: 200 parallel HTTP/2 requests: expected 200 x \"200 2\", got: $res"
  for i in $(seq 200); do cmp -s "$d/$i" "$WORK/expect/$exp" || die "$peer/$row: parallel HTTP/2 request $i: not the $exp body: $(head -c 60 "$d/$i" | tr '\n' ' ')"; done
  mapfile -t args < <(h2_args "$peer" "$row")
  out=$(taskset -c 1 h2load -c50 -m10 -t1 -D1 "${args[@]}" 2>&1) || die "$peer/$row: h2load failed: $(tail -5 <<<"$out")"
  res=$(h2_parse "$out") || die "$peer/$row: the 1 s h2load run had failures, or was not TLS 1.3 + h2: $(grep -E 'TLS|Cipher|Application|requests:|status codes' <<<"$out" | tr '\n' ' ')"
  [ -z "$H2_CIPHER" ] && H2_CIPHER=${res##* }
  [ "${res##* }" = "$H2_CIPHER" ] || die "$peer/$row: h2load negotiated ${res##* }, other peers $H2_CIPHER"
}
serves() {   # serves ROW PEER
  local s; s=$(base_of "$1")
  [ "$(proto_of "$1")" = h1 ] || [[ $TLS_PEERS == *" $2 "* ]] || return 1
  case $s in
    pub*) return 0 ;;
    signed) [ "$2" = tollgate ] ;;     # a CloudFront signature: no peer but Tollgate can verify one
    *) [[ $AUTH_PEERS == *" $2 "* ]] ;;
  esac
}
declare -A TITLE=([pub1k]="public 1 KiB hit, no token" [sub1]="subscriber hit, one ES256 token"
  [cookie]="subscriber hit, one ES256 token in a cookie" [rot10k]="subscriber hit, 10,000 rotating ES256 tokens" [fresh]="subscriber hit, never-seen ES256 token per request"
  [rs1]="subscriber hit, one RS256 token" [pub100k]="100 KiB public object hit"
  [media]="token (media) route hit, one ES256 token" [signed]="signed URL hit (CloudFront canned, P-256)")
title() { case $(proto_of "$1") in h1) echo "${TITLE[$1]}" ;; tls) echo "TLS: ${TITLE[$(base_of "$1")]}" ;; h2) echo "h2: ${TITLE[$(base_of "$1")]}" ;; esac; }

# check_peer PEER: every check of the selected rows over VIA, twice (the first pass fills the cache)
check_peer() {
  local peer=$1 pass t
  for pass in 1 2; do
    expect "$peer" "public 1 KiB" pub1k /public/article
    if [ "$VIA" = h1 ]; then expect "$peer" "public 100 KiB" pub100k /public/big; fi
    if [[ $AUTH_PEERS == *" $peer "* ]]; then
      expect "$peer" "no token" teaser /premium/article
      expect "$peer" "valid ES256 token" full /premium/article "$ONE"
      expect "$peer" "valid ES256 token in the query" full "/premium/article?token=$ONE"
      expect "$peer" "valid ES256 token in a cookie" full /premium/article "" -H "Cookie: a=b; token=$ONE"
      expect "$peer" "a rotating token" full /premium/article "$(head -1 "$WORK/tok/rot10k.txt")"
      expect "$peer" "a rotating token in the query" full "$(sed -n 2p "$WORK/tok/rot10k.paths")"
      if ((pass == 1)); then
        expect "$peer" "valid RS256 token" full /premium/article "$RS1"
        expect "$peer" "token without the premium subscription" teaser /premium/article "$NOT_ENTITLED"
        expect "$peer" "expired token" teaser /premium/article "$EXPIRED"
        expect "$peer" "token signed by an unknown key with a known kid" teaser /premium/article "$OTHER_KEY"
        expect "$peer" "token with a forged signature" teaser /premium/article "$FORGED_SIG"
        expect "$peer" "forged token in the query" teaser "/premium/article?token=$FORGED_SIG"
        expect "$peer" "forged token in a cookie" teaser /premium/article "" -H "Cookie: token=$FORGED_SIG"
        expect "$peer" "forged bearer token beside a valid cookie" teaser /premium/article "$FORGED_SIG" -H "Cookie: token=$ONE"
        expect "$peer" "token with a forged payload" teaser /premium/article "$FORGED_PAYLOAD"
        expect "$peer" "alg=none token" teaser /premium/article "$ALG_NONE"
        expect "$peer" "client-sent x-tollgate-variant" teaser /premium/article "" -H 'x-tollgate-variant: subscriber'
        expect "$peer" "not entitled + client-sent variant" teaser /premium/article "$NOT_ENTITLED" -H 'x-tollgate-variant: subscriber'
      fi
    fi
    if any_row media && [[ $AUTH_PEERS == *" $peer "* ]]; then
      expect "$peer" "media, valid token" media /media/segment "$ONE"
      expect "$peer" "media, valid token in the query" media "/media/segment?token=$ONE"
      if ((pass == 1)); then
        deny "$peer" "media, no token" /media/segment
        deny "$peer" "media, token without the premium subscription" /media/segment "$NOT_ENTITLED"
        deny "$peer" "media, expired token" /media/segment "$EXPIRED"
        deny "$peer" "media, forged signature" /media/segment "$FORGED_SIG"
        deny "$peer" "media, alg=none" /media/segment "$ALG_NONE"
      fi
    fi
    if any_row signed && [ "$peer" = tollgate ]; then
      local key=$peer; [ "$VIA" = h1 ] || key=tls-$peer
      expect "$peer" "signed URL" signed "${SIGNED[$key]}"
      if ((pass == 1)); then
        local u=${SIGNED[$key]} other
        deny "$peer" "signed path without a signature" /signed/file
        deny "$peer" "signed URL with a forged signature" "${u/Signature=/Signature=AAAA}"
        deny "$peer" "signed URL for another path" "${u/\/signed\/file/\/signed\/other}"
        deny "$peer" "signed URL, expired" "$(signed_url "$(base_url "$peer")" /signed/file "" $(($(date +%s) - 10)))"
        deny "$peer" "signed URL, unknown key" "$(signed_url "$(base_url "$peer")" /signed/file "$WORK/other/cf.pem")"
        if [ "$VIA" = h1 ]; then other=${SIGNED[tls-$peer]:-}; else other=${SIGNED[$peer]}; fi
        [ -z "$other" ] || deny "$peer" "signed URL of the other scheme and port" "$other"
      fi
    fi
  done
  # warm hits never reach the origin
  before=$(hits)
  for t in 1 2 3; do
    expect "$peer" "public 1 KiB (warm)" pub1k /public/article
    if [ "$VIA" = h1 ]; then expect "$peer" "public 100 KiB (warm)" pub100k /public/big; fi
  done
  if [[ $AUTH_PEERS == *" $peer "* ]]; then
    expect "$peer" "no token (warm)" teaser /premium/article
    expect "$peer" "ES256 (warm)" full /premium/article "$ONE"
    expect "$peer" "ES256 in the query (warm)" full "/premium/article?token=$ONE"
    expect "$peer" "ES256 in a cookie (warm)" full /premium/article "" -H "Cookie: token=$ONE"
    expect "$peer" "RS256 (warm)" full /premium/article "$RS1"
    any_row media && expect "$peer" "media (warm)" media /media/segment "$ONE"
    while read -r t; do expect "$peer" "a never-seen token (warm object)" full /premium/article "$t"; done <"$WORK/tok/check.txt"
  fi
  if any_row signed && [ "$peer" = tollgate ]; then
    if [ "$VIA" = h1 ]; then t=${SIGNED[$peer]}; else t=${SIGNED[tls-$peer]}; fi
    expect "$peer" "signed URL (warm)" signed "$t"
  fi
  after=$(hits)
  [ "${before%% *}" = "${after%% *}" ] || die "$peer ($VIA): warm hits reached the origin (origin count ${before%% *} -> ${after%% *}); the origin's last requests:"$'\n'"$(tail -n $((${after%% *} - ${before%% *})) "$WORK/origin.log")"
}

# TLS: every TLS peer must negotiate the same version and cipher with OpenSSL's defaults (wrk's)
TLS_SEEN=""
tls_handshake() { # PEER ALPN: "<protocol> <cipher> <alpn>"
  local out
  out=$(openssl s_client -connect "${TURL[$1]#https://}" -alpn "$2" -CAfile "$WORK/tls/ca.pem" -verify_return_error </dev/null 2>&1 | tr -d '\0') \
    || die "$1: TLS handshake failed: $(tail -3 <<<"$out")"
  # "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384", "ALPN protocol: h2"
  awk '/^New, / {p = $2; sub(/,$/, "", p); c = $5} /^ALPN protocol:/ {a = $3} /^No ALPN/ {a = "none"} END {print p, c, a}' <<<"$out"
}

for peer in "${PEERS[@]}"; do
  say "checking $peer"
  VIA=h1; check_peer "$peer"
  for p in tls h2; do
    any_proto "$p" && [[ $TLS_PEERS == *" $peer "* ]] || continue
    VIA=$p; check_peer "$peer"
  done
  VIA=h1
  if [[ $TLS_PEERS == *" $peer "* ]] && { any_proto tls || any_proto h2; }; then
    for alpn in http/1.1 h2; do
      hs=$(tls_handshake "$peer" "$alpn")
      [[ $hs == "TLSv1.3 "*" $alpn" ]] || die "$peer: TLS handshake with ALPN $alpn: expected TLS 1.3 and $alpn, got \"$hs\""
      [ -z "$TLS_SEEN" ] && TLS_SEEN=${hs% *}
      [ "${hs% *}" = "$TLS_SEEN" ] || die "$peer: negotiated \"${hs% *}\", other peers \"$TLS_SEEN\""
    done
  fi
  # the rows under load, every body inspected
  for row in "${ROWS[@]}"; do
    serves "$row" "$peer" || continue
    if [ "$(proto_of "$row")" = h2 ]; then h2_check "$peer" "$row"; else wrk_check "$peer" "$row"; fi
  done
  if any_row rot10k && serves rot10k "$peer"; then warm_rotating "$peer" 5; fi
done
H_START=$(hits)
[ "${H_START#* }" = 0 ] || die "the origin received ${H_START#* } requests carrying a credential"
say "all checks passed; origin count ${H_START%% *}${TLS_SEEN:+; TLS with the OpenSSL defaults of wrk and curl: $TLS_SEEN}${H2_CIPHER:+; h2load: $H2_CIPHER}"

# --- timed runs: ROUNDS x (rows x peers), interleaved --------------------------------------
RAW=$RESULTS/raw.tsv
RETRIED=()
H2_DISTINCT=""
ROT_MISSES=0
# token_misses: Tollgate's token-cache misses so far (each a full signature check, or a refusal)
token_misses() {
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
    | awk '/^tollgate_token_cache_lookups_total\{result="miss"\}/ {print $2; found = 1} END {if (!found) print 0}'
}
printf 'round\tscenario\tpeer\treq_per_s\tp99\trequests\tcpu_ticks\tcpu_us_per_req\tclient_us_per_req\n' >"$RAW"
# wrk_cell PEER ROW ROUND LOG: one timed wrk run; sets rps p99 n, c0 c1 (server CPU ticks) and
# k0 k1 (client CPU µs) around it
wrk_cell() {
  local peer=$1 row=$2 r=$3 log=$4 s url sk out args attempt
  s=$(base_of "$row")
  if [ "$(proto_of "$row")" = tls ]; then url=${TURL[$peer]}; sk=tls-$peer; else url=${URL[$peer]}; sk=$peer; fi
  case $s in                      # static requests: wrk without a Lua request() is fastest
    pub1k) args=("$url/public/article") ;;
    pub100k) args=("$url/public/big") ;;
    sub1) args=(-H "Authorization: Bearer $ONE" "$url/premium/article") ;;
    rs1) args=(-H "Authorization: Bearer $RS1" "$url/premium/article") ;;
    media) args=(-H "Authorization: Bearer $ONE" "$url/media/segment") ;;
    signed) args=("$url${SIGNED[$sk]}") ;;
    *) args=(-s "$HERE/tokens.lua" "$url") ;;
  esac
  for attempt in 1 2 3; do
    c0=$(cpu_ticks "${PGID[$peer]}"); children_us; k0=$CHILD_US
    scenario_env "$s" "$WORK/tok/fresh$r.txt" taskset -c 1 wrk -t1 -c50 -d"${SECS}s" --latency "${args[@]}" >"$log" \
      || die "$peer/$row round $r: wrk failed (see $log)"
    children_us; k1=$CHILD_US; c1=$(cpu_ticks "${PGID[$peer]}")
    out=$(<"$log")
    # Timeouts alone (no error answer, no connect/read/write error) mean the machine stalled
    # (seen here: every peer's rate fell below 1,000/s for ~40 s at once): the cell is run
    # again, at most twice, and the retry is counted under the table. Never for the
    # never-seen run: its tokens were spent. Anything else aborts the run.
    if [[ $s != fresh && $attempt -lt 3 && $out != *Non-2xx* \
      && $out =~ Socket\ errors:\ connect\ 0,\ read\ 0,\ write\ 0,\ timeout\ [1-9] ]]; then
      mv "$log" "${log%.txt}.stalled$attempt.txt"; RETRIED+=("r$r $row $peer")
      say "$peer/$row round $r: timeouts only (machine stall?): running the cell again"
      continue
    fi
    break
  done
  [[ $out == *Non-2xx* || $out == *"Socket errors"* ]] && die "$peer/$row round $r: errors during the run (see $log)"
  if [ "$s" = fresh ]; then
    [[ $out =~ TOKENS\ sent=([0-9]+)\ distinct=([0-9]+) ]] || die "$peer/fresh round $r: no token count (see $log)"
    ((BASH_REMATCH[1] <= BASH_REMATCH[2])) || die "$peer/fresh round $r: sent ${BASH_REMATCH[1]} requests with" \
      "${BASH_REMATCH[2]} never-seen tokens, so some were reused: raise FRESH_RATE (now $FRESH_RATE/s)"
  fi
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1; exit}' <<<"$out")
}
# h2_cell PEER ROW ROUND LOG: one timed h2load run; sets what wrk_cell sets (p99 from h2load's
# per-request log)
h2_cell() {
  local peer=$1 row=$2 r=$3 log=$4 out res args
  mapfile -t args < <(h2_args "$peer" "$row")
  c0=$(cpu_ticks "${PGID[$peer]}"); children_us; k0=$CHILD_US
  taskset -c 1 h2load -c50 -m10 -t1 -D"$SECS" --log-file="$WORK/h2.log" "${args[@]}" >"$log" 2>&1 \
    || die "$peer/$row round $r: h2load failed (see $log)"
  children_us; k1=$CHILD_US; c1=$(cpu_ticks "${PGID[$peer]}")
  out=$(<"$log")
  res=$(h2_parse "$out") || die "$peer/$row round $r: failures during the run, or not TLS 1.3 + h2 (see $log)"
  [ "${res##* }" = "$H2_CIPHER" ] || die "$peer/$row round $r: h2load negotiated ${res##* }, the checks $H2_CIPHER"
  read -r rps n _ <<<"$res"
  # the 99th percentile of "microseconds until the end of the response", 3rd column
  p99=$(cut -f3 "$WORK/h2.log" | sort -n | awk '{a[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2fms", a[i] / 1000}')
  rm -f "$WORK/h2.log"
  if [ "$(base_of "$row")" = rot10k ]; then   # h2load walks the URI list in the same order on every connection
    H2_DISTINCT+=" $peer:$((n / 50 < 10000 ? n / 50 : 10000))"
  fi
}
for r in $(seq "$ROUNDS"); do
  say "round $r/$ROUNDS"
  for row in "${ROWS[@]}"; do
    for ((k = 0; k < ${#PEERS[@]}; k++)); do      # the peer order rotates from round to round
      peer=${PEERS[(k + r - 1) % ${#PEERS[@]}]}
      serves "$row" "$peer" || continue
      log=$RESULTS/wrk/r$r-$row-$peer.txt
      rot=""; if [ "$(base_of "$row")" = rot10k ]; then warm_rotating "$peer" 2; rot=1; fi
      [ -n "$rot" ] && [ "$peer" = tollgate ] && m0=$(token_misses)
      if [ "$(proto_of "$row")" = h2 ]; then h2_cell "$peer" "$row" "$r" "$log"; else wrk_cell "$peer" "$row" "$r" "$log"; fi
      [ -n "$rot" ] && [ "$peer" = tollgate ] && ROT_MISSES=$((ROT_MISSES + $(token_misses) - m0))
      [ -n "$rps" ] && [ -n "$p99" ] && [ -n "$n" ] && ((n > 0)) || die "$peer/$row round $r: no req/s, p99 or request count in the output (see $log)"
      cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
      client=$(awk -v t=$((k1 - k0)) -v n="$n" 'BEGIN {printf "%.2f", t / n}')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$row" "$peer" "$rps" "$p99" "$n" "$((c1 - c0))" "$cpu" "$client" >>"$RAW"
    done
  done
done
H_END=$(hits)

# --- the table -------------------------------------------------------------------------------
{
  echo "benches/peers/run.sh $ROUNDS $SECS (PROTOS=\"${PROTOS[*]}\" SCENARIOS=\"${SCEN_SEL[*]}\") — $(date -u '+%F %H:%M UTC'), $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tollgate $("$BIN" --version | awk '{print $2}') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && echo ', dirty')),"\
    "$(has haproxy "${PEERS[@]}" && haproxy -v | head -1 | awk '{print "HAProxy", $3 ","}')"\
    "$(has nginx "${PEERS[@]}" && nginx -v 2>&1 | sed 's/.*nginx\//nginx /; s/$/,/')"\
    "$(has varnish "${PEERS[@]}" && varnishd -V 2>&1 | head -1 | sed 's/varnishd (\(varnish-[^ ]*\).*/\1,/')"\
    "$(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'), $(h2load --version | awk '{print "h2load", $2}')"
  # Tollgate's large bodies live in memory files: whether the kernel may give them large folios
  # changes the 100 KiB row (src/cache/body_file.rs, LARGE_FOLIOS)
  echo "memory files (Tollgate's bodies of 64 KiB and more): shmem_enabled $(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null || echo '?')"
  echo "cells: median req/s (median p99) and median server CPU µs per request of $ROUNDS x ${SECS}s runs; ratios: Tollgate req/s / peer req/s"
  if [ -n "$TLS_SEEN$H2_CIPHER" ]; then
    echo "TLS: the same P-256 certificate for every peer; negotiated ${TLS_SEEN:+by wrk: $TLS_SEEN}${H2_CIPHER:+${TLS_SEEN:+, }by h2load: TLSv1.3 $H2_CIPHER, ALPN h2}"
  fi
  for row in "${ROWS[@]}"; do printf '%s\t%s\n' "$row" "$(title "$row")"; done | awk -F'\t' -v peers="${PEERS[*]}" -v raw="$RAW" -f "$HERE/table.awk"
  [ -z "$H2_DISTINCT" ] || echo "h2 rotating tokens: distinct tokens used per run (requests / 50 connections, at most 10,000), last round:$H2_DISTINCT"
  echo "origin requests during the timed runs: $((${H_END%% *} - ${H_START%% *})) (must be 0)"
  if has tollgate "${PEERS[@]}" && any_row rot10k; then
    echo "Tollgate token-cache misses during the timed rotating-token cells: $ROT_MISSES (each cell starts warm)"
  fi
  echo "cells run again after a stall (timeouts only): ${#RETRIED[@]}${RETRIED[*]:+ (${RETRIED[*]})}"
} | tee "$RESULTS/table.txt"
echo "raw results: $RESULTS" >&2
[ "${H_END%% *}" = "${H_START%% *}" ] || die "the origin received $((${H_END%% *} - ${H_START%% *})) requests during the timed runs: some runs were not all cache hits"
