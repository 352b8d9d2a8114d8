#!/usr/bin/env bash
# A real Prometheus scrapes the node's admin listener; PromQL must count exactly the requests sent.
#
#   tests/prometheus.sh [N]     (default N=250; TOLLGATE_BIN=path to use a given binary)
#
# 1. The origin (tests/ops/origin.py) and the node on free ports; N requests through the proxy
#    (misses, hits and 404s), tallied by the client.
# 2. `promtool check metrics` on a scrape of /metrics must print nothing; every SPEC §7 metric
#    name must be there with HELP and TYPE; the duration histograms must have sub-millisecond
#    buckets (le 0.00005 .. 0.001).
# 3. Prometheus (Debian package `prometheus`) with a temp config (scrape every 1 s), temp storage
#    and a free port; `sum(tollgate_requests_total)` over its HTTP API must reach exactly N (it is
#    polled until a scrape after the last request lands; any other value than N or a value
#    above it fails), and `up{job="tollgate"}` must be 1.
# 4. Every query of conf/grafana/tollgate.json ($__rate_interval: 1m, $instance: .*) and every
#    expression of conf/prometheus/alerts.yml must evaluate without error on that Prometheus
#    (evaluation errors such as many-to-many matching, which promtool's parser cannot see), and
#    the request and cache panels must return data.
# Bounded: every wait has a timeout; about 10 s in all.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-250}
for tool in prometheus promtool; do
  command -v $tool >/dev/null || { echo "$tool is needed: apt-get install -y prometheus" >&2; exit 1; }
done
if [ -z "${TOLLGATE_BIN:-}" ]; then (cd "$ROOT" && cargo build -q); fi
BIN=${TOLLGATE_BIN:-$ROOT/target/debug/tollgate}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $*"
    sleep 0.1
  done
}
# promql QUERY: the value of a one-sample instant vector ("" if empty).
promql() {
  curl -sf --data-urlencode "query=$1" "http://127.0.0.1:$PROM/api/v1/query" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}

