#!/usr/bin/env bash
# Segment-hit throughput with path tokens vs the same segments public, on one Tollgate node.
#
#   benches/wrk/media.sh [ROUNDS] [SECONDS] [SEGMENT_BYTES]   (defaults: 5 rounds, 10 s, 64 KiB)
#
# Method as benches/wrk/run.sh: node with 1 worker pinned to CPU 0, `wrk -t1 -c50` pinned to CPU 1,
# python3 http.server as origin, correctness checked before timing, scenarios interleaved round
# by round, medians and ratios from the same invocation. The token scenario uses one ES256
# token with `sid` and `paths` in the first path segment (`/<sid>.<jwt>/vod/show/seg.ts`), the
# form a player requests after reading a manifest; its segment cache entry is shared with every
# other viewer's token.
set -euo pipefail
RUNS=${1:-5}
SECS=${2:-10}
SEG=${3:-65536}
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

mkdir -p "$WORK/www/vod/show" "$WORK/www/pub/vod/show"
head -c "$SEG" /dev/urandom > "$WORK/www/vod/show/seg.ts"
cp "$WORK/www/vod/show/seg.ts" "$WORK/www/pub/vod/show/seg.ts"
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
routes:
  - { match: /vod/*, origin: www, access: token, cache: { default_ttl: 1h } }
  - { match: /*, origin: www, access: public, cache: { default_ttl: 1h } }
cache: { memory: { max_size: 64MiB } }
YAML
"$BIN" check -c "$WORK/tollgate.yaml" >/dev/null
RUST_LOG=error taskset -c 0 "$BIN" -c "$WORK/tollgate.yaml" 2>"$WORK/edge.log" &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done

TOK=$("$BIN" token --key "$WORK/keys/bench.pem" --kid bench --sub viewer --sid s-bench --paths /vod/show/ --ttl 2h 2>/dev/null)
BASE="http://127.0.0.1:$EDGE"
TOKEN_URL="$BASE/s-bench.$TOK/vod/show/seg.ts"
PUBLIC_URL="$BASE/pub/vod/show/seg.ts"

for u in "$TOKEN_URL" "$PUBLIC_URL"; do curl -s -o /dev/null "$u"; done
curl -s -D - -o /dev/null "$TOKEN_URL" | grep -qi '^cache-status: tollgate; hit' || { echo "token segment is not a hit" >&2; exit 1; }
curl -s -D - -o /dev/null "$PUBLIC_URL" | grep -qi '^cache-status: tollgate; hit' || { echo "public segment is not a hit" >&2; exit 1; }
curl -s "$TOKEN_URL" | cmp -s - "$WORK/www/vod/show/seg.ts" || { echo "token segment body differs" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/vod/show/seg.ts")
[ "$code" = 403 ] || { echo "segment without a token answered $code, not 403" >&2; exit 1; }

declare -a P_R P_P T_R T_P
for _ in $(seq "$RUNS"); do
  read -r r p <<<"$(wrk_once "$PUBLIC_URL")"; P_R+=("$r"); P_P+=("$p")
  read -r r p <<<"$(wrk_once "$TOKEN_URL")"; T_R+=("$r"); T_P+=("$p")
done
PUB=$(printf '%s\n' "${P_R[@]}" | median); PUBP=$(printf '%s\n' "${P_P[@]}" | median_v)
TOKR=$(printf '%s\n' "${T_R[@]}" | median); TOKP=$(printf '%s\n' "${T_P[@]}" | median_v)
printf '\n%-44s %12s %10s %10s   %s\n' "scenario ($SEG-byte segment)" "req/s (med)" p99 "vs public" runs
printf '%-44s %12s %10s %9.2fx   %s\n' "segment hit, public" "$PUB" "$PUBP" 1 "${P_R[*]}"
printf '%-44s %12s %10s %9.2fx   %s\n' "segment hit, path token (ES256, sid, paths)" "$TOKR" "$TOKP" "$(echo "$TOKR / $PUB" | bc -l)" "${T_R[*]}"
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
