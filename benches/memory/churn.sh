#!/usr/bin/env bash
# Purge churn (issue 19): 2 GiB of 1 MiB objects filled and purged over and over for 60 s
# through a 256 MiB memory tier; the node's memory must stay below 1.5 x max_size + 24 MiB.
#
#   benches/memory/churn.sh [SECONDS] [MAX_SIZE] [ROUND]     (defaults: 60 256MiB 2GiB)
#
# Method: tests/memory.rs `purge_churn_gives_memory_back` on a release build (its CI run is the
# same test at 5 s through 64 MiB). Each round GETs ROUND bytes of distinct 1 MiB objects
# through the edge (8 at a time; the origin is the test's own), then purges them all with one
# POST /admin/purge prefix; the node's memory is read after every fill and every purge: VmRSS
# minus RssShmem, plus the whole size of the memory files it holds (bodies of 64 KiB and more
# live in sealed memfds that VmRSS does not see). Printed: rounds, objects purged, and the peak
# growth over the start.
set -euo pipefail
SECONDS_=${1:-60}
MAX=${2:-256MiB}
ROUND=${3:-2GiB}
cd "$(dirname "$0")/../.."
echo "benches/memory/churn.sh: $(date -u '+%F %H:%M UTC'), $(nproc) cores, commit $(git rev-parse --short HEAD)"
TOLLGATE_CHURN_SECONDS=$SECONDS_ TOLLGATE_CHURN_MAX=$MAX TOLLGATE_CHURN_ROUND=$ROUND \
  cargo test --release --test memory purge_churn_gives_memory_back -- --nocapture 2>&1 |
  grep -E "rounds of|test result|panicked|RSS grew"
