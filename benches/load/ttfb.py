#!/usr/bin/env python3
"""Time-to-first-byte probe for benches/load/run.sh (standard library only).

Sends N sequential streaming chat completion requests (the same ~1 KB body as chat.lua,
"stream": true) over ONE keep-alive HTTP/1.1 connection (reconnecting only if the server
closes it) and measures, per request, from the moment the request is written:

  head  - first byte of the response (status line) arrived
  event - first SSE event (`data:`) of the body arrived
  total - the response ended (terminating chunk / content-length reached)

Prints one line:  TTFBRESULT n=N ok=N non2xx=N head_p50_us=.. head_p99_us=.. event_p50_us=..
event_p99_us=.. total_p50_us=.. total_p99_us=.. reconnects=N
The app token, if any, is read from the environment variable BENCH_TOKEN.

usage: ttfb.py HOST PORT [--path /v1/chat/completions] [-n 200] [--warmup 20]
"""

import argparse
import os
import socket
import sys
import time

FILLER = "The quick brown fox jumps over the lazy dog. " * 17
BODY = (
    '{"model":"openai/gpt-4o-mini","messages":['
    '{"role":"system","content":"You are a concise assistant. Answer in one sentence."},'
    '{"role":"user","content":"' + FILLER + '"}],'
    '"temperature":0.2,"max_tokens":64,"user":"load-bench",'
    '"stream":true,"stream_options":{"include_usage":true}}'
).encode()


class Closed(Exception):
    pass


class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sock = None
        self.buf = b""
        self.reconnects = -1

    def connect(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.reconnects += 1

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data
        return time.perf_counter_ns()

    def request(self, raw):
        """Returns (status, t_head, t_event, t_total, keep_alive) in ns since the write."""
        t0 = time.perf_counter_ns()
        self.sock.sendall(raw)
        t_head = None
        while b"\r\n\r\n" not in self.buf:
            t = self.fill()
            if t_head is None:
                t_head = t
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip().lower()
        t_event = time.perf_counter_ns() if b"data:" in self.buf else None
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
        keep_alive = headers.get(b"connection", b"") != b"close"
        body = b""
        if chunked:
            while True:
                while b"\r\n" not in self.buf:
                    self.fill()
                size_line, rest = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self.buf = rest
                    while b"\r\n" not in self.buf:  # (empty) trailer section
                        self.fill()
                    self.buf = self.buf.split(b"\r\n", 1)[1]
                    break
                self.buf = rest
                while len(self.buf) < size + 2:
                    t = self.fill()
                    if t_event is None and b"data:" in body + self.buf[:size]:
                        t_event = t
                body += self.buf[:size]
                if t_event is None and b"data:" in body:
                    t_event = time.perf_counter_ns()
                self.buf = self.buf[size + 2 :]
        elif b"content-length" in headers:
            n = int(headers[b"content-length"])
            while len(self.buf) < n:
                t = self.fill()
                if t_event is None and b"data:" in self.buf:
                    t_event = t
            body, self.buf = self.buf[:n], self.buf[n:]
        else:  # read to EOF
            keep_alive = False
            try:
                while True:
                    t = self.fill()
                    if t_event is None and b"data:" in self.buf:
                        t_event = t
            except Closed:
                pass
            body, self.buf = self.buf, b""
        t_end = time.perf_counter_ns()
        if t_event is None:
            t_event = t_end
        return status, t_head - t0, t_event - t0, t_end - t0, keep_alive


def pct(values, p):
    if not values:
        return 0
    s = sorted(values)
    # nearest-rank percentile
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    token = os.environ.get("BENCH_TOKEN", "")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    # The fake's options ride in x-title as well as in the query (byok-proxy forwards no query).
    query = args.path.partition("?")[2]
    if query:
        auth += f"X-Title: bench {query}\r\n"
    raw = (
        f"POST {args.path} HTTP/1.1\r\n"
        f"Host: {args.host}:{args.port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"{auth}"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY

    conn = Conn(args.host, args.port)
    conn.connect()
    heads, events, totals = [], [], []
    non2xx = 0
    for i in range(args.warmup + args.n):
        try:
            status, h, e, t, keep = conn.request(raw)
        except (Closed, ConnectionError):
            conn.connect()
            status, h, e, t, keep = conn.request(raw)
        if not keep:
            conn.connect()
        if i < args.warmup:
            continue
        if not 200 <= status < 300:
            non2xx += 1
            continue
        heads.append(h)
        events.append(e)
        totals.append(t)
    us = lambda ns: ns // 1000  # noqa: E731
    print(
        "TTFBRESULT n=%d ok=%d non2xx=%d head_p50_us=%d head_p99_us=%d event_p50_us=%d "
        "event_p99_us=%d total_p50_us=%d total_p99_us=%d reconnects=%d"
        % (
            args.n,
            len(heads),
            non2xx,
            us(pct(heads, 50)),
            us(pct(heads, 99)),
            us(pct(events, 50)),
            us(pct(events, 99)),
            us(pct(totals, 50)),
            us(pct(totals, 99)),
            max(conn.reconnects, 0),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
