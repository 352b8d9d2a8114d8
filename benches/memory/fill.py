#!/usr/bin/env python3
"""The client of benches/memory/run.sh: each object requested exactly once, every answer checked.

    fill.py fill   URL KIND START COUNT SIZE [--concurrency C] [--deadline SECONDS]
    fill.py sample URL N SIZE PEER [--count K]

fill: GET URL/articles/KIND-<i> for every i in [START, START+COUNT), each exactly once, over C
keep-alive connections (default 64; each connection takes the next index when its previous
answer is complete, no pipelining). Every answer must be a 200 whose body is SIZE bytes and
starts with "KIND-<i> ". A request is never sent twice: a connection that fails loses its
request (counted in "errors") and is reopened for the next index, so a short origin count shows
it. Prints one JSON line {"sent", "ok", "bad", "errors", "seconds", "first_problem"}; exit status
1 unless ok == COUNT, 3 if the deadline (default 600 s) passed first.

sample: K (default 200) indices in [0, N) drawn with a fixed seed, requested one by one on one
connection; each must be a 200 with the right body and carry PEER's cache-hit indication:
  tollgate  `Cache-Status: tollgate; hit` (a memory hit; not `detail=disk`)
  varnish   `X-Varnish` with two transaction ids (the second is the one that stored the object)
  haproxy   an `Age` header (HAProxy adds it to answers from its cache; the origin never sends one)
Prints one JSON line {"checked", "hits", "bad", "first_problem", "example"}; exit status 1 unless
every answer was a correct hit.

wrk is not used: its run ends by time, not by count, and on a socket error it reconnects and
builds the next request, so "every path exactly once, all answered" is not something it can
promise or report.
"""

import argparse
import asyncio
import json
import random
import sys
import time
from urllib.parse import urlsplit


async def read_response(reader):
    """(status, headers as a lower-cased dict, body) of one HTTP/1.1 response."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode("latin-1")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


def body_problem(status, body, kind, i, size):
    if status != 200:
        return f"{kind}-{i}: status {status}"
    want = f"{kind}-{i} ".encode()
    if len(body) != size or not body.startswith(want):
        return f"{kind}-{i}: body of {len(body)} bytes starting {body[:24]!r}, want {size} bytes starting {want!r}"
    return None


async def fill(args):
    u = urlsplit(args.url)
    host, port = u.hostname, u.port or 80
    hosthdr = u.netloc.encode()
    nxt = iter(range(args.start, args.start + args.count))
    res = {"sent": 0, "ok": 0, "bad": 0, "errors": 0, "seconds": 0.0, "first_problem": None}

    def problem(text):
        if res["first_problem"] is None:
            res["first_problem"] = text

    async def worker():
        reader = writer = None
        for i in nxt:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /articles/" + args.kind.encode() + b"-" + str(i).encode()
                             + b" HTTP/1.1\r\nHost: " + hosthdr + b"\r\n\r\n")
                res["sent"] += 1
                status, headers, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                res["errors"] += 1
                problem(f"{args.kind}-{i}: {type(e).__name__}: {e}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            p = body_problem(status, body, args.kind, i, args.size)
            if p:
                res["bad"] += 1
                problem(p)
            else:
                res["ok"] += 1
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(worker()) for _ in range(args.concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    res["seconds"] = round(time.monotonic() - t0, 2)
    for t in pending:
        t.cancel()
    print(json.dumps(res), flush=True)
    if pending:
        print(f"fill.py: deadline of {args.deadline} s passed after {res['ok']} of {args.count}", file=sys.stderr)
        return 3
    for t in done:
        if t.exception():
            raise t.exception()
    return 0 if res["ok"] == args.count else 1


def is_hit(peer, headers):
    if peer == "tollgate":
        return headers.get("cache-status", "").strip() == "tollgate; hit"
    if peer == "varnish":
        return len(headers.get("x-varnish", "").split()) == 2
    if peer == "haproxy":
        return "age" in headers
    raise SystemExit(f"fill.py: unknown peer {peer}")


async def sample(args):
    u = urlsplit(args.url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    rnd = random.Random(19)
    idx = rnd.sample(range(args.n), min(args.count, args.n))
    res = {"checked": 0, "hits": 0, "bad": 0, "first_problem": None, "example": None}
    for i in idx:
        writer.write(f"GET /articles/fill-{i} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
        status, headers, body = await asyncio.wait_for(read_response(reader), 10)
        res["checked"] += 1
        p = body_problem(status, body, "fill", i, args.size)
        if p is None and not is_hit(args.peer, headers):
            p = f"fill-{i}: not a {args.peer} cache hit: {headers}"
        if p:
            res["bad"] += 1
            res["first_problem"] = res["first_problem"] or p
        else:
            res["hits"] += 1
        if res["example"] is None:
            res["example"] = {k: v for k, v in headers.items()
                              if k in ("cache-status", "x-varnish", "age", "via", "content-length")}
    writer.close()
    print(json.dumps(res), flush=True)
    return 0 if res["hits"] == len(idx) else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fill")
    f.add_argument("url")
    f.add_argument("kind", choices=["fill", "warm"])
    f.add_argument("start", type=int)
    f.add_argument("count", type=int)
    f.add_argument("size", type=int)
    f.add_argument("--concurrency", type=int, default=64)
    f.add_argument("--deadline", type=float, default=600)
    s = sub.add_parser("sample")
    s.add_argument("url")
    s.add_argument("n", type=int)
    s.add_argument("size", type=int)
    s.add_argument("peer")
    s.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    sys.exit(asyncio.run(fill(args) if args.mode == "fill" else sample(args)))


if __name__ == "__main__":
    main()
