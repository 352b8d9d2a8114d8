#!/usr/bin/env python3
"""Shield benchmark (issue 22): origin requests with and without the shield tier, and what the
extra hop costs a miss.

    benches/shield/run.py [--objects N]

Starts its own `nats-server -js` (free port, temporary store), an origin (below: any path, 1 KiB,
`Cache-Control: public, max-age=3600`, one write per answer with TCP_NODELAY, counting
requests), and three release-built nodes a, b, c (`pingora.threads: 1`) in one fleet whose
`fleet.peers` ring them, all on loopback with `Host: news.example`. Everything is stopped at the
end (by pid).

Two phases, each on fresh nodes and fresh object names:

1. `shield: { enabled: true }`. N objects are asked of every node (3 N requests, sequential,
   keep-alive). Reported: origin requests (target: N). Then N more objects, each asked of node a
   once, timed from the request's first byte to the answer's last: misses a answered from the
   origin itself (it owns the key: `Cache-Status` without `fwd-peer`) and misses it filled
   through the owner (`fwd-peer=...`), p50 and p99 of each.
2. `shield: { enabled: false }`: the same 3 N asks (origin requests: 3 N), and N timed misses
   through node a (all direct): the baseline for the two above.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from loopback import BIN, ROOT, free_port, percentile, start_nats, wait_port  # noqa: E402
HOST = "news.example"
COUNT = {"n": 0}
LOCK = threading.Lock()


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        with LOCK:
            COUNT["n"] += 1
        body = (self.path + "\n").encode().ljust(1024, b".")
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            "Cache-Control: public, max-age=3600\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)

    def log_message(self, *args):
        pass


def start_nodes(work, phase, shield, nats_url, origin_port, secret):
    ports = {n: (free_port(), free_port()) for n in "abc"}
    peers = "\n".join(
        f'    - {{ id: {n}, addr: "127.0.0.1:{p[0]}" }}' for n, p in ports.items()
    )
    procs = {}
    for n, (port, admin) in ports.items():
        d = os.path.join(work, f"{phase}-{n}")
        os.makedirs(d)
        with open(os.path.join(d, "t.yaml"), "w") as f:
            f.write(f"""
pingora: {{ threads: 1, pid_file: {d}/pid, upgrade_sock: {d}/sock, grace_period_seconds: 0,
           graceful_shutdown_timeout_seconds: 1 }}
listeners: [{{ addr: "127.0.0.1:{port}" }}]
origins: {{ www: {{ url: "http://127.0.0.1:{origin_port}" }} }}
routes: [{{ match: /*, origin: www, access: public, cache: {{ default_ttl: 1h }} }}]
logging: {{ access_log: false, level: warn }}
state_dir: {d}/state
fleet:
  node_id: {n}
  nats: {{ url: ["{nats_url}"] }}
  secret_file: {secret}
  shield: {{ enabled: {"true" if shield else "false"} }}
  peers:
{peers}
""")
        procs[n] = subprocess.Popen(
            [BIN, "-c", os.path.join(d, "t.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(d, "stderr.log"), "w"),
        )
    for n, (port, _) in ports.items():
        wait_port(port, f"node {n}", procs[n])
    time.sleep(2.5)  # every node's health checks have seen the others (1 s period)
    conns = {n: http.client.HTTPConnection("127.0.0.1", p[0]) for n, p in ports.items()}
    return procs, conns


def ask(conn, path):
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Host": HOST})
    r = conn.getresponse()
    r.read()
    took = time.perf_counter() - t0
    if r.status != 200:
        sys.exit(f"{path}: {r.status}")
    return took, r.getheader("cache-status", "")


def pct(values, p):
    """A percentile in ms."""
    return percentile(values, p) * 1000


def phase(name, shield, args, work, nats_url, origin_port, secret):
    procs, conns = start_nodes(work, name, shield, nats_url, origin_port, secret)
    try:
        before = COUNT["n"]
        for i in range(args.objects):
            for n in "abc":
                ask(conns[n], f"/{name}/all/{i}")
        origin_requests = COUNT["n"] - before
        direct, via_peer = [], []
        for i in range(args.objects):
            took, status = ask(conns["a"], f"/{name}/timed/{i}")
            if "fwd=miss" not in status:
                sys.exit(f"not a miss: {status}")
            (via_peer if "fwd-peer=" in status else direct).append(took)
        print(
            f"{name:<10} origin requests for {args.objects} objects x 3 nodes: {origin_requests:5d}"
            f"   miss direct: n {len(direct):4d} p50 {pct(direct, 50):6.2f} ms p99 {pct(direct, 99):6.2f} ms"
            f"   miss via owner: n {len(via_peer):4d} p50 {pct(via_peer, 50):6.2f} ms"
            f" p99 {pct(via_peer, 99):6.2f} ms"
        )
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait(5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=1000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tollgate-shield-bench-")
    nats = None
    try:
        nats, nats_port, _ = start_nats(os.path.join(work, "js"))
        server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        secret = os.path.join(work, "fleet.secret")
        with open(secret, "w") as f:
            f.write("benchmark fleet secret, 32 bytes\n")
        url = f"nats://127.0.0.1:{nats_port}"
        phase("shield", True, args, work, url, server.server_address[1], secret)
        phase("no-shield", False, args, work, url, server.server_address[1], secret)
    finally:
        if nats:
            nats.send_signal(signal.SIGKILL)
            nats.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
