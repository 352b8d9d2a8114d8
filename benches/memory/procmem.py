#!/usr/bin/env python3
"""Memory of one process group (a peer of benches/memory/run.sh, started with setsid).

    procmem.py PGID

Prints one JSON line, sums over every live process whose process group is PGID (Varnish: the
manager and its child), all in bytes:
  nproc, threads
  rss, anon, file, shmem   VmRSS, RssAnon, RssFile, RssShmem of /proc/<pid>/status
  pss                      Pss of /proc/<pid>/smaps_rollup (shared pages split between the
                           processes that map them: the group's pages counted once)
  memfd_count, memfd_bytes memory files named "tollgate-body" open in the group (Tollgate keeps
                           bodies of >= 64 KiB in sealed memfds, src/cache/body_file.rs) and the
                           sum of their sizes. Their pages are shmem: they are in RssShmem only
                           once touched through a mapping, which the sendfile hit path never
                           does, so VmRSS alone does not see them. No swap here: they are resident.
"""

import json
import os
import sys

pgid = int(sys.argv[1])
tot = dict(nproc=0, threads=0, rss=0, anon=0, file=0, shmem=0, pss=0, memfd_count=0, memfd_bytes=0)
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        if os.getpgid(int(d)) != pgid:
            continue
        with open(f"/proc/{d}/status") as f:
            st = dict(line.split(":", 1) for line in f if ":" in line)
        if st["State"].split()[0] in ("Z", "X"):
            continue
        kb = lambda k: int(st.get(k, "0 kB").split()[0]) * 1024  # noqa: E731
        tot["nproc"] += 1
        tot["threads"] += int(st["Threads"])
        tot["rss"] += kb("VmRSS")
        tot["anon"] += kb("RssAnon")
        tot["file"] += kb("RssFile")
        tot["shmem"] += kb("RssShmem")
        with open(f"/proc/{d}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    tot["pss"] += int(line.split()[1]) * 1024
        for fd in os.listdir(f"/proc/{d}/fd"):
            p = f"/proc/{d}/fd/{fd}"
            try:
                if os.readlink(p).startswith("/memfd:tollgate-body"):
                    tot["memfd_count"] += 1
                    tot["memfd_bytes"] += os.stat(p).st_size
            except OSError:
                pass
    except (OSError, KeyError, ValueError):
        continue      # the process went away while it was read
print(json.dumps(tot))