EDGE=$(free_port); ADMIN=$(free_port); ORIGIN=$(free_port); PROM=$(free_port)
python3 "$ROOT/tests/ops/origin.py" "$ORIGIN" &
PIDS+=($!)
cat > "$WORK/tollgate.yaml" <<YAML
pingora: { threads: 2, pid_file: $WORK/tollgate.pid, upgrade_sock: $WORK/upgrade.sock }
listeners: [ { addr: "127.0.0.1:$EDGE" } ]
admin: { addr: "127.0.0.1:$ADMIN" }
origins: { o: { url: "http://127.0.0.1:$ORIGIN" } }
routes: [ { match: /obj/*, origin: o, access: public } ]
cache: { memory: { max_size: 64MiB } }
YAML
"$BIN" check -c "$WORK/tollgate.yaml" >/dev/null
RUST_LOG=warn "$BIN" -c "$WORK/tollgate.yaml" 2> "$WORK/edge.log" &
PIDS+=($!)
wait_for 20 curl -sf "http://127.0.0.1:$ADMIN/healthz"
wait_for 10 curl -sf "http://127.0.0.1:$ORIGIN/__stats"

# N requests over kept-alive connections: 10 objects (misses, then hits) and every 25th a 404.
python3 - "$EDGE" "$N" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
tally = {}
for i in range(n):
    path = "/nowhere" if i % 25 == 24 else f"/obj/{i % 10}"
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    tally[r.status] = tally.get(r.status, 0) + 1
    if r.getheader("connection", "").lower() == "close":
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
print("sent:", n, "requests;", ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())))
PY

# The node counts a request after its response, so its own total may trail by a moment.
node_total() {
  curl -sf "http://127.0.0.1:$ADMIN/metrics" |
    awk '/^tollgate_requests_total\{/ {s+=$NF} END {printf "%d\n", s}'
}
wait_for 10 bash -c "[ \"\$(curl -sf http://127.0.0.1:$ADMIN/metrics | awk '/^tollgate_requests_total\\{/ {s+=\$NF} END {printf \"%d\", s}')\" = $N ]"
echo "node /metrics: sum of tollgate_requests_total = $(node_total)"

curl -sf "http://127.0.0.1:$ADMIN/metrics" > "$WORK/scrape.txt"
out=$(promtool check metrics < "$WORK/scrape.txt" 2>&1) || fail "promtool check metrics failed: $out"
[ -z "$out" ] || fail "promtool check metrics printed: $out"
echo "promtool check metrics: no output (clean), $(grep -c '^# HELP' "$WORK/scrape.txt") metric families"
for name in tollgate_requests_total tollgate_auth_decisions_total tollgate_request_duration_seconds \
    tollgate_upstream_duration_seconds tollgate_cache_objects tollgate_cache_bytes \
    tollgate_cache_evictions_total tollgate_keys_loaded tollgate_revoked_sessions; do
  grep -q "^# HELP $name [^ ]" "$WORK/scrape.txt" || fail "$name has no HELP text in the scrape"
  grep -q "^# TYPE $name " "$WORK/scrape.txt" || fail "$name has no TYPE in the scrape"
done
for name in tollgate_request_duration_seconds tollgate_upstream_duration_seconds; do
  grep -q "^# TYPE $name histogram$" "$WORK/scrape.txt" || fail "$name is not a histogram"
  for le in 0.00005 0.0001 0.00025 0.0005 0.001; do
    grep -q "^${name}_bucket{.*le=\"$le\"" "$WORK/scrape.txt" || fail "$name has no le=\"$le\" bucket"
  done
done
echo "SPEC §7 names: all present with HELP and TYPE; duration histograms have buckets 0.00005..0.001 s"

cat > "$WORK/prometheus.yml" <<YAML
global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: tollgate
    static_configs: [ { targets: ["127.0.0.1:$ADMIN"] } ]
YAML
promtool check config "$WORK/prometheus.yml" >/dev/null || fail "prometheus config"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
  --web.listen-address="127.0.0.1:$PROM" --log.level=warn 2> "$WORK/prometheus.log" &
PIDS+=($!)
wait_for 30 curl -sf "http://127.0.0.1:$PROM/-/ready"

deadline=$((SECONDS + 30))
while :; do
  v=$(promql 'sum(tollgate_requests_total)' || true)
  [ -n "$v" ] && [ "$v" = "$N" ] && break
  [ -n "$v" ] && awk -v v="$v" -v n="$N" 'BEGIN { exit !(v > n) }' && fail "Prometheus counts $v requests, more than the $N sent"
  [ $SECONDS -lt $deadline ] || fail "Prometheus's sum(tollgate_requests_total) is '${v}', expected $N"
  sleep 0.5
done
up=$(promql 'up{job="tollgate"}')
[ "$up" = 1 ] || fail "up{job=\"tollgate\"} = '$up'"
echo "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'): sum(tollgate_requests_total) = $v (sent $N); up{job=\"tollgate\"} = $up"
curl -sf --data-urlencode 'query=sum by (cache_status, status_class) (tollgate_requests_total)' \
  "http://127.0.0.1:$PROM/api/v1/query" |
  python3 -c 'import json,sys
for r in json.load(sys.stdin)["data"]["result"]:
    print("  ", r["metric"], r["value"][1])'
echo "  requests answered within 1 ms: $(promql 'sum(tollgate_request_duration_seconds_bucket{le="0.001"})')"

# The shipped dashboard's queries (Grafana variables replaced) and alert expressions, evaluated by
# this Prometheus: each must succeed (parse and evaluation errors, e.g. many-to-many matching,
# fail); the traffic and cache ones must return data.
python3 - "$PROM" "$ROOT/conf/grafana/tollgate.json" "$ROOT/conf/prometheus/alerts.yml" <<'PY' || fail "dashboard or alert queries"
import json, re, sys, time, urllib.error, urllib.parse, urllib.request
prom, dash_path, alerts_path = sys.argv[1:]
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
queries = []
for p in panels(json.load(open(dash_path))["panels"]):
    for t in p.get("targets", []):
        e = t["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
        queries.append((f'panel {p["title"]!r} {t["refId"]}', e))
# alerts.yml: every `expr:` (one line, or a `|` block)
lines = open(alerts_path).read().split("\n")
for i, l in enumerate(lines):
    m = re.match(r"^(\s*)expr: (.*)$", l)
    if not m:
        continue
    if m.group(2).strip() == "|":
        block = []
        for l2 in lines[i + 1:]:
            if l2.strip() and len(l2) - len(l2.lstrip()) <= len(m.group(1)):
                break
            block.append(l2)
        expr = "\n".join(block)
    else:
        expr = m.group(2)
    queries.append((f"alert expr at alerts.yml:{i + 1}", expr))
def query(q):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        return json.load(urllib.request.urlopen(url, timeout=10))
    except urllib.error.HTTPError as e:
        return json.load(e)
# rates need two scrapes of the series
deadline = time.time() + 15
while not query("sum(rate(tollgate_requests_total[1m]))")["data"]["result"]:
    if time.time() > deadline:
        print("FAIL: no rate of tollgate_requests_total after 15 s", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
with_data = 0
for name, q in queries:
    r = query(q)
    if r.get("status") != "success":
        print(f"FAIL: {name}: {r.get('error')}: {q}", file=sys.stderr)
        sys.exit(1)
    if r["data"]["result"]:
        with_data += 1
    elif any(k in q for k in ("tollgate_requests_total", "tollgate_cache_bytes", "tollgate_request_duration")) \
            and "5xx" not in q and "evictions" not in q and "alert" not in name:
        print(f"FAIL: {name}: no data: {q}", file=sys.stderr)
        sys.exit(1)
print(f"dashboard and alert queries: {len(queries)} evaluated by Prometheus without error, {with_data} with data")
PY
echo "PASS"
