# Shared helpers of the wrk scripts (sourced, not run).
#
# free_port      a free TCP port on 127.0.0.1
# wrk_once ARGS  one wrk run (1 thread, ${WRK_CONNECTIONS:-50} connections, pinned to CPU 1, $SECS seconds) printing
#                "req/s p99"; aborts the script on any non-2xx answer or socket error
# median         median of numbers on stdin; median_v the same for values with units (p99)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wrk_once() {
  local out; out=$(taskset -c 1 wrk -t1 -c"${WRK_CONNECTIONS:-50}" -d"${SECS}s" --latency "$@")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "errors during a run:" >&2; echo "$out" >&2; exit 1; fi
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}')"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
median_v() { sort -V | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
