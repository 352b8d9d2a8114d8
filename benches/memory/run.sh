#!/usr/bin/env bash
# Memory cost per cached object: Tollgate's memory tier beside Varnish (-s malloc) and HAProxy's
# cache, each filled with the same N distinct objects in the same run (issue 19).
#
#   benches/memory/run.sh [N] [SIZES]        defaults: N=200000, SIZES="200 4096 65536"
#   benches/memory/run.sh --check            quick: N=20000, size 200, Tollgate only
#
# For each size, N is capped so that N x size <= MAX_BODY_BYTES (default 2 GiB): 64 KiB objects
# run with N = 32768. Environment:
#   TOLLGATE_BIN       the binary (default target/release/tollgate; `cargo build --release` if missing)
#   PEERS              subset of "tollgate varnish haproxy" (default all three, in that order)
#   FILL_CONCURRENCY   connections of the fill client (default 64)
#   WARM               objects filled before the baseline reading (default 4 x FILL_CONCURRENCY)
#   MAX_BODY_BYTES     cap on N x size per size (default 2147483648)
#   TOLLGATE_MAX_SIZE  cache.memory.max_size (default 4GiB)
#   RESULTS_DIR        where <UTC timestamp>/ with configs, logs and raw results goes
#                      (default /tmp/tollgate-memory)
#
# Per size, one origin (origin.py: /articles/fill-<i>, SIZE-byte bodies, public, max-age=3600,
# every request counted). Per peer and size: the peer is started fresh on free ports (one worker
# thread where it has such a setting) and, once its RSS is steady, read (RSS at start); WARM
# distinct warm-up objects go through it at the fill's concurrency (connections, threads and
# buffers of that concurrency now exist), and it is read again (RSS before). Then fill.py
# requests each of N distinct paths exactly once through it, every answer a 200 with the right
# body; the origin must have counted exactly N fill requests, N distinct; 200 sampled objects must
# then be cache hits with the right body (Tollgate `Cache-Status: tollgate; hit`, Varnish two ids
# in `X-Varnish`, HAProxy `Age`) and the origin count must not move; the peer's own counters must
# show no eviction; after 2 s the peer is read a third time (RSS after) and stopped.
# "Memory" of a peer is the sum over its processes of VmRSS, plus, for Tollgate, the sealed
# memory files holding >= 64 KiB bodies that are not mapped in (see procmem.py); HAProxy's cache
# is a shared area it reserves and touches entirely at start, so its per-object cost is the
# blocks its entries occupy (from `show cache`) plus its RSS growth. The method and its caveats:
# the closing report of issue 19 / benches/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=../wrk/common.sh
. "$ROOT/benches/wrk/common.sh"       # free_port

