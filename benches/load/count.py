#!/usr/bin/env python3
"""Sends exactly N chat requests over C keep-alive HTTP/1.1 connections (standard library,
asyncio), for counts that must be reproducible (instructions per request under callgrind).

usage: count.py URL [--mode json|sse] [--conns 8] [-n 2000] [--timeout 600]
Only http://127.0.0.1 URLs are accepted. The app token, if any, comes from BENCH_TOKEN.
Prints: COUNTRESULT n=N ok=N non2xx=N seconds=F
"""

import argparse
import asyncio
import os
import sys
import time
import urllib.parse

FILLER = "The quick brown fox jumps over the lazy dog. " * 17


def body(stream):
    tail = ',"stream":true,"stream_options":{"include_usage":true}' if stream else ',"stream":false'
    return (
        '{"model":"openai/gpt-4o-mini","messages":['
        '{"role":"system","content":"You are a concise assistant. Answer in one sentence."},'
        '{"role":"user","content":"' + FILLER + '"}],'
        '"temperature":0.2,"max_tokens":64,"user":"load-bench"' + tail + "}"
    ).encode()


def request_bytes(url, stream, token):
    u = urllib.parse.urlsplit(url)
    if u.hostname != "127.0.0.1":
        sys.exit("count.py targets 127.0.0.1 only")
    path = u.path + ("?" + u.query if u.query else "")
    b = body(stream)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{u.port}",
        "Content-Type: application/json",
        "Accept: " + ("text/event-stream" if stream else "application/json"),
        f"Content-Length: {len(b)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if u.query:
        head.append(f"X-Title: bench {u.query}")  # byok-proxy forwards no query
    return u.port, ("\r\n".join(head) + "\r\n\r\n").encode() + b


async def read_response(reader):
    """Reads one response; returns its status. Handles content-length and chunked bodies."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked = None, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v.strip())
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def worker(port, raw, todo, stats):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while todo[0] > 0:
            todo[0] -= 1
            writer.write(raw)
            status = await read_response(reader)
            stats["ok" if 200 <= status < 300 else "non2xx"] += 1
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--mode", default="json", choices=["json", "sse"])
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    port, raw = request_bytes(a.url, a.mode == "sse", os.environ.get("BENCH_TOKEN", ""))
    todo = [min(a.n, 10_000_000)]
    stats = {"ok": 0, "non2xx": 0}
    t0 = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(worker(port, raw, todo, stats) for _ in range(max(1, min(a.conns, 1000))))),
        a.timeout,
    )
    print(
        f"COUNTRESULT n={a.n} ok={stats['ok']} non2xx={stats['non2xx']} seconds={time.monotonic() - t0:.2f}"
    )


asyncio.run(main())
