#!/usr/bin/env python3
"""The table of benches/memory/run.sh, from its rows.jsonl (one JSON object per peer and size).

    report.py ROWS.jsonl

Per peer and size (bytes per object are over the N objects of the fill, not the warm-up):
  RSS start/before/after   sum of VmRSS over the peer's processes (MiB): fresh, after the
                           warm-up, after the fill
  dRSS/obj                 (RSS after - RSS before) / N
  cost/obj                 what an object costs the peer:
                             tollgate  dRSS/obj plus the growth of its memory files that are not
                                       mapped in (bodies >= 64 KiB, procmem.py); = dRSS/obj below 64 KiB
                             varnish   dRSS/obj (its malloc storage allocates per object)
                             haproxy   dRSS/obj + blocks per entry x bytes per block: its cache is a
                                       shared area reserved and touched in full at start (in RSS
                                       start), so RSS does not grow with objects; the blocks an entry
                                       takes are its cost
  own/obj                  the peer's own account per object: tollgate_cache_bytes{tier="memory"},
                           Varnish SMA.s0.g_bytes (its storage's bytes outstanding), HAProxy
                           blocks x 1,024 data bytes
  cost/(body+head)         cost/obj over the body plus the origin's response head
"""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
MiB = 1 << 20


def held(m):
    """RSS plus memory files not (or not fully) mapped in: their pages are resident shmem."""
    return m["rss"] + max(0, m["memfd_bytes"] - m["shmem"])


def block_bytes(r):
    """HAProxy: bytes per cache block, the shared area (RssShmem at start) over its blocks."""
    return r["start"]["shmem"] / r["blocks_total"]


for r in rows:
    n = r["n"]
    r["drss"] = (r["after"]["rss"] - r["before"]["rss"]) / n
    if r["peer"] == "tollgate":
        r["cost"] = (held(r["after"]) - held(r["before"])) / n
        r["own"] = (r["metric_bytes"] - r["metric_bytes_before"]) / n
    elif r["peer"] == "varnish":
        r["cost"] = r["drss"]
        r["own"] = (r["sma_bytes"] - r["sma_bytes_before"]) / n
    elif r["peer"] == "haproxy":
        r["cost"] = r["drss"] + r["blocks_per_entry"] * block_bytes(r)
        r["own"] = r["blocks_per_entry"] * 1024
    r["bh"] = r["size"] + r["head_bytes"]

hdr = ("peer", "size B", "N", "RSS start", "before", "after MiB", "dRSS/obj", "cost/obj", "own/obj",
       "cost/(body+head)", "fill s")
fmt = "{:<9} {:>6} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8} {:>16} {:>7}"
print(fmt.format(*hdr))
for r in rows:
    print(fmt.format(r["peer"], r["size"], r["n"], f"{r['start']['rss'] / MiB:.0f}", f"{r['before']['rss'] / MiB:.0f}",
                     f"{r['after']['rss'] / MiB:.0f}", f"{r['drss']:.0f}", f"{r['cost']:.0f}", f"{r['own']:.0f}",
                     f"{r['cost'] / r['bh']:.2f}x", f"{r['fill']['seconds']:.1f}"))

print()
by = {(r["peer"], r["size"]): r for r in rows}
sizes = sorted({r["size"] for r in rows})
for size in sizes:
    t = by.get(("tollgate", size))
    if not t:
        continue
    parts = [f"size {size} B: Tollgate cost/obj {t['cost']:.0f} B = {t['cost'] / t['bh']:.2f}x body+head ({t['bh']} B),"
             f" {t['cost'] / t['own']:.2f}x its tollgate_cache_bytes per object ({t['own']:.0f} B)"]
    for peer in ("varnish", "haproxy"):
        p = by.get((peer, size))
        if p:
            parts.append(f"Tollgate/{'Varnish' if peer == 'varnish' else 'HAProxy'} {t['cost'] / p['cost']:.2f}x")
    print("; ".join(parts))

targets = []
t, v = by.get(("tollgate", 200)), by.get(("varnish", 200))
if t and v:
    ok = t["cost"] <= v["cost"]
    targets.append(f"  200 B objects, Tollgate per-object RSS <= 1.0x Varnish: {t['cost'] / v['cost']:.2f}x -> {'met' if ok else 'NOT met'}")
t = by.get(("tollgate", 65536))
if t:
    ok = t["cost"] <= 1.10 * t["bh"]
    targets.append(f"  64 KiB objects, Tollgate within 10 % of body + head: {t['cost'] / t['bh']:.2f}x -> {'met' if ok else 'NOT met'}")
t = by.get(("tollgate", 200))
if t and t["n"] >= 1_000_000:
    ok = t["after"]["rss"] <= 1.5e9
    targets.append(f"  {t['n']:,} objects of 200 B, Tollgate RSS <= 1.5 GB: {t['after']['rss'] / 1e9:.2f} GB -> {'met' if ok else 'NOT met'}")
if targets:
    print()
    print("issue 19 targets:")
    print("\n".join(targets))

print()
print("details:")
for r in rows:
    b, a, s = r["before"], r["after"], r["start"]
    line = (f"  {r['peer']}/{r['size']}: processes {a['nproc']}, threads {s['threads']} -> {b['threads']} -> {a['threads']};"
            f" PSS growth/obj {(a['pss'] - b['pss']) / r['n']:.0f} B; RssAnon growth/obj {(a['anon'] - b['anon']) / r['n']:.0f} B;"
            f" (after - start) / (N + warm-up) {(held(a) - held(s)) / (r['n'] + r['warm']):.0f} B;"
            f" sample {r['sample']['hits']}/{r['sample']['checked']} hits")
    if r["peer"] == "tollgate":
        line += (f"; tollgate_cache_objects {r['metric_objects']} (= N + warm-up), bytes {r['metric_bytes']};"
                 f" memory files {a['memfd_count']} ({a['memfd_bytes'] / MiB:.0f} MiB, RssShmem {a['shmem'] / MiB:.0f} MiB)")
    elif r["peer"] == "varnish":
        line += f"; -s malloc,{r['malloc_mb']}m; SMA.s0.g_bytes {r['sma_bytes']}; MAIN.n_object {r['n_object']}"
    elif r["peer"] == "haproxy":
        line += (f"; cache {r['cache_mb']} MB = {r['blocks_total']} blocks of {block_bytes(r):.0f} B (RssShmem at start"
                 f" {s['shmem'] / MiB:.0f} MiB); {r['blocks_per_entry']} blocks per entry; show cache listed"
                 f" {r['entries_listed']} of {r['n'] + r['warm']} entries")
    print(line)
