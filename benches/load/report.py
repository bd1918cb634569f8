#!/usr/bin/env python3
"""Renders the Markdown load report for benches/load/run.sh (standard library only).

usage: report.py META RESULTS_TSV > target/load-report.md

META: key=value lines written by run.sh. RESULTS_TSV: one row per measured run (kind `wrk`
or `ttfb`, round, path, mode, conns, ...). Every number shown is the median over rounds;
"added" is path minus direct for the same body and connection count.
"""

import csv
import statistics
import sys
from collections import defaultdict

PATHS = ["direct", "nginx", "byok"]
LABEL = {"direct": "direct (fake)", "nginx": "nginx", "byok": "byok-proxy"}
PROCESS = {"direct": "fake-upstream", "nginx": "nginx worker", "byok": "byok-proxy"}
NOISY_PCT = 10  # a run during which other processes took more than this share of all CPUs


def ms(us):
    return f"{us / 1000:.3f}"


def delta_ms(a, b):
    return f"{(a - b) / 1000:+.3f}"


def med(values):
    return statistics.median(values) if values else 0.0


def main():
    meta_path, results_path = sys.argv[1], sys.argv[2]
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    rows = []
    with open(results_path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows.append(row)

    wrk = defaultdict(list)  # (path, mode, conns) -> rows
    ttfb = defaultdict(list)  # path -> rows
    for row in rows:
        if row["kind"] == "wrk":
            wrk[(row["path"], row["mode"], int(row["conns"]))].append(row)
        elif row["kind"] == "ttfb":
            ttfb[row["path"]].append(row)

    modes = [m for m in ("json", "sse", "sse20") if any(k[1] == m for k in wrk)]
    conns = sorted({k[2] for k in wrk})
    out = []
    w = out.append

    w("# byok-proxy load report")
    w("")
    w("```sh")
    w(meta.get("invocation", "benches/load/run.sh"))
    w("```")
    w("")
    w(f"- git {meta.get('git')}; {meta.get('host')}")
    w(f"- {meta.get('tools')}")
    w(f"- pinning: {meta.get('pinning')}")
    w(f"- load: {meta.get('load')}")
    foreign = int(meta.get("foreign_all") or 0)
    noisy = " — ⚠ NOISY: other work competed for the CPUs, numbers are not reliable" if foreign > 5 else ""
    w(
        f"- other processes on the machine used ~{foreign}% of all CPU time during the "
        f"measurements (load average before: {meta.get('load_before')}){noisy}"
    )
    w(f"- smoke check: {meta.get('smoke')}")
    w("")

    # ------------------------------------------------------------------ wrk table
    w("## Throughput and latency (wrk; median over rounds)")
    w("")
    w(
        "Latencies in ms. *added* = this path minus direct at the same body and connections. "
        "*CPU µs/req* = CPU time of the path's own server process (fake for direct, the nginx "
        "worker, byok-proxy) per request, i.e. per stream for SSE. *sse* = 5 events, *sse20* = "
        "20 events, no delay between them. ⚠ non-2xx = the row measured error answers, not "
        f"proxying; ≈ = a round of this cell ran while other processes took >{NOISY_PCT}% of "
        "the CPUs."
    )
    w("")
    w(
        "| path | body | conns | RPS | RPS range | p50 | p99 | added p50 | added p99 "
        "| CPU µs/req | non-2xx | socket errors |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for mode in modes:
        for c in conns:
            base = wrk.get(("direct", mode, c), [])
            base_p50 = med([float(r["p50_us"]) for r in base])
            base_p99 = med([float(r["p99_us"]) for r in base])
            for p in PATHS:
                runs = wrk.get((p, mode, c), [])
                if not runs:
                    w(f"| {LABEL[p]} | {mode} | {c} | FAILED (no wrk result) | | | | | | | | |")
                    continue
                rps = [float(r["rps"]) for r in runs]
                p50 = med([float(r["p50_us"]) for r in runs])
                p99 = med([float(r["p99_us"]) for r in runs])
                cpu = med([float(r["mid_us_per_req"]) for r in runs])
                non2xx = sum(int(r["non2xx"]) for r in runs)
                errs = sum(int(r["sock_errors"]) for r in runs)
                noisy_mark = " ≈" if any(int(r["foreign_pct"] or 0) > NOISY_PCT for r in runs) else ""
                added50 = added99 = "—"
                if p != "direct" and base:
                    added50, added99 = delta_ms(p50, base_p50), delta_ms(p99, base_p99)
                warn = " ⚠" if non2xx else ""
                summary[(p, mode, c)] = (med(rps), p50, p99, non2xx, cpu)
                w(
                    f"| {LABEL[p]} | {mode} | {c} | {med(rps):.0f}{noisy_mark} "
                    f"| {min(rps):.0f}–{max(rps):.0f} | {ms(p50)} | {ms(p99)} | {added50} "
                    f"| {added99} | {cpu:.1f} | {non2xx}{warn} | {errs} |"
                )
    w("")
    for mode in modes:
        base = wrk.get(("direct", mode, 1), [])
        p50 = med([float(r["p50_us"]) for r in base])
        p99 = med([float(r["p99_us"]) for r in base])
        if base and p99 > 1000 and p99 > 10 * p50:
            w(
                f"Note: direct {mode} at 1 connection has p99 {ms(p99)} ms for p50 {ms(p50)} ms: "
                "that tail is the machine (on a VM, an idle vCPU takes milliseconds to wake), "
                "not a proxy; at 1 connection compare p50s."
            )
            w("")
            break

    # ------------------------------------------------------------------ ttfb table
    if ttfb:
        n = meta.get("ttfb_n", "?")
        w(
            f"## SSE time to first byte (benches/load/ttfb.py: {n} sequential streaming requests "
            f"on one keep-alive connection per round, fake answering `?{meta.get('ttfb_query', '')}`; "
            "median over rounds)"
        )
        w("")
        w(
            "ms, from the request written: *head* = first response byte, *first event* = first "
            "`data:` line, *end* = stream complete. *added* = minus direct."
        )
        w("")
        w(
            "| path | head p50 | head p99 | first event p50 | first event p99 | added p50 "
            "| added p99 | end p50 | non-2xx |"
        )
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")

        def extra(row, key):
            for kv in row["extra"].split(","):
                k, _, v = kv.partition("=")
                if k == key:
                    return float(v)
            return 0.0

        base = ttfb.get("direct", [])
        b50 = med([float(r["p50_us"]) for r in base if int(r["requests"] or 0) > 0])
        b99 = med([float(r["p99_us"]) for r in base if int(r["requests"] or 0) > 0])
        for p in PATHS:
            runs = ttfb.get(p, [])
            ok = [r for r in runs if int(r["requests"] or 0) > 0]
            non2xx = sum(int(r["non2xx"] or 0) for r in runs)
            if not ok:
                w(f"| {LABEL[p]} | FAILED | | | | | | | {non2xx} |")
                continue
            e50 = med([float(r["p50_us"]) for r in ok])
            e99 = med([float(r["p99_us"]) for r in ok])
            a50 = a99 = "—"
            if p != "direct" and base:
                a50, a99 = delta_ms(e50, b50), delta_ms(e99, b99)
            w(
                f"| {LABEL[p]} | {ms(med([extra(r, 'head_p50_us') for r in ok]))} "
                f"| {ms(med([extra(r, 'head_p99_us') for r in ok]))} | {ms(e50)} | {ms(e99)} "
                f"| {a50} | {a99} | {ms(med([extra(r, 'total_p50_us') for r in ok]))} | {non2xx} |"
            )
        w("")

    # ------------------------------------------------------------------ cpu / memory
    w("## Server-side cost per request and memory (all measured wrk runs)")
    w("")
    w(
        "| path | process | requests | its CPU µs/req | fake upstream CPU µs/req "
        "| its RSS before → after (MiB) |"
    )
    w("|---|---|---:|---:|---:|---:|")
    for p in PATHS:
        runs = [r for k, v in wrk.items() if k[0] == p for r in v]
        reqs = sum(int(r["requests"]) for r in runs)
        if reqs:
            mid = sum(float(r["mid_us_per_req"]) * int(r["requests"]) for r in runs) / reqs
            fake = "—"
            if p != "direct":
                fake = f"{sum(float(r['fake_us_per_req'] or 0) * int(r['requests']) for r in runs) / reqs:.1f}"
        else:
            mid, fake = 0.0, "—"
        before, _, after = meta.get(f"rss_{p}", "0 0").partition(" ")
        w(
            f"| {LABEL[p]} | {PROCESS[p]} | {reqs} | {mid:.1f} | {fake} "
            f"| {int(before or 0) / 1024:.1f} → {int(after or 0) / 1024:.1f} |"
        )
    w("")

    # ------------------------------------------------------------------ summary
    lines = []
    for mode in modes:
        for c in conns:
            b = summary.get(("byok", mode, c))
            n = summary.get(("nginx", mode, c))
            d = summary.get(("direct", mode, c))
            if not (b and n and d) or b[3] or n[3]:
                continue
            lines.append(
                f"- {mode}, {c} conn: byok-proxy {b[0]:.0f} RPS = {b[0] / n[0]:.2f}× nginx "
                f"({n[0]:.0f}), {b[0] / d[0]:.2f}× direct; added p50 {(b[1] - d[1]) / 1000:+.3f} "
                f"vs nginx {(n[1] - d[1]) / 1000:+.3f} ms; CPU {b[4]:.1f} vs nginx {n[4]:.1f} µs/req"
            )
    if lines:
        w("## byok-proxy vs nginx")
        w("")
        out.extend(lines)
        w("")
    w("## byok-proxy's own counters (whole run: smoke, warmups, measured runs, TTFB probes)")
    w("")
    w(f"- {meta.get('proxy_counters', '?')} (target/load-logs/byok-metrics.log)")
    w(
        f"- log lines matching warn/error: {meta.get('proxy_warns')} "
        "(target/load-logs/byok-proxy.log)"
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
