#!/usr/bin/env python3
"""Client aborts for the soak run (benches/load/soak.sh): opens streamed chat completions
and hangs up after the first event, as a user pressing Stop does (standard library, asyncio).

Each stream asks the fake gateway for 200 events 10 ms apart (through `x-title`), so the
upstream request is still running when the client goes away. Bounded in count (-n, at most
1,000,000) and time (--timeout seconds); --concurrency streams at once; SIGTERM ends it early
(the result line is still printed). Only 127.0.0.1. The
app token comes from BENCH_TOKEN.

Prints at the end:  ABORTRESULT n=N aborted=N failed=N seconds=F
usage: abort.py PORT -n 20000 [--concurrency 16] [--timeout 600]
"""

import argparse
import asyncio
import os
import signal
import time

BODY = (
    '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],'
    '"stream":true}'
).encode()


async def one(port, raw, stats):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        stats["failed"] += 1
        return
    try:
        writer.write(raw)
        await writer.drain()
        # Head, then the first bytes of the body: the stream is running; hang up.
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        await reader.read(64)
        stats["aborted"] += 1
    except OSError:
        stats["failed"] += 1
    finally:
        writer.transport.abort()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    n = max(1, min(a.n, 1_000_000))
    token = os.environ.get("BENCH_TOKEN", "")
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{a.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        "X-Title: bench chunks=200&delay_ms=10",
        "Connection: close",
        f"Content-Length: {len(BODY)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + BODY
    stats = {"aborted": 0, "failed": 0}
    started = time.monotonic()
    deadline = started + a.timeout
    queue = iter(range(n))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def worker():
        for _ in queue:
            if stop.is_set() or time.monotonic() > deadline:
                return
            await one(a.port, raw, stats)

    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    print(
        f"ABORTRESULT n={n} aborted={stats['aborted']} failed={stats['failed']} "
        f"seconds={time.monotonic() - started:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
