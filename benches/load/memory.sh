#!/usr/bin/env bash
# Memory under many concurrent slow streams: byok-proxy (release, gateway mode, everything
# on: auth, BYOK rewrite, limits, usage, metrics) and nginx (proxy_buffering off, upstream
# keep-alive) in front of the same bench fake gateway. Each round, hold.py opens N streams at
# once (one user's token), each answered with CHUNKS events DELAY_MS apart, holds them to their
# end, and closes; the RSS of the proxy (nginx: its worker) is sampled every second.
#
# usage:  benches/load/memory.sh
# knobs:  N=10000 CHUNKS=10 DELAY_MS=1500 ROUNDS=3 SETTLE=5 PATHS="byok nginx" BUILD=1
#         PROXY_BIN=path (another build of byok-proxy, to compare)
#   SETTLE: seconds sampled after the streams of a round ended (the "after" figure is the
#   last of them). N is capped by the file descriptor limit: the proxy holds 2 sockets per
#   stream; the script raises `ulimit -n` where it may and lowers N (and says so) where not.
# Output: a Markdown table on stdout and in target/memory-report.md, the per-second samples
# in target/memory-samples.tsv. Only 127.0.0.1 is targeted; everything started here is stopped
# on exit, by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/load"
N=${N:-10000}
CHUNKS=${CHUNKS:-10}
DELAY_MS=${DELAY_MS:-1500}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-5}
PATHS=${PATHS:-"byok nginx"}
BUILD=${BUILD:-1}

TMP=$(mktemp -d /tmp/byok-memory.XXXXXX)
LOG_NAME=memory
# shellcheck source=benches/load/common.sh
. "$HERE/common.sh"

command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx missing (benches/load/run.sh installs it)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
if [ $((2 * N + 512)) -gt "$FDS" ]; then
  N=$(((FDS - 512) / 2))
  log "file descriptor limit $FDS: N lowered to $N"
fi

if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release --bin byok-proxy --example fake-upstream)
fi
# PROXY_BIN (another build of byok-proxy, to compare) is read by start_byok.
start_fake

declare -A PORT MIDPID
if [[ " $PATHS " == *" nginx "* ]]; then
  PORT[nginx]=$(free_port)
  mkdir -p "$TMP/nginx"
  cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/nginx-error.log warn;
events { worker_connections 40000; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/client_body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  upstream fake {
    server 127.0.0.1:$FAKE_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 60s;
    }
  }
}
EOF
  "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/nginx-error.log" \
    >"$TMP/nginx-stdout.log" 2>&1 &
  PIDS+=($!)
  wait_port "${PORT[nginx]}" nginx
  MIDPID[nginx]=$(ps -o pid= --ppid "${PIDS[-1]}" | head -n1 | tr -d ' ')
fi

if [[ " $PATHS " == *" byok "* ]]; then
  PORT[byok]=$(free_port)
  BYOK_EXTRA=(BYOK_LIMITS__MAX_IN_FLIGHT=100000)
  start_byok "${PORT[byok]}"
  MIDPID[byok]=$PROXY_PID
fi

SAMPLES="$TMP/samples.tsv"
printf 'path\tround\tt\trss_kib\topen\n' >"$SAMPLES"
RESULTS="$TMP/results.tsv"
printf 'path\tround\tbefore\tpeak\tplateau_first\tplateau_last\tafter\tresult\n' >"$RESULTS"
TIMEOUT=$((CHUNKS * DELAY_MS / 1000 + N / 1000 + 60))

for r in $(seq 1 "$ROUNDS"); do
  for p in $PATHS; do
    pid=${MIDPID[$p]}
    tok=""
    [ "$p" = byok ] && tok=$BENCH_TOKEN
    before=$(rss_kib "$pid")
    out="$TMP/hold-$p-$r.txt"
    BENCH_TOKEN="$tok" python3 -u "$HERE/hold.py" \
      "http://127.0.0.1:${PORT[$p]}/v1/chat/completions?chunks=$CHUNKS&delay_ms=$DELAY_MS" \
      -n "$N" --timeout "$TIMEOUT" >"$out" 2>>"$TMP/hold.log" &
    hold=$!
    t=0
    while kill -0 "$hold" 2>/dev/null && [ "$t" -lt $((TIMEOUT + 10)) ]; do
      sleep 1
      t=$((t + 1))
      open=$( (grep '^HOLDING' "$out" || true) | tail -n1 | sed 's/.*open=\([0-9]*\).*/\1/')
      printf '%s\t%s\t%s\t%s\t%s\n' "$p" "$r" "$t" "$(rss_kib "$pid")" "${open:-0}" >>"$SAMPLES"
    done
    wait "$hold" || true
    for _ in $(seq 1 "$SETTLE"); do
      sleep 1
      t=$((t + 1))
      printf '%s\t%s\t%s\t%s\t0\n' "$p" "$r" "$t" "$(rss_kib "$pid")" >>"$SAMPLES"
    done
    after=$(rss_kib "$pid")
    result=$( (grep "^HOLDRESULT" "$out" || echo "no result") | sed "s/^HOLDRESULT //")
    # plateau: samples while at least 98% of the streams were open at once
    read -r peak pfirst plast < <(awk -F'\t' -v p="$p" -v r="$r" -v n="$N" '
      $1 == p && $2 == r { if ($4 > peak) peak = $4; if ($5 >= 0.98 * n) { if (first == "") first = $4; last = $4 } }
      END { print peak + 0, (first == "" ? 0 : first), (last == "" ? 0 : last) }' "$SAMPLES")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$r" "$before" "$peak" "$pfirst" "$plast" "$after" "$result" >>"$RESULTS"
    log "round $r $p: RSS before $((before / 1024)) MiB, peak $((peak / 1024)), plateau $((pfirst / 1024))->$((plast / 1024)), after $((after / 1024)); $result"
  done
done

mkdir -p "$ROOT/target"
cp "$SAMPLES" "$ROOT/target/memory-samples.tsv"
{
  echo "Memory: $N concurrent streams per round ($CHUNKS events ${DELAY_MS} ms apart, one user), $ROUNDS rounds; RSS in MiB (nginx: its one worker)."
  echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| proxy | round | before | peak | plateau first → last | after | per stream at peak | streams ok / failed |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  tail -n +2 "$RESULTS" | while IFS=$'\t' read -r p r before peak pfirst plast after result; do
    ok=$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$result")
    failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$result")
    per=$(awk -v a="$peak" -v b="$before" -v n="$N" 'BEGIN {printf "%.1f KiB", (a - b) / n}')
    printf '| %s | %s | %.0f | %.0f | %.0f → %.0f | %.0f | %s | %s / %s |\n' "$p" "$r" \
      "$(awk -v x="$before" 'BEGIN {print x / 1024}')" "$(awk -v x="$peak" 'BEGIN {print x / 1024}')" \
      "$(awk -v x="$pfirst" 'BEGIN {print x / 1024}')" "$(awk -v x="$plast" 'BEGIN {print x / 1024}')" \
      "$(awk -v x="$after" 'BEGIN {print x / 1024}')" "$per" "${ok:-?}" "${failed:-?}"
  done
} | tee "$ROOT/target/memory-report.md"
