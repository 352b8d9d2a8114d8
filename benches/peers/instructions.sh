#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Tollgate's instructions per request, row by row, counted by callgrind: a figure that does not
# move with the machine. run.sh's req/s and CPU µs are what the targets are stated in, but on a
# shared or slow machine one cell of one build can vary by a third from round to round (issue 20
# closing notes), and a client-bound row hides the server; this shows what the server itself
# does per request, so rows and builds can be compared exactly.
#
#   benches/peers/instructions.sh [REQUESTS]       (default 20000 per row)
#
# Environment: TOLLGATE_BIN (skip `cargo build --release`), PROTOS (subset of "h1 tls h2").
#
# Method: run.sh's Tollgate (benches/peers/tollgate.yaml.in, one worker) and origin, the node
# under `valgrind --tool=callgrind` (no cache simulation: instructions, not cache misses, so the
# rotating row's cost in memory is still run.sh's to show). Every row is first warmed (one
# connection through all 10,000 rotating tokens), then measured twice with `h2load -c10`, as
# run.sh loads it (HTTP/1.1 rows with `--h1`, one request at a time per connection, as wrk; HTTP/2
# rows 10 streams per connection): 10 requests, then REQUESTS, callgrind's counters zeroed
# before each and dumped after. The first run's count is taken from the second's (connection
# setup and TLS handshakes, the same in both), and the rest divided by REQUESTS - 10. h2load
# starts every connection at the top of the rotating list, so a row of REQUESTS sends
# REQUESTS/10 distinct tokens in turn on each. Every answer must be a 2xx (h2load's status
# counts), and each row's body is checked with curl first.
set -euo pipefail
N=${1:-20000}
if ! [[ $N =~ ^[1-9][0-9]*$ ]] || ((N <= 100)); then echo "usage: $0 [REQUESTS > 100]" >&2; exit 2; fi
read -ra PROTOS <<<"${PROTOS:-h1 tls h2}"
for p in "${PROTOS[@]}"; do [[ $p =~ ^(h1|tls|h2)$ ]] || { echo "PROTOS may hold h1 tls h2, not $p" >&2; exit 2; }; done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=../wrk/common.sh
. "$ROOT/benches/wrk/common.sh"       # free_port
die() { echo "instructions.sh: FAILED: $*" >&2; exit 1; }
for t in valgrind callgrind_control h2load openssl curl python3; do
  command -v "$t" >/dev/null || die "needs $t (Debian: valgrind, nghttp2-client, openssl, curl, python3)"
done
if [ -n "${TOLLGATE_BIN:-}" ]; then BIN=$TOLLGATE_BIN; else
  (cd "$ROOT" && cargo build --release --quiet); BIN=$ROOT/target/release/tollgate
fi
[ -x "$BIN" ] || die "no tollgate binary at $BIN"

WORK=$(mktemp -d /tmp/tollgate-instructions.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- keys, certificate, tokens, configuration (as run.sh) -------------------------------------
mkdir -p "$WORK/keys" "$WORK/tls"
"$BIN" keygen --alg ES256 --kid es --out "$WORK/keys" >/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/keys/cf.pem" 2>/dev/null
openssl pkey -in "$WORK/keys/cf.pem" -pubout -out "$WORK/keys/cf.pub.pem" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -keyout "$WORK/tls/leaf.key" -out "$WORK/tls/leaf.pem" >/dev/null 2>&1 || die "openssl: the certificate"
openssl rand -hex 24 >"$WORK/admin.token"
PORT=$(free_port); TLS_PORT=$(free_port); ADMIN_PORT=$(free_port); ORIGIN_PORT=$(free_port)
sed -e "s|@DIR@|$WORK|g" -e "s|@PORT@|$PORT|g" -e "s|@TLS_PORT@|$TLS_PORT|g" \
  -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" -e "s|@KEYS@|$WORK/keys|g" \
  -e "s|@TLS_CERT@|$WORK/tls/leaf.pem|g" -e "s|@TLS_KEY@|$WORK/tls/leaf.key|g" \
  "$HERE/tollgate.yaml.in" >"$WORK/node.yaml"
ONE=$("$BIN" token --kid es --key "$WORK/keys/es.pem" --sub u1 --ttl 1d --subs premium)
"$BIN" token --kid es --key "$WORK/keys/es.pem" --sub u1 --ttl 1d --subs premium --count 10000 \
  | sed 's|^|/premium/article?token=|' >"$WORK/rot.paths"

# --- origin, and the node under callgrind -----------------------------------------------------
python3 "$HERE/origin.py" "$ORIGIN_PORT" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" -c "$WORK/node.yaml" \
  >"$WORK/node.log" 2>&1 &
NODE=$!
PIDS+=("$NODE")
for _ in $(seq 600); do
  curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/public/article" && break
  kill -0 "$NODE" 2>/dev/null || die "the node under valgrind exited: $(tail -5 "$WORK/node.log")"
  sleep 0.2
done
curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/public/article" || die "the node did not come up"

# base URL of a protocol, and the h2load arguments of a row after it
base() { case $1 in h1) echo "http://127.0.0.1:$PORT" ;; *) echo "https://127.0.0.1:$TLS_PORT" ;; esac; }
proto_args() { case $1 in h2) echo -m10 ;; *) printf '%s\n' --h1 -m1 ;; esac; }
ROWS=(pub1k sub1 cookie rot10k media)
row_args() { # PROTO ROW: h2load arguments, one per line
  local u; u=$(base "$1")
  case $2 in
    pub1k) echo "$u/public/article" ;;
    sub1) printf '%s\n' -H "authorization: Bearer $ONE" "$u/premium/article" ;;
    cookie) printf '%s\n' -H "cookie: token=$ONE" "$u/premium/article" ;;
    media) printf '%s\n' -H "authorization: Bearer $ONE" "$u/media/segment" ;;
    rot10k)   # one URI per request: the first names the node, the rest are paths
      { echo "$u$(head -1 "$WORK/rot.paths")"; tail -n +2 "$WORK/rot.paths"; } >"$WORK/rot-$1.uris"
      printf '%s\n' -i "$WORK/rot-$1.uris" ;;
  esac
}
marker() { case $1 in pub1k) echo PUBLIC-1K ;; media) echo MEDIA-SEGMENT ;; *) echo SUBSCRIBER-ONLY ;; esac; }
# load N PROTO ROW [CONNECTIONS]: h2load, N requests over 10 connections; dies unless all were
# 2xx
load() {
  local out args
  mapfile -t args < <(proto_args "$2"; row_args "$2" "$3")
  out=$(h2load -n "$1" -c"${4:-10}" -t1 "${args[@]}" 2>&1) || die "$2/$3: h2load: $(tail -3 <<<"$out")"
  [[ $out == *"status codes: $1 2xx"* ]] || die "$2/$3: not every answer was a 2xx: $(grep -E 'requests:|status codes' <<<"$out" | tr '\n' ' ')"
}
# dump NAME K: the counters since they were zeroed, dumped (callgrind's K-th dump, cg.out.K);
# prints the instructions counted
dump() {
  callgrind_control -d "$1" "$NODE" >/dev/null 2>&1
  [ -s "$WORK/cg.out.$2" ] || die "callgrind wrote no dump $WORK/cg.out.$2"
  local n; n=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.out.$2")
  [[ $n =~ ^[0-9]+$ ]] || die "no instruction total in $WORK/cg.out.$2"
  echo "$n"
}

