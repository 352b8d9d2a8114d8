#!/usr/bin/env python3
"""Fleet benchmark (issue 21): how fast a control event reaches the other nodes, and what a
steady flow of control events costs a node's hits.

    benches/fleet/run.py [--events N] [--seconds S] [--rounds R]

Starts its own `nats-server -js` (free port, temporary store), the origin of
benches/peers/origin.py, and three release-built nodes a, b, c (`pingora.threads: 1`) in one
fleet, all on loopback; everything is stopped at the end (by pid).

1. Propagation. N purges, then N revocations, each published with `POST /admin/purge` or
   `POST /admin/revoke` on node a. The clock starts when a's answer (JetStream acknowledged,
   and a applied it) has been read; then nodes b and c are polled over keep-alive connections,
   one after the other and without pause, until the effect shows there: for a revocation, the
   session's subscriber (warmed before the call) gets the teaser; for a purge, the node's
   `tollgate_fleet_last_applied_sequence` (its /metrics) reaches the event's sequence — a node
   records the sequence after the purge is done — and then, untimed, the object warmed there
   before the call must be a miss. (Timing the miss itself would time the origin fetch too.)
   Each (event, node) is one sample: 2 N per kind. Reported: p50, p99, max in ms, overall and
   for the first node polled (the second is usually done by the time it is polled).
2. Hit cost under control traffic. Node a is pinned to CPU 0, wrk (-t1 -c50, 1 KiB public
   hit) and everything else to CPU 1. R rounds of S seconds, alternating: quiet (no events),
   busy (100 purges/s of an unrelated path published straight to NATS with the NATS protocol,
   applied by node a; nodes b and c are stopped for these rounds, so the event source takes
   next to nothing from wrk's core; NATS, which stores and delivers them, still runs there).
   Reported per condition: median req/s and node a's CPU time per request (µs, from
   /proc/<pid>/stat), and busy/quiet ratios. What applying an event costs node a itself is
   measured apart: its CPU time over 10 s idle and over 10 s of 100 events/s (posted to node b's
   admin API, all three nodes up), per event.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from loopback import BIN, ROOT, free_port, percentile, start_nats, wait_port  # noqa: E402
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


class Node:
    def __init__(self, name, work, nats_url, origin_port, keys):
        self.name = name
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.port, self.admin = free_port(), free_port()
        self.token = "bench-admin-token-" + name * 8
        with open(os.path.join(self.dir, "admin.token"), "w") as f:
            f.write(self.token + "\n")
        conf = f"""
