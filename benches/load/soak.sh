#!/usr/bin/env bash
# Soak: at least TOTAL mixed requests through byok-proxy (release, gateway mode, SQLite, a real
# user, token and key: everything on) in front of the bench fake gateway, with the proxy's
# RSS sampled every SAMPLE seconds. The mix (benches/load/soak.lua, wrk at CONNS connections):
# JSON and streamed chat completions, bad tokens (401), an unknown route (404), a body that is
# not JSON (400); beside it abort.py opens streams and hangs up after the first
# event (client aborts), ABORT_CONCURRENCY at a time. Memory must be flat: the report shows
# the RSS at the start of the load, its high point, and at the end, and the curve.
#
# usage:  benches/load/soak.sh
# knobs:  TOTAL=1000000 CONNS=32 SEGMENT=10 SAMPLE=2 MAX_SECONDS=900 ABORT_CONCURRENCY=8
#         PIN=1 BUILD=1
#   The load runs in SEGMENT-second wrk runs until TOTAL requests are done (or MAX_SECONDS
#   pass); PIN=1 puts the proxy and the fake on CPU 0 and the load generators on CPU 1.
# Output: Markdown on stdout and in target/soak-report.md; the samples in
# target/soak-samples.tsv. Only 127.0.0.1 is targeted; everything started here is stopped on
# exit, by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/load"
TOTAL=${TOTAL:-1000000}
CONNS=${CONNS:-32}
SEGMENT=${SEGMENT:-10}
SAMPLE=${SAMPLE:-2}
MAX_SECONDS=${MAX_SECONDS:-900}
ABORT_CONCURRENCY=${ABORT_CONCURRENCY:-8}
PIN=${PIN:-1}
BUILD=${BUILD:-1}

command -v wrk >/dev/null || { echo "wrk missing (benches/load/run.sh installs it)" >&2; exit 1; }
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SRV=(taskset -c 0); GEN=(taskset -c 1)
else
  SRV=(); GEN=()
fi
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release --bin byok-proxy --example fake-upstream)
fi

TMP=$(mktemp -d /tmp/byok-soak.XXXXXX)
LOG_NAME=soak
KEEP_LOGS="$ROOT/target/soak-logs"
# shellcheck source=benches/load/common.sh
. "$HERE/common.sh"

# 1. The fake gateway, 2. byok-proxy with a user, a token and an OpenAI key.
start_fake "${SRV[@]}"
PROXY_PORT=$(free_port)
BYOK_EXTRA=(BYOK_LIMITS__MAX_CONCURRENT_REQUESTS=4096)
start_byok "$PROXY_PORT" "${SRV[@]}"

# 3. RSS sampler, client aborts, then wrk segments until TOTAL requests.
SAMPLES="$TMP/samples.tsv"
printf 'seconds\trequests\trss_kib\n' >"$SAMPLES"
echo 0 >"$TMP/done"
START=$(date +%s)
(
  while kill -0 "$PROXY_PID" 2>/dev/null; do
    printf '%s\t%s\t%s\n' "$(( $(date +%s) - START ))" "$(cat "$TMP/done")" "$(rss_kib "$PROXY_PID")" >>"$SAMPLES"
    sleep "$SAMPLE"
  done
) &
PIDS+=($!)
"${GEN[@]}" python3 "$HERE/abort.py" "$PROXY_PORT" -n 1000000 --concurrency "$ABORT_CONCURRENCY" \
  --timeout "$MAX_SECONDS" >"$TMP/abort.out" 2>"$TMP/abort.log" &
ABORT_PID=$!
PIDS+=("$ABORT_PID")
RSS_START=$(rss_kib "$PROXY_PID")
done_total=0 non2xx=0 sock_errors=0 segments=0
while [ "$done_total" -lt "$TOTAL" ]; do
  elapsed=$(( $(date +%s) - START ))
  [ "$elapsed" -lt "$MAX_SECONDS" ] || { log "MAX_SECONDS reached"; break; }
  line=$("${GEN[@]}" wrk -t1 -c"$CONNS" -d"${SEGMENT}s" -s "$HERE/soak.lua" \
    "http://127.0.0.1:$PROXY_PORT" 2>>"$TMP/wrk.log" | grep '^WRKRESULT' || true)
  [ -n "$line" ] || die "wrk printed no result (see target/wrk.log)"
  get() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$line"; }
  done_total=$((done_total + $(get requests)))
  non2xx=$((non2xx + $(get non2xx)))
  sock_errors=$((sock_errors + $(get connect) + $(get read) + $(get write) + $(get timeout)))
  segments=$((segments + 1))
  echo "$done_total" >"$TMP/done"
  log "segment $segments: $done_total requests, RSS $(( $(rss_kib "$PROXY_PID") / 1024 )) MiB"
done
kill -TERM "$ABORT_PID" 2>/dev/null || true
wait "$ABORT_PID" 2>/dev/null || true
sleep "$SAMPLE"; sleep "$SAMPLE"
RSS_END=$(rss_kib "$PROXY_PID")
ELAPSED=$(( $(date +%s) - START ))
ABORTS=$(sed -n 's/.*aborted=\([0-9]*\).*/\1/p' "$TMP/abort.out")
METRICS=$(curl -s "http://127.0.0.1:$PROXY_PORT/metrics")
by_status() { grep "^byok_http_requests_total{" <<<"$METRICS" | grep "status=\"$1\"" | awk '{s+=$2} END {print s+0}'; }

{
  echo "## Soak: $done_total mixed requests + ${ABORTS:-0} client aborts in ${ELAPSED} s"
  echo
  echo "host: $(nproc) CPUs; wrk -c$CONNS in ${SEGMENT} s segments, abort.py x$ABORT_CONCURRENCY; git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "| | value |"
  echo "|---|---:|"
  echo "| requests (wrk) | $done_total |"
  echo "| non-2xx (401, 404, 400 by design: 4 in 20) | $non2xx |"
  echo "| socket errors | $sock_errors |"
  echo "| proxy answered 200 / 401 / 404 / 400 | $(by_status 200) / $(by_status 401) / $(by_status 404) / $(by_status 400) |"
  echo "| client aborts | ${ABORTS:-0} |"
  echo "| RSS at the start of the load | $((RSS_START / 1024)) MiB |"
  echo "| RSS high point | $(( $(awk 'NR > 1 && $3 > m {m = $3} END {print m + 0}' "$SAMPLES") / 1024 )) MiB |"
  echo "| RSS at the end | $((RSS_END / 1024)) MiB |"
  echo
  echo "RSS (MiB) every ~$((ELAPSED / 12 + 1)) s:"
  echo
  echo '```'
  awk -v step="$(( (ELAPSED / 12 + 1) / SAMPLE + 1 ))" 'NR > 1 && (NR - 2) % step == 0 {printf "t=%4ss  requests=%8s  rss=%6.1f MiB\n", $1, $2, $3 / 1024}' "$SAMPLES"
  echo '```'
} | tee "$ROOT/target/soak-report.md"
cp "$SAMPLES" "$ROOT/target/soak-samples.tsv"
