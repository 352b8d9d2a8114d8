#!/usr/bin/env python3
"""The one origin shared by every peer in benches/peers/run.sh.

    origin.py PORT

Serves, all with `Cache-Control: public, max-age=3600` and a Content-Length:
  /public/article   1 KiB public article
  /public/big       100 KiB public object
  /premium/article  1 KiB full article when `x-tollgate-variant: subscriber`, else a 1 KiB teaser
  /media/segment    1 KiB media segment (the edge answers 403 itself without a valid token)
  /signed/file      1 KiB file (the edge answers 403 itself without a valid signed URL)
  /__hits           "<requests> <requests that carried a credential>" (not counted, no-store):
                    an Authorization header, a `token` cookie, or a `token`, `Signature` or
                    `Key-Pair-Id` query parameter

Every other path is a 404. The counter is how the harness proves that warm hits never reach
the origin, and the credential count that no peer forwards the reader's token or signature. It only sees
warm-up misses, so its own speed is not measured.
"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def body(marker: str, size: int) -> bytes:
    """`marker` followed by a filler up to exactly `size` bytes."""
    text = (marker + "\n").encode()
    filler = b"lorem ipsum dolor sit amet " * (size // 27 + 1)
    return (text + filler)[: size - 1] + b"\n"


OBJECTS = {
    "/public/article": body("PUBLIC-1K article", 1024),
    "/public/big": body("PUBLIC-100K object", 100 * 1024),
    "/media/segment": body("MEDIA-SEGMENT subscriber media", 1024),
    "/signed/file": body("SIGNED-FILE signed download", 1024),
}
CREDENTIAL_PARAMS = ("token=", "Signature=", "Key-Pair-Id=")
FULL = body("SUBSCRIBER-ONLY full article", 1024)
TEASER = body("TEASER: subscribe to read on", 1024)

LOCK = threading.Lock()
COUNTS = {"hits": 0, "auth": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass

    def send(self, status: int, payload: bytes, cache_control: str):
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/__hits":
            with LOCK:
                line = f"{COUNTS['hits']} {COUNTS['auth']}\n"
            self.send(200, line.encode(), "no-store")
            return
        # one line per counted request on stderr (the harness shows the tail when a check fails)
        variant = self.headers.get("x-tollgate-variant") or "-"
        sys.stderr.write(f"{self.command} {path} variant={variant} host={self.headers.get('Host')}\n")
        sys.stderr.flush()
        with LOCK:
            COUNTS["hits"] += 1
            params = query.split("&") if query else []
            cookies = [c.strip() for c in ";".join(self.headers.get_all("Cookie") or []).split(";")]
            if (
                self.headers.get("Authorization") is not None
                or any(p.startswith(CREDENTIAL_PARAMS) for p in params)
                or any(c.startswith("token=") for c in cookies)
            ):
                COUNTS["auth"] += 1
        if path in OBJECTS:
            self.send(200, OBJECTS[path], "public, max-age=3600")
        elif path == "/premium/article":
            subscriber = self.headers.get("x-tollgate-variant") == "subscriber"
            self.send(200, FULL if subscriber else TEASER, "public, max-age=3600")
        else:
            self.send(404, b"not found\n", "no-store")

    do_HEAD = do_GET


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
