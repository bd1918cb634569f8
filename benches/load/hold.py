#!/usr/bin/env python3
"""Holds N slow streaming chat completions open at once (standard library, asyncio), for
the memory run (benches/load/memory.sh).

Opens N connections to URL (ramping up at --rate connections per second), sends one
streaming request on each and reads its SSE body to the end, then closes. Bounded in count
(N <= 50,000) and in time (--timeout seconds for the whole round). Only http://127.0.0.1.
The app token, if any, comes from BENCH_TOKEN.

While it runs it prints `HOLDING open=N t=S` lines every second (streams whose head arrived
and whose body has not ended), and at the end:
  HOLDRESULT n=N ok=N failed=N non2xx=N events=N first_event_p50_ms=F seconds=F
usage: hold.py URL -n 8000 [--rate 2000] [--timeout 120]
"""

import argparse
import asyncio
import os
import sys
import time
import urllib.parse

BODY = (
    '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],'
    '"stream":true,"stream_options":{"include_usage":true}}'
).encode()


class Stats:
    def __init__(self):
        self.ok = self.failed = self.non2xx = self.events = self.open = 0
        self.first = []
        self.errors = {}


async def one(port, raw, stats, sem):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            stats.failed += 1
            stats.errors[type(e).__name__] = stats.errors.get(type(e).__name__, 0) + 1
            return
    t0 = time.monotonic()
    opened = False
    try:
        writer.write(raw)
        status_line = await reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        stats.open += 1
        opened = True
        if status != 200 or not chunked:
            stats.non2xx += 1
            return
        first = True
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            n = data.count(b"data:")
            if n and first:
                stats.first.append(time.monotonic() - t0)
                first = False
            stats.events += n
        stats.ok += 1
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
        stats.failed += 1
        stats.errors[type(e).__name__] = stats.errors.get(type(e).__name__, 0) + 1
    finally:
        if opened:
            stats.open -= 1
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("-n", type=int, default=8000)
    ap.add_argument("--rate", type=float, default=2000, help="new connections per second")
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    n = max(1, min(a.n, 50_000))
    u = urllib.parse.urlsplit(a.url)
    if u.hostname != "127.0.0.1":
        sys.exit("hold.py targets 127.0.0.1 only")
    path = u.path + ("?" + u.query if u.query else "")
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{u.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        "Connection: close",
        f"Content-Length: {len(BODY)}",
    ]
    if u.query:
        head.append(f"X-Title: bench {u.query}")  # byok-proxy forwards no query
    token = os.environ.get("BENCH_TOKEN", "")
    if token:
        head.append(f"Authorization: Bearer {token}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + BODY
    stats = Stats()
    sem = asyncio.Semaphore(256)  # connects in flight at once
    t0 = time.monotonic()

    async def ticker():
        while True:
            await asyncio.sleep(1)
            print(f"HOLDING open={stats.open} t={time.monotonic() - t0:.0f}", flush=True)

    async def launch():
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(u.port, raw, stats, sem)))
            if a.rate > 0 and i % 100 == 99:
                await asyncio.sleep(100 / a.rate)
        await asyncio.gather(*tasks)

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.wait_for(launch(), a.timeout)
    except asyncio.TimeoutError:
        print("hold.py: round timed out", file=sys.stderr)
    tick.cancel()
    first = sorted(stats.first)
    p50 = first[len(first) // 2] * 1000 if first else 0
    print(
        f"HOLDRESULT n={n} ok={stats.ok} failed={stats.failed} non2xx={stats.non2xx} "
        f"events={stats.events} first_event_p50_ms={p50:.1f} seconds={time.monotonic() - t0:.1f} "
        f"errors={','.join(f'{k}:{v}' for k, v in stats.errors.items()) or 'none'}",
        flush=True,
    )


asyncio.run(main())