echo "== checking and warming every row (the rotating tokens: one pass each)" >&2
for proto in "${PROTOS[@]}"; do
  for row in "${ROWS[@]}"; do
    u=$(base "$proto"); m=$(marker "$row")
    case $row in
      pub1k) body=$(curl -sk "$u/public/article") ;;
      sub1 | rot10k) body=$(curl -sk -H "authorization: Bearer $ONE" "$u/premium/article") ;;
      cookie) body=$(curl -sk -H "cookie: token=$ONE" "$u/premium/article") ;;
      media) body=$(curl -sk -H "authorization: Bearer $ONE" "$u/media/segment") ;;
    esac
    [[ $body == *"$m"* ]] || die "$proto/$row: the body lacks \"$m\": ${body:0:80}"
    if [ "$row" = rot10k ]; then load 10000 "$proto" "$row" 1; else load 200 "$proto" "$row"; fi
  done
done

# yields: the node's tollgate_fast_path_yields_total over the row: HTTP/1 answers whose decision
# checked a signature in full (FastHit::checked_in_full), each written after a trip through
# tokio's scheduler. Every row is warm, so it must be 0; a row with yields counted signature
# checks. (Until a decision's slowness was judged by the clock, callgrind's ~50-fold slowdown made
# cached decisions pass for slow ones, and those rows' counts varied with it.)
yields() {
  curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" \
    | awk '/^tollgate_fast_path_yields_total/ {print $2; found = 1} END {if (!found) print 0}'
}
printf '%-6s %-8s %14s %12s %8s\n' proto row "instr/req" "/public" yields
declare -A PER
dumps=0
for proto in "${PROTOS[@]}"; do
  for row in "${ROWS[@]}"; do
    callgrind_control -z "$NODE" >/dev/null 2>&1
    load 10 "$proto" "$row"
    dumps=$((dumps + 1))
    fixed=$(dump "$proto-$row-setup" "$dumps")
    before=$(yields)
    callgrind_control -z "$NODE" >/dev/null 2>&1
    load "$N" "$proto" "$row"
    dumps=$((dumps + 1))
    all=$(dump "$proto-$row" "$dumps")
    PER[$proto-$row]=$(((all - fixed) / (N - 10)))
    yielded=$(($(yields) - before))
    printf '%-6s %-8s %14d %12s %8d\n' "$proto" "$row" "${PER[$proto-$row]}" \
      "$(awk -v a="${PER[$proto-$row]}" -v b="${PER[$proto-pub1k]}" 'BEGIN {printf "%.2fx", b / a}')" \
      "$yielded"
    ((yielded == 0)) || die "$proto/$row: $yielded answers checked a signature: the row was not warm"
  done
done
echo "(/public: the protocol's public hit's instructions over the row's, as run.sh's ratios are" \
  "req/s over req/s; $N requests a row, $(nproc) cores, $(uname -r), $("$BIN" --version 2>/dev/null | head -1))"
