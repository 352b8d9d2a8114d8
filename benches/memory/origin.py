#!/usr/bin/env python3
"""The origin of benches/memory/run.sh: distinct cacheable objects of one size, counted.

    origin.py PORT SIZE

`GET /articles/fill-<i>` and `GET /articles/warm-<i>` (any i >= 0) answer 200 with a body of
exactly SIZE bytes that starts with "<fill|warm>-<i> " (so every object is distinct and a client
can tell it got the right one) and these headers, the same for every object:

    Date, Content-Type: text/html; charset=utf-8, Content-Length, Cache-Control: public, max-age=3600

`GET /__stats` (not counted, no-store) answers one JSON line:
    {"fill": requests for fill paths, "fill_distinct": distinct fill indices requested,
     "fill_dup": fill requests beyond the first for their index, "warm": ..., "warm_distinct": ...,
     "other": every other request, "head_bytes": length of the response head of a 200}
`GET /__reset` zeroes the counters. Every other path is a 404 (counted in "other").

Single-threaded asyncio with a hand-written HTTP/1.1 reader (keep-alive, no request bodies):
http.server's thread per connection was the bottleneck of a 200,000-object fill.
"""

import asyncio
import email.utils
import json
import sys
import time

PORT = int(sys.argv[1])
SIZE = int(sys.argv[2])
FILLER = b"lorem ipsum dolor sit amet " * (SIZE // 27 + 2)

counts = {"fill": {}, "warm": {}}
other = 0
_date = [0, b""]


def date() -> bytes:
    now = int(time.time())
    if _date[0] != now:
        _date[0] = now
        _date[1] = email.utils.formatdate(now, usegmt=True).encode()
    return _date[1]


def body(kind: str, i: int) -> bytes:
    text = f"{kind}-{i} {SIZE}\n".encode()
    return (text + FILLER)[:SIZE]


def head(status: bytes, length: int, cache_control: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nDate: " + date()
            + b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: " + str(length).encode()
            + b"\r\nCache-Control: " + cache_control + b"\r\n\r\n")


def stats() -> dict:
    f, w = counts["fill"], counts["warm"]
    return {
        "fill": sum(f.values()), "fill_distinct": len(f), "fill_dup": sum(f.values()) - len(f),
        "warm": sum(w.values()), "warm_distinct": len(w), "other": other,
        "head_bytes": len(head(b"200 OK", SIZE, b"public, max-age=3600")),
    }


def respond(method: bytes, target: bytes) -> bytes:
    global other
    path = target.split(b"?", 1)[0]
    if path == b"/__stats":
        payload = (json.dumps(stats()) + "\n").encode()
        return head(b"200 OK", len(payload), b"no-store") + payload
    if path == b"/__reset":
        counts["fill"].clear()
        counts["warm"].clear()
        other = 0
        return head(b"200 OK", 3, b"no-store") + b"ok\n"
    for kind in ("fill", "warm"):
        prefix = b"/articles/" + kind.encode() + b"-"
        if path.startswith(prefix) and path[len(prefix):].isdigit():
            i = int(path[len(prefix):])
            c = counts[kind]
            c[i] = c.get(i, 0) + 1
            h = head(b"200 OK", SIZE, b"public, max-age=3600")
            return h if method == b"HEAD" else h + body(kind, i)
    other += 1
    return head(b"404 Not Found", 10, b"no-store") + (b"not found\n" if method != b"HEAD" else b"")


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        out = []
        close = False
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            req, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = req.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                out.append(head(b"400 Bad Request", 0, b"no-store"))
                close = True
                break
            out.append(respond(parts[0], parts[1]))
            for line in lines[1:]:
                if line.lower().startswith(b"connection:") and b"close" in line.lower():
                    close = True
            if close:
                break
        if out:
            self.t.write(b"".join(out))
        if close:
            self.t.close()


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", PORT, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
