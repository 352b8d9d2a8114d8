#!/usr/bin/env bash
# Check systemd/tollgate.service the way systemd would load it, without installing anything:
#
#   systemd/verify.sh [BINARY]        (default: target/release/tollgate, else target/debug/tollgate)
#
# 1. `systemd-analyze verify`: the unit parses and every Exec* binary exists. The unit names
#    /usr/bin/tollgate; a copy in a temp dir points at the built binary instead.
# 2. `systemd-analyze security --offline=true`: the exposure level must be at most 2.5 (MAX_EXPOSURE).
# Needs Debian's `systemd` package (systemd-analyze); no running systemd is required.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAX_EXPOSURE=${MAX_EXPOSURE:-2.5}
BIN=${1:-}
if [ -z "$BIN" ]; then
  for b in "$ROOT/target/release/tollgate" "$ROOT/target/debug/tollgate"; do
    [ -x "$b" ] && { BIN=$b; break; }
  done
fi
if [ -z "$BIN" ]; then (cd "$ROOT" && cargo build -q) && BIN=$ROOT/target/debug/tollgate; fi
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is needed: apt-get install -y systemd" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sed "s#/usr/bin/tollgate#$BIN#g" "$ROOT/systemd/tollgate.service" > "$WORK/tollgate.service"

echo "== systemd-analyze verify (ExecStart=$BIN)"
if ! out=$(systemd-analyze verify "$WORK/tollgate.service" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  echo "FAIL: systemd-analyze verify reported problems" >&2
  exit 1
fi
echo "ok: no problems"

echo "== systemd-analyze security --offline=true"
report=$(systemd-analyze security --offline=true "$WORK/tollgate.service" 2>&1 || true)
echo "$report" | grep -F '✗' || true
level=$(echo "$report" | sed -n 's/.*Overall exposure level for tollgate.service: \([0-9.]*\).*/\1/p')
[ -n "$level" ] || { echo "$report" >&2; echo "FAIL: no exposure level in the report" >&2; exit 1; }
echo "exposure level: $level (must be <= $MAX_EXPOSURE)"
awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }' || { echo "FAIL: exposure $level > $MAX_EXPOSURE" >&2; exit 1; }
echo "ok"
