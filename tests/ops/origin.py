#!/usr/bin/env python3
"""A small origin for tests/upgrade.sh, tests/prometheus.sh and tests/ops/syscalls.sh.

  origin.py PORT

GET /obj/<name>     200, 4 KiB body, Cache-Control: public, max-age=3600 (cacheable)
GET /big/<bytes>    200, a body of <bytes> bytes, Cache-Control: public, max-age=3600 (large
                    objects: sealed memory files and sendfile, disk-tier block reads)
GET /slow/<ms>      200 after <ms> milliseconds, Cache-Control: no-store
GET /__stats        {"total": N, "paths": {"/obj/a": n, ...}}: requests received (not counting
                    /__stats itself), so a script can tell a cache hit from an origin fetch.
Anything else       200 with a short body and Cache-Control: public, max-age=3600.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNTS = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, cache_control):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/__stats":
            with LOCK:
                body = json.dumps({"total": sum(COUNTS.values()), "paths": COUNTS}).encode()
            return self.send(200, body, "no-store")
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
        if path.startswith("/obj/"):
            name = path[len("/obj/"):].encode()
            body = (name + b":" + b"x" * 4096)[:4096]
            return self.send(200, body, "public, max-age=3600")
        if path.startswith("/big/"):
            size = int(path[len("/big/"):] or "0")
            block = bytes(range(256)) * 4096
            body = (block * (size // len(block) + 1))[:size]
            return self.send(200, body, "public, max-age=3600")
        if path.startswith("/slow/"):
            ms = int(path[len("/slow/"):] or "0")
            time.sleep(ms / 1000)
            return self.send(200, b"slow:%d\n" % ms, "no-store")
        return self.send(200, b"page:" + path.encode() + b"\n", "public, max-age=3600")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