die() { echo "run.sh: FAILED: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
usage() { echo "usage: $0 [N] [SIZES]   or   $0 --check" >&2; exit 2; }

if [ "${1:-}" = --check ]; then
  (($# == 1)) || usage
  N=20000; SIZES=200; PEERS_STR=tollgate
else
  N=${1:-200000}; SIZES=${2:-"200 4096 65536"}; PEERS_STR=${PEERS:-tollgate varnish haproxy}
fi
[[ $N =~ ^[1-9][0-9]*$ ]] || usage
read -ra SIZE_LIST <<<"$SIZES"
read -ra PEER_LIST <<<"$PEERS_STR"
((${#SIZE_LIST[@]} && ${#PEER_LIST[@]})) || usage
for s in "${SIZE_LIST[@]}"; do [[ $s =~ ^[1-9][0-9]*$ ]] || die "size '$s' is not a positive number of bytes"; done
C=${FILL_CONCURRENCY:-64}
WARM=${WARM:-$((4 * C))}
MAX_BODY_BYTES=${MAX_BODY_BYTES:-2147483648}
TOLLGATE_MAX_SIZE=${TOLLGATE_MAX_SIZE:-4GiB}
[[ $C =~ ^[1-9][0-9]*$ && $WARM =~ ^[0-9]+$ && $MAX_BODY_BYTES =~ ^[1-9][0-9]*$ ]] \
  || die "FILL_CONCURRENCY, WARM and MAX_BODY_BYTES must be numbers"
RESULTS=${RESULTS_DIR:-/tmp/tollgate-memory}/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS/conf" "$RESULTS/logs"

# --- tools: nothing is installed here --------------------------------------------------------
need() { command -v "$1" >/dev/null || die "$1 not found: apt-get install -y $2"; }
need curl curl; need python3 python3; need setsid util-linux
for p in "${PEER_LIST[@]}"; do
  case $p in
    tollgate) ;;
    varnish) need varnishd varnish; need varnishstat varnish ;;
    haproxy) need haproxy haproxy ;;
    *) die "unknown peer '$p' (PEERS may hold tollgate varnish haproxy)" ;;
  esac
done
BIN=""
if [[ " ${PEER_LIST[*]} " == *" tollgate "* ]]; then
  BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
  if [ ! -x "$BIN" ] && [ -z "${TOLLGATE_BIN:-}" ]; then
    say "no $BIN: cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release"
  fi
  [ -x "$BIN" ] || die "no tollgate binary at $BIN"
  if [ -z "${TOLLGATE_BIN:-}" ] && [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit)" ]; then
    say "warning: $BIN is older than src/ (or Cargo.*): measuring that older build"
  fi
fi

# --- processes: each in its own process group (setsid execs in place: pid = pgid) -----------
WORK=$(mktemp -d /tmp/tollgate-memory-work.XXXXXX)
chmod 755 "$WORK"
declare -a GROUPS_STARTED=()
declare -A STOP_SIGNAL=()
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'; }
stop_group() { # PGID: its stop signal, up to 15 s, then SIGKILL
  local g=$1
  kill -"${STOP_SIGNAL[$g]:-TERM}" -- "-$g" 2>/dev/null || true
  for _ in $(seq 150); do group_alive "$g" || return 0; sleep 0.1; done
  say "process group $g still alive 15 s after SIG${STOP_SIGNAL[$g]:-TERM}: SIGKILL"
  kill -KILL -- "-$g" 2>/dev/null || true
  for _ in $(seq 50); do group_alive "$g" || return 0; sleep 0.1; done
}
CHILD=""
cleanup() {
  local rc=$? g
  set +e
  trap - EXIT INT TERM
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null      # a fill in progress (timeout passes it on)
  for g in "${GROUPS_STARTED[@]}"; do kill -"${STOP_SIGNAL[$g]:-TERM}" -- "-$g" 2>/dev/null; done
  for g in "${GROUPS_STARTED[@]}"; do group_alive "$g" && stop_group "$g"; done
  wait 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start() { # SIGNAL LOG CMD...: CMD in a new process group; its pgid in STARTED
  local sig=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  STARTED=$!
  GROUPS_STARTED+=("$STARTED"); STOP_SIGNAL[$STARTED]=$sig
}
wait_http() { # URL NAME LOG PGID: any HTTP answer within 30 s, the process still alive
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    curl -s -o /dev/null --max-time 1 "$1" && return
    group_alive "$4" || die "$2 exited at start; its log:"$'\n'"$(tail -20 "$3")"
    sleep 0.1
  done
  die "$2 did not answer on $1 within 30 s; its log:"$'\n'"$(tail -20 "$3")"
}
render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv; shift 2
  local expr=()
  for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${expr[@]}" "$tpl" >"$out"
}
# bounded OUT SECONDS CMD...: CMD under `timeout`, its stdout in OUT. It runs in the background and
# is waited for, so that a signal to this script is handled at once, not when CMD ends.
bounded() {
  local out=$1 secs=$2 rc=0; shift 2
  timeout -k 5 "$secs" "$@" >"$out" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
mem() { python3 "$HERE/procmem.py" "$1"; }
jget() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d[sys.argv[2]])' "$1" "$2"; }
wait_steady() { # PGID NAME: until two readings 0.5 s apart differ by < 1 MiB in RSS (deadline 60 s)
  local prev=-1 cur deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    cur=$(jget "$(mem "$1")" rss)
    ((prev >= 0 && (cur - prev < 1048576 && prev - cur < 1048576))) && return
    prev=$cur; sleep 0.5
  done
  die "$2: RSS still changing 60 s after start"
}
metric() { # ADMIN_URL NAME{labels}: the value, or die
  local v
  v=$(curl -sf --max-time 5 "$1/metrics" | awk -v m="$2" '$1 == m {print $2; f = 1} END {exit !f}') \
    || die "tollgate: no $2 in $1/metrics"
  printf '%.0f\n' "$v"
}
haproxy_cache() { # SOCK: "<blocks per entry (most frequent)> <available blocks> <entries listed>"
  python3 - "$1" <<'EOF'
import collections, re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(b"show cache\n")
out = b""
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    out += d
text = out.decode()
avail = re.search(r"available blocks:(\d+)", text)
blocks = collections.Counter(int(b) for b in re.findall(r"\((\d+) blocks\)", text))
print(blocks.most_common(1)[0][0] if blocks else 0, avail.group(1) if avail else -1, sum(blocks.values()))
EOF
}
varnish_stat() { # NAME FIELD: one counter of the varnishd in WORK/NAME
  varnishstat -n "$1" -1 -f "$2" 2>/dev/null | awk -v f="$2" '$1 == f {print $2; x = 1} END {exit !x}' \
    || die "varnishstat -n $1 -f $2"
}

# --- the run ---------------------------------------------------------------------------------
ROWS=$RESULTS/rows.jsonl
: >"$ROWS"
NODE_REV=""
if [ -n "$BIN" ]; then
  # one copy for the whole run: a rebuild of target/release during the run changes nothing here
  cp "$BIN" "$WORK/tollgate"
  NODE_REV="$("$WORK/tollgate" --version | awk '{print $2}'), $BIN built $(date -u -r "$BIN" '+%F %H:%M:%S UTC'), sha256 $(sha256sum "$WORK/tollgate" | cut -c1-12)"
  if [ -z "${TOLLGATE_BIN:-}" ]; then
    NODE_REV+=", tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' with src/ changes' || echo ' (src/ clean now)')"
  fi
  BIN=$WORK/tollgate
fi
say "results in $RESULTS"
for SIZE in "${SIZE_LIST[@]}"; do
  NS=$((MAX_BODY_BYTES / SIZE)); ((NS > N)) && NS=$N
  ((NS > 0)) || die "size $SIZE: MAX_BODY_BYTES=$MAX_BODY_BYTES leaves no object"
  ORIGIN_PORT=$(free_port)
  start TERM "$RESULTS/logs/origin-$SIZE.log" python3 "$HERE/origin.py" "$ORIGIN_PORT" "$SIZE"
  ORIGIN_PG=$STARTED
  ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
  wait_http "$ORIGIN/__stats" origin "$RESULTS/logs/origin-$SIZE.log" "$ORIGIN_PG"
  HEAD_BYTES=$(jget "$(curl -sf "$ORIGIN/__stats")" head_bytes)
  for peer in "${PEER_LIST[@]}"; do
    say "$peer, $NS objects of $SIZE B (warm-up $WARM, concurrency $C)"
    dir=$WORK/$peer-$SIZE; mkdir -p "$dir"
    port=$(free_port); URL="http://127.0.0.1:$port"; log=$RESULTS/logs/$peer-$SIZE.log
    extra="{}"
    case $peer in
      tollgate)
        ADMIN="http://127.0.0.1:$(free_port)"
        render "$HERE/tollgate.yaml.in" "$dir/tollgate.yaml" DIR="$dir" PORT="$port" \
          ADMIN_PORT="${ADMIN##*:}" ORIGIN_PORT="$ORIGIN_PORT" MAX_SIZE="$TOLLGATE_MAX_SIZE"
        "$BIN" check -c "$dir/tollgate.yaml" >"$dir/check.log" 2>&1 || die "tollgate check: $(cat "$dir/check.log")"
        cp "$dir/tollgate.yaml" "$RESULTS/conf/tollgate-$SIZE.yaml"
        start INT "$log" env RUST_LOG=error "$BIN" -c "$dir/tollgate.yaml"      # SIGINT: fast shutdown
        ;;
      varnish)
        # a limit, not a reservation (malloc storage allocates per object): ample for N objects
        VMB=$(((NS * (SIZE + 4096) / 1048576) * 5 / 4 + 64))
        render "$HERE/varnish.vcl.in" "$dir/default.vcl" ORIGIN_PORT="$ORIGIN_PORT"
        cp "$dir/default.vcl" "$RESULTS/conf/varnish-$SIZE.vcl"
        # one thread pool; its threads made at start (a client and a fetch thread per connection)
        TMIN=$((2 * C + 64)); ((TMIN < 100)) && TMIN=100
        TMAX=$((TMIN > 500 ? TMIN : 500))
        VARGS=(-F -j none -n "$dir/n" -a "127.0.0.1:$port" -T none -f "$dir/default.vcl" -s "malloc,${VMB}m"
          -p thread_pools=1 -p thread_pool_min=$TMIN -p thread_pool_max=$TMAX)
        echo "varnishd ${VARGS[*]}" >"$RESULTS/conf/varnishd-$SIZE.args"
        start TERM "$log" varnishd "${VARGS[@]}"
        ;;
      haproxy)
        # HAProxy reserves and touches the whole cache at start, so it is sized to the fill:
        # 1 KiB blocks, ceil((SIZE + 1 KiB) / 1 KiB) per object (an entry is its headers + body)
        need_blocks=$(((NS + WARM) * ((SIZE + 1024 + 1023) / 1024)))
        HMB=$((need_blocks * 11 / 10 / 1024 + 16))
        ((HMB <= 4095)) || die "haproxy: $((NS + WARM)) objects of $SIZE B need a ${HMB} MB cache; 2.6 allows 4095: lower N or MAX_BODY_BYTES"
        render "$HERE/haproxy.cfg.in" "$dir/haproxy.cfg" PORT="$port" ORIGIN_PORT="$ORIGIN_PORT" \
          SOCK="$dir/haproxy.sock" CACHE_MB="$HMB"
        haproxy -c -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 || die "haproxy -c: $(cat "$dir/check.log")"
        cp "$dir/haproxy.cfg" "$RESULTS/conf/haproxy-$SIZE.cfg"
        start TERM "$log" haproxy -db -f "$dir/haproxy.cfg"
        ;;
    esac
    PG=$STARTED
    wait_http "$URL/__up" "$peer" "$log" "$PG"
    wait_steady "$PG" "$peer"
    M_START=$(mem "$PG")
    curl -sf "$ORIGIN/__reset" >/dev/null

    # warm-up: the connections, threads and buffers of this concurrency, before the baseline
    if ((WARM > 0)); then
      bounded "$dir/warm.json" 300 python3 "$HERE/fill.py" fill "$URL" warm 0 "$WARM" "$SIZE" --concurrency "$C" --deadline 240 \
        || die "$peer/$SIZE: warm-up: $(cat "$dir/warm.json")"
    fi
    o=$(curl -sf "$ORIGIN/__stats")
    [ "$(jget "$o" warm_distinct)" = "$WARM" ] && [ "$(jget "$o" warm)" = "$WARM" ] \
      || die "$peer/$SIZE: the origin counted $(jget "$o" warm) warm-up requests for $(jget "$o" warm_distinct) objects, expected $WARM"
    sleep 1
    M_BEFORE=$(mem "$PG")
    case $peer in
      tollgate)
        mb0=$(metric "$ADMIN" 'tollgate_cache_bytes{tier="memory"}'); mo0=$(metric "$ADMIN" 'tollgate_cache_objects{tier="memory"}')
        extra=$(printf '{"metric_bytes_before": %s, "metric_objects_before": %s}' "$mb0" "$mo0") ;;
      varnish) sb0=$(varnish_stat "$dir/n" SMA.s0.g_bytes); extra=$(printf '{"sma_bytes_before": %s}' "$sb0") ;;
      haproxy)
        hc=$(haproxy_cache "$dir/haproxy.sock") || die "haproxy/$SIZE: show cache on $dir/haproxy.sock"
        read -r _ avail0 _ <<<"$hc"
        ((avail0 > 0)) || die "haproxy/$SIZE: no block count in show cache"
        extra=$(printf '{"blocks_total": %s}' "$avail0") ;;
    esac

    # the fill: every object once
    DEADLINE=$((120 + NS / 500))
    bounded "$dir/fill.json" $((DEADLINE + 30)) python3 "$HERE/fill.py" fill "$URL" fill 0 "$NS" "$SIZE" --concurrency "$C" --deadline "$DEADLINE" \
      || die "$peer/$SIZE: the fill did not get $NS correct answers (deadline ${DEADLINE} s): $(cat "$dir/fill.json")"
    fill=$(cat "$dir/fill.json")
    o=$(curl -sf "$ORIGIN/__stats")
    [ "$(jget "$o" fill)" = "$NS" ] && [ "$(jget "$o" fill_distinct)" = "$NS" ] && [ "$(jget "$o" other)" = 0 ] \
      || die "$peer/$SIZE: after the fill the origin counted $(jget "$o" fill) fill requests for $(jget "$o" fill_distinct) objects (and $(jget "$o" other) others), expected $NS each: $o"
    # a sample must now be cache hits, and must not reach the origin
    bounded "$dir/sample.json" 120 python3 "$HERE/fill.py" sample "$URL" "$NS" "$SIZE" "$peer" \
      || die "$peer/$SIZE: sampled objects are not all cache hits: $(cat "$dir/sample.json")"
    sample=$(cat "$dir/sample.json")
    o2=$(curl -sf "$ORIGIN/__stats")
    [ "$(jget "$o2" fill)" = "$NS" ] || die "$peer/$SIZE: the sampled hits reached the origin ($(jget "$o2" fill) fill requests, expected $NS)"
    # no eviction, by the peer's own counters
    case $peer in
      tollgate)
        mo=$(metric "$ADMIN" 'tollgate_cache_objects{tier="memory"}'); mb=$(metric "$ADMIN" 'tollgate_cache_bytes{tier="memory"}')
        ((mo == NS + WARM)) || die "tollgate/$SIZE: tollgate_cache_objects{tier=\"memory\"} = $mo, expected $((NS + WARM)) (evictions?)"
        extra=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(metric_objects=int(sys.argv[2]), metric_bytes=int(sys.argv[3])); print(json.dumps(d))' "$extra" "$mo" "$mb")
        ;;
      varnish)
        nuked=$(varnish_stat "$dir/n" MAIN.n_lru_nuked); failed=$(varnish_stat "$dir/n" SMA.s0.c_fail)
        ((nuked == 0 && failed == 0)) || die "varnish/$SIZE: n_lru_nuked=$nuked SMA.s0.c_fail=$failed: objects were evicted or not stored (raise -s malloc)"
        sb=$(varnish_stat "$dir/n" SMA.s0.g_bytes); nobj=$(varnish_stat "$dir/n" MAIN.n_object)
        extra=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(sma_bytes=int(sys.argv[2]), n_object=int(sys.argv[3]), malloc_mb=int(sys.argv[4])); print(json.dumps(d))' \
          "$extra" "$sb" "$nobj" "$VMB")
        ;;
      haproxy)
        hc=$(haproxy_cache "$dir/haproxy.sock") || die "haproxy/$SIZE: show cache on $dir/haproxy.sock"
        read -r bpe _ listed <<<"$hc"
        ((bpe > 0)) || die "haproxy/$SIZE: show cache lists no entry"
        (((NS + WARM) * bpe <= avail0)) || die "haproxy/$SIZE: $((NS + WARM)) entries of $bpe blocks exceed the $avail0 blocks of the cache: some were evicted"
        extra=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(blocks_per_entry=int(sys.argv[2]), entries_listed=int(sys.argv[3]), cache_mb=int(sys.argv[4])); print(json.dumps(d))' \
          "$extra" "$bpe" "$listed" "$HMB")
        ;;
    esac
    sleep 2
    M_AFTER=$(mem "$PG")
    stop_group "$PG"
    python3 -c 'import json,sys