pingora: {{ threads: 1, pid_file: {self.dir}/pid, upgrade_sock: {self.dir}/sock,
           grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listeners: [{{ addr: "127.0.0.1:{self.port}" }}]
admin: {{ addr: "127.0.0.1:{self.admin}", token_file: {self.dir}/admin.token }}
origins: {{ www: {{ url: "http://127.0.0.1:{origin_port}" }} }}
keys: {{ jwks_file: {keys}/jwks.json }}
auth: {{ token_sources: [bearer] }}
routes:
  - {{ match: /premium/*, origin: www, access: paywall, require: [premium], cache: {{ default_ttl: 1h }} }}
  - {{ match: /*, origin: www, access: public, cache: {{ default_ttl: 1h }} }}
logging: {{ access_log: false, level: warn }}
state_dir: {self.dir}/state
fleet: {{ node_id: {name}, nats: {{ url: ["{nats_url}"] }} }}
"""
        self.conf = os.path.join(self.dir, "tollgate.yaml")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            [BIN, "-c", self.conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr.log"), "w"),
        )
        wait_port(self.port, f"node {name}", self.proc)
        self.http = http.client.HTTPConnection("127.0.0.1", self.port)
        self.admin_http = http.client.HTTPConnection("127.0.0.1", self.admin)

    def get(self, path, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http.request("GET", path, headers=headers)
        r = self.http.getresponse()
        body = r.read()
        return r.status, r.getheader("cache-status", ""), body

    def post(self, path, body):
        self.admin_http.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        r = self.admin_http.getresponse()
        text = r.read()
        if r.status != 200:
            sys.exit(f"{path} on {self.name}: {r.status} {text!r}")
        return json.loads(text)


def report(kind, samples):
    ms = [x * 1000 for x in samples]
    print(
        f"{kind:<11} samples {len(ms):5d}  p50 {percentile(ms, 50):7.2f} ms  "
        f"p99 {percentile(ms, 99):7.2f} ms  max {max(ms):7.2f} ms"
    )


def until(node, check, start, limit=5.0):
    while True:
        if check(node):
            return time.perf_counter() - start
        if time.perf_counter() - start > limit:
            sys.exit(f"effect not seen on {node.name} within {limit} s")


def applied_seq(node):
    node.admin_http.request("GET", "/metrics")
    r = node.admin_http.getresponse()
    for line in r.read().decode().splitlines():
        if line.startswith("tollgate_fleet_last_applied_sequence "):
            return int(float(line.split()[1]))
    return 0


def propagation(a, others, events, tokens):
    purge_samples, revoke_samples = [], []
    for i in range(events):
        for n in others:
            n.get("/public/article")
            if "hit" not in n.get("/public/article")[1]:
                sys.exit(f"{n.name}: /public/article not a hit before the purge")
        seq = a.post("/admin/purge", {"paths": ["/public/article"]})["seq"]
        start = time.perf_counter()
        for n in others:
            purge_samples.append(until(n, lambda n: applied_seq(n) >= seq, start))
        for n in others:
            if "fwd=miss" not in n.get("/public/article")[1]:
                sys.exit(f"{n.name}: /public/article still cached after purge {seq} was applied")
    report("purge", purge_samples)
    report("  first", purge_samples[0::2])
    for n in others:  # a revoked reader gets the teaser: cached here first, so no origin fetch is timed
        n.get("/premium/article")
    for i in range(events):
        tok = tokens[i]
        for n in others:
            if b"subscriber" not in n.get("/premium/article", tok)[2].lower():
                sys.exit(f"{n.name}: token {i} not a subscriber before the revocation")
        a.post("/admin/revoke", {"sid": f"bench-{i}", "ttl_seconds": 600})
        start = time.perf_counter()
        for n in others:
            revoke_samples.append(
                until(n, lambda n: b"subscriber" not in n.get("/premium/article", tok)[2].lower(), start)
            )
    report("revocation", revoke_samples)
    report("  first", revoke_samples[0::2])


class RawPublisher:
    """Publishes control events with the NATS protocol itself (`PUB subject len`): JetStream
    stores whatever is published on the stream's subjects, so this is an event source that
    costs almost nothing — unlike the admin API of another node, whose CPU would be taken from
    the client on the shared core."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.recv(4096)  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def post(self, _path, _body):
        payload = b'{"kind":"purge","paths":["/public/unrelated"]}'
        self.sock.sendall(b"PUB tollgate.control.purge %d\r\n%s\r\n" % (len(payload), payload))


def wrk_round(a, seconds, busy, poster):
    stop = threading.Event()
    posted = [0]

    def post_loop():
        period, nxt = 0.01, time.perf_counter()
        while not stop.is_set():
            poster.post("/admin/purge", {"paths": ["/public/unrelated"]})
            posted[0] += 1
            nxt += period
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    t = threading.Thread(target=post_loop) if busy else None
    if t:
        t.start()
    c0 = cpu_ticks(a.proc.pid)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{seconds}s",
         f"http://127.0.0.1:{a.port}/public/article"],
        capture_output=True, text=True, check=True,
    ).stdout
    c1 = cpu_ticks(a.proc.pid)
    stop.set()
    if t:
        t.join()
    reqs = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit("wrk saw errors:\n" + out)
    return reqs / seconds, (c1 - c0) / CLK_TCK * 1e6 / reqs, posted[0] / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--perf", help="perf record node a (-g) into this file while the events flow")
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    work = tempfile.mkdtemp(prefix="tollgate-fleet-bench-")
    procs = []
    try:
        nats, nats_port, nats_bin = start_nats(os.path.join(work, "js"), cpu=1)
        procs.append(nats)
        origin_port = free_port()
        origin = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, os.path.join(ROOT, "benches/peers/origin.py"), str(origin_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(origin)
        wait_port(origin_port, "origin", origin)
        keys = os.path.join(work, "keys")
        subprocess.run([BIN, "keygen", "--kid", "es", "--out", keys], check=True, capture_output=True)
        nodes = []
        for name in ("a", "b", "c"):
            n = Node(name, work, f"nats://127.0.0.1:{nats_port}", origin_port, keys)
            procs.append(n.proc)
            nodes.append(n)
        a, b, c = nodes
        subprocess.run(["taskset", "-pc", "0", str(a.proc.pid)], check=True, capture_output=True)
        for n in (b, c):
            subprocess.run(["taskset", "-pc", "1", str(n.proc.pid)], check=True, capture_output=True)
        tokens = []
        for i in range(args.events):
            tokens.append(subprocess.run(
                [BIN, "token", "--key", f"{keys}/es.pem", "--kid", "es", "--subs", "premium",
                 "--sid", f"bench-{i}", "--ttl", "1h"],
                check=True, capture_output=True, text=True,
            ).stdout.strip())
        print(f"# {args.events} events per kind; nodes a, b, c; NATS {nats_bin}")
        propagation(a, (b, c), args.events, tokens)

        a.get("/public/article")
        t0 = cpu_ticks(a.proc.pid)
        time.sleep(10)
        idle = cpu_ticks(a.proc.pid) - t0
        stop = threading.Event()
        count = [0]

        def flow():
            nxt = time.perf_counter()
            while not stop.is_set():
                b.post("/admin/purge", {"paths": ["/public/unrelated"]})
                count[0] += 1
                nxt += 0.01
                d = nxt - time.perf_counter()
                if d > 0:
                    time.sleep(d)

        t = threading.Thread(target=flow)
        t0 = cpu_ticks(a.proc.pid)
        t.start()
        if args.perf:
            subprocess.run(["perf", "record", "-q", "-g", "-p", str(a.proc.pid), "-o", args.perf,
                            "--", "sleep", "10"], check=True, capture_output=True)
        else:
            time.sleep(10)
        stop.set()
        t.join()
        busy = cpu_ticks(a.proc.pid) - t0
        per_event = (busy - idle) / CLK_TCK * 1e6 / max(count[0], 1)
        print(
            f"node a CPU over 10 s: idle {idle / CLK_TCK * 1e3:.0f} ms, "
            f"{count[0]} events {busy / CLK_TCK * 1e3:.0f} ms → {per_event:.0f} µs per event applied"
        )
        # the hit rounds: only node a, NATS and the raw publisher; b and c stop, so that busy
        # rounds take next to nothing from wrk's core
        for n in (b, c):
            n.proc.send_signal(signal.SIGKILL)
            n.proc.wait(5)
        raw = RawPublisher(nats_port)
        results = {"quiet": [], "busy": []}
        for r in range(args.rounds):
            for cond in ("quiet", "busy"):
                rps, cpu, rate = wrk_round(a, args.seconds, cond == "busy", raw)
                results[cond].append((rps, cpu))
                print(f"round {r} {cond:<5} {rps:10.0f} req/s  {cpu:6.2f} µs CPU/req  events {rate:5.1f}/s")
        a.admin_http.request("GET", "/metrics")
        metrics = a.admin_http.getresponse().read().decode()
        applied = next(
            (l.split()[-1] for l in metrics.splitlines()
             if l.startswith('tollgate_fleet_events_applied_total{kind="purge"}')),
            "?",
        )
        print(f"node a applied {applied} purge events in all (the busy rounds' included)")
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in results.items()}
        print(
            f"hits: quiet {med['quiet'][0]:.0f} req/s {med['quiet'][1]:.2f} µs; "
            f"busy {med['busy'][0]:.0f} req/s {med['busy'][1]:.2f} µs; "
            f"throughput ratio busy/quiet {med['busy'][0] / med['quiet'][0]:.3f}, "
            f"CPU per hit ratio {med['busy'][1] / med['quiet'][1]:.3f}"
        )
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
                p.wait(5)
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