a = sys.argv
row = dict(peer=a[1], size=int(a[2]), n=int(a[3]), warm=int(a[4]), concurrency=int(a[5]), head_bytes=int(a[6]),
           start=json.loads(a[7]), before=json.loads(a[8]), after=json.loads(a[9]), fill=json.loads(a[10]),
           sample=json.loads(a[11]), **json.loads(a[12]))
print(json.dumps(row))' "$peer" "$SIZE" "$NS" "$WARM" "$C" "$HEAD_BYTES" "$M_START" "$M_BEFORE" "$M_AFTER" "$fill" "$sample" "$extra" >>"$ROWS"
    say "$peer/$SIZE: fill $(jget "$fill" seconds) s; RSS $(($(jget "$M_BEFORE" rss) / 1048576)) -> $(($(jget "$M_AFTER" rss) / 1048576)) MiB"
  done
  stop_group "$ORIGIN_PG"
done

# --- the table -------------------------------------------------------------------------------
{
  echo "benches/memory/run.sh — $(date -u '+%F %H:%M UTC'); $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)),"\
    "$(awk '/^MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), $(ldd --version 2>&1 | sed -n 1p | sed 's/.* //;s/^/glibc /'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  vers=()
  [ -n "$BIN" ] && vers+=("tollgate $NODE_REV")
  [[ " ${PEER_LIST[*]} " == *" varnish "* ]] && vers+=("$(varnishd -V 2>&1 | sed -n 1p | sed 's/varnishd (\(varnish-[^ ]*\).*/\1/')")
  [[ " ${PEER_LIST[*]} " == *" haproxy "* ]] && vers+=("$(haproxy -v | sed -n 1p | awk '{print "HAProxy", $3}')")
  printf 'versions: %s' "${vers[0]}"; for v in "${vers[@]:1}"; do printf '; %s' "$v"; done; echo
  echo "fill: each of N distinct objects once, $C connections, after a warm-up of $WARM objects; N per size capped at $MAX_BODY_BYTES body bytes; Tollgate cache.memory.max_size $TOLLGATE_MAX_SIZE"
  python3 "$HERE/report.py" "$ROWS"
} | tee "$RESULTS/table.txt"
echo "raw results: $RESULTS" >&2
